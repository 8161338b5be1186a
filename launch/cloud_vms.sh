#!/usr/bin/env bash
# Run a study as a batch of independent cloud VMs, one disjoint shard of the grid each, then merge the shards.
#
# When: many machines with no fast interconnect, possibly preemptible (spot) VMs. VM i runs
# `fttrace run --shard i/N` into WORKDIR/shard-i (its own self-contained lineages, grid-wide member ids); when
# every shard has finished, `fttrace merge` checks that nothing is missing or duplicated and writes WORKDIR/merged.
# WORKDIR should be a bucket every VM can write (gs://...). A VM that was preempted or failed is simply given its
# command again (rerun this script: finished shards return at once, the others resume from their checkpoints).
# Each VM needs fttrace installed and this repository at REMOTE_DIR (default: fttrace).
#
#   VMS="vm-0 vm-1 vm-2 vm-3" ZONE=europe-west4-a launch/cloud_vms.sh CONFIG gs://bucket/study [fttrace run options]
#   DRY_RUN=1 VMS=... ZONE=... launch/cloud_vms.sh ...   print the commands instead of running them
set -euo pipefail
source "$(dirname "$0")/common.sh"

(( $# >= 2 )) || usage
: "${VMS:?set VMS to the names of the VMs}" "${ZONE:?set ZONE}"
config=$1 workdir=$2
shift 2
read -r -a vms <<< "$VMS"
count=${#vms[@]}
shards=()
pids=()
for i in "${!vms[@]}"; do
  shards+=("$workdir/shard-$i")
  remote=$(remote_run "$config" "$workdir/shard-$i" --shard "$i/$count" -q "$@")
  if dry_run; then
    run gcloud compute ssh "${vms[$i]}" --zone "$ZONE" --command "$remote"
  else
    gcloud compute ssh "${vms[$i]}" --zone "$ZONE" --command "$remote" > "shard-$i.log" 2>&1 &
    pids+=($!)
  fi
done
failed=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { echo "shard $i/$count on ${vms[$i]} failed (see shard-$i.log)" >&2; failed=1; }
done
if (( failed )); then
  echo "not merging: rerun this script to resume the failed shards" >&2
  exit 1
fi
run "${FTTRACE_CMD[@]}" merge "${shards[@]}" --out "$workdir/merged"
