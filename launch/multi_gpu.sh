#!/usr/bin/env bash
# Run a study on the GPUs of one machine, or of several machines that see each other over the network.
#
# When: one machine with several GPUs (GPUS picks them, default all): one process drives them all and the member
# axis is sharded over them, with pad members filling the last GPU when the member count does not divide.
# Several GPU machines: run this script on every machine with the same arguments plus COORDINATOR (host:port of
# machine 0), NUM_PROCESSES and PROCESS_ID (0 .. NUM_PROCESSES-1); WORKDIR must then be shared (NFS, gs://).
# On SLURM, prefer `srun fttrace run ... --distributed`. Running it again resumes; --overwrite starts over.
# Processes: you start them: this script on each machine (or srun, once per node, with --distributed instead).
# Preempted: a machine lost stops the whole program (every process waits for the others); run the script again on
# every machine: the run resumes from the newest checkpoint in WORKDIR.
#
#   GPUS=0,1,2,3 launch/multi_gpu.sh CONFIG WORKDIR [fttrace run options ...]
#   COORDINATOR=gpu0:8476 NUM_PROCESSES=2 PROCESS_ID=1 launch/multi_gpu.sh CONFIG /shared/study
#   DRY_RUN=1 launch/multi_gpu.sh ...    print the command instead of running it
set -euo pipefail
source "$(dirname "$0")/common.sh"

(( $# >= 2 )) || usage
config=$1 workdir=$2
shift 2
environment=()
[[ -n "${GPUS:-}" ]] && environment+=("CUDA_VISIBLE_DEVICES=$GPUS")
hosts=()
if [[ -n "${COORDINATOR:-}" ]]; then
  hosts=(--coordinator "$COORDINATOR" --num-processes "${NUM_PROCESSES:?set NUM_PROCESSES}"
         --process-id "${PROCESS_ID:?set PROCESS_ID}")
fi
run env "${environment[@]}" "${FTTRACE_CMD[@]}" run "$config" --workdir "$workdir" "${hosts[@]}" "$@"
