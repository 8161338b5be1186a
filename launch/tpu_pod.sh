#!/usr/bin/env bash
# Run a study on a Cloud TPU pod slice: every host of the slice runs the same `fttrace run`, and the processes
# join through --distributed (JAX finds the slice's hosts itself) into one program over every chip.
#
# When: the sweep needs more accelerators than one host holds and they sit in one TPU slice. WORKDIR must be a
# location every host shares, a gs:// bucket: each host writes the results and checkpoint shards of its own
# members, host 0 the manifest. Running the script again resumes; --overwrite starts over.
# Processes: gcloud starts them: `tpu-vm ssh --worker=all` runs the same `fttrace run --distributed` on every host of
# the slice, and JAX's distributed runtime (the TPU's own environment) joins them into one program.
# Preempted: a preempted (spot) slice loses every host at once; recreate it (or let its queued resource do so),
# install fttrace again and run this script again: every host resumes from the newest checkpoint in WORKDIR.
# Each host needs fttrace installed and this repository checked out at REMOTE_DIR (default: fttrace), e.g.
#   gcloud compute tpus tpu-vm ssh $TPU_NAME --zone $ZONE --worker=all \
#     --command='git clone <repo> fttrace && pip install -e "fttrace" "jax[tpu]"'
#
#   TPU_NAME=my-slice ZONE=us-central2-b launch/tpu_pod.sh CONFIG gs://bucket/study [fttrace run options ...]
#   DRY_RUN=1 TPU_NAME=... ZONE=... launch/tpu_pod.sh ...   print the command instead of running it
set -euo pipefail
source "$(dirname "$0")/common.sh"

(( $# >= 2 )) || usage
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
config=$1 workdir=$2
shift 2
remote=$(remote_run "$config" "$workdir" --distributed "$@")
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" ${PROJECT:+--project "$PROJECT"} --worker=all \
  --command "$remote"
