#!/usr/bin/env bash
# Run a study on this machine: a laptop, a workstation, one cloud VM.
#
# When: the sweep fits one machine. JAX uses every local device at once (the member axis is sharded over all
# local GPUs, or the CPU), so this is also the way to use one multi-GPU box. Running the same command again
# after a crash, a kill or a reboot resumes from the newest checkpoint in WORKDIR; --overwrite starts over.
# Processes: this one `fttrace run`.
# Preempted: a VM that was stopped resumes when the command runs again (from the newest checkpoint in WORKDIR).
#
#   launch/local.sh CONFIG WORKDIR [fttrace run options ...]
#   launch/local.sh pcfg_counter runs/counter --config.sweep.seeds=20
#   DRY_RUN=1 launch/local.sh ...        print the command instead of running it
set -euo pipefail
source "$(dirname "$0")/common.sh"

(( $# >= 2 )) || usage
config=$1 workdir=$2
shift 2
run "${FTTRACE_CMD[@]}" run "$config" --workdir "$workdir" "$@"
