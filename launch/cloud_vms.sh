#!/usr/bin/env bash
# Run a study on independent cloud VMs, one disjoint shard of the grid each, then merge the shards: a thin wrapper of
# `fttrace launch skypilot` (fttrace/tools/skypilot.py), which writes a SkyPilot managed job per shard and a merge job
# into OUT_DIR (default ./skypilot) and submits them with `sky jobs launch`.
#
# When: many machines with no fast interconnect, possibly preemptible (spot) VMs, on any cloud SkyPilot reaches.
# Shard i runs `fttrace run --shard i/N` into WORKDIR/shard-i; the merge job waits until every shard is complete and
# runs `fttrace merge` into WORKDIR/merged. WORKDIR is a bucket (gs:// is written directly, s3:// is mounted).
# Processes: SkyPilot starts them: each managed job provisions its VM, syncs this repository to it, installs fttrace
# (the task's setup) and runs the shard's one `fttrace run` process.
# Preempted: SkyPilot relaunches a preempted spot VM (in another region if need be) and runs the shard's command again,
# which resumes it from its checkpoints in WORKDIR; a shard that fails on its own is restarted up to 3 times.
# Run it from the repository's root; `sky jobs queue` shows the jobs.
#
#   SHARDS=4 [GPUS=H100:1] [SPOT=1] launch/cloud_vms.sh CONFIG gs://bucket/study [fttrace run options]
#   DRY_RUN=1 SHARDS=4 launch/cloud_vms.sh ...   write the task files and print the commands, submit nothing
set -euo pipefail
source "$(dirname "$0")/common.sh"

(( $# >= 2 )) || usage
: "${SHARDS:?set SHARDS to the number of shards (one VM each)}"
config=$1 workdir=$2
shift 2
options=(--shards "$SHARDS")
[[ -n "${GPUS:-}" ]] && options+=(--gpus "$GPUS")
[[ "${SPOT:-0}" == 1 ]] && options+=(--spot)
[[ -n "${OUT_DIR:-}" ]] && options+=(--out-dir "$OUT_DIR")
# No `run`: under DRY_RUN=1, `fttrace launch skypilot` itself writes the tasks and prints what it would submit.
"${FTTRACE_CMD[@]}" launch skypilot "$config" --workdir "$workdir" "${options[@]}" "$@"
