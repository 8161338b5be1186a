#!/usr/bin/env bash
# Run a study on a SLURM cluster as an array job: task i runs shard i/N of the grid into WORKDIR/shard-i, and a
# merge job, which starts once every task has succeeded, writes WORKDIR/merged.
#
# When: a shared cluster with a SLURM scheduler and a shared filesystem. Each task takes one node and all of its
# GPUs (set them with SBATCH_ARGS); tasks are requeued on preemption (--requeue) and resume from their
# checkpoints, and so does a task that is resubmitted by hand with the same arguments.
# Processes: SLURM starts them: sbatch's array runs each task's batch step on its node, one `fttrace run --shard`
# process per task (no srun: a shard is one process driving all of its node's GPUs).
# Preempted: SLURM requeues a preempted task (--requeue); it runs the same command, which resumes the shard from its
# checkpoints; the merge job starts once every task has succeeded.
#
#   launch/slurm_array.sh CONFIG WORKDIR N [fttrace run options ...]
#   SBATCH_ARGS="--partition=gpu --gres=gpu:4 --time=12:00:00" launch/slurm_array.sh pcfg_counter \
#       /shared/runs/counter 8
#   DRY_RUN=1 launch/slurm_array.sh ...    print the sbatch commands instead of submitting them
set -euo pipefail
source "$(dirname "$0")/common.sh"

(( $# >= 3 )) || usage
config=$1 workdir=$2 count=$3
shift 3
read -r -a sbatch_args <<< "${SBATCH_ARGS:-}"
# Escaped so that the task's own $SLURM_ARRAY_TASK_ID expands inside the job, not here.
task="$(quoted "${FTTRACE_CMD[@]}" run "$config") --workdir $(quoted "$workdir")/shard-\$SLURM_ARRAY_TASK_ID"
extra=$(quoted "$@")
task+=" --shard \$SLURM_ARRAY_TASK_ID/$count -q${extra:+ $extra}"
shards=()
for (( i = 0; i < count; i++ )); do shards+=("$workdir/shard-$i"); done
merge="$(quoted "${FTTRACE_CMD[@]}" merge "${shards[@]}" --out "$workdir/merged")"
array=(sbatch --parsable --requeue --job-name=fttrace --array="0-$((count - 1))" "${sbatch_args[@]}"
       --output="$workdir/slurm-%A_%a.log" --wrap "$task")
if dry_run; then
  run "${array[@]}"
  job='$ARRAY_JOB_ID'
else
  mkdir -p "$workdir"
  job=$("${array[@]}")
  echo "submitted array job $job ($count tasks)"
fi
run sbatch --job-name=fttrace-merge --dependency="afterok:$job" --output="$workdir/slurm-merge-%j.log" \
  --wrap "$merge"
