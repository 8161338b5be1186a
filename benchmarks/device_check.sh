#!/usr/bin/env bash
# One call on a bare GPU machine that answers what needs an accelerator, in at most 9 minutes, offline.
#
# Run it from the repository root, with the wheelhouse (benchmarks/wheelhouse.sh) carried beside the source:
#   1. installs fttrace from the working tree and the wheelhouse's wheels with pip --no-index --no-deps into the
#      Python that holds the machine's JAX (nothing is fetched; what the image lacks comes from $WHEELHOUSE)
#   2. runs each step of fttrace/bench/device_check.py (`python -m fttrace.bench.device_check plan` lists them
#      with their seconds) under its own `timeout`, all of them within $DEVICE_CHECK_BUDGET_S; the first step
#      stops the check unless JAX's backend is gpu or tpu
#   3. every measured row is appended to $OUT/results.jsonl as it is measured (a step stopped at its limit loses
#      nothing already written); every step's output goes to $OUT/check.log; $OUT/summary.txt lists the rows and
#      the steps done; the profiler trace is $OUT/trace.tar.gz. Four files, no folders; workdirs go to a temp dir.
# Exits 0 only if every step ran to its end.
#
#   OUT=/tmp/check bash benchmarks/device_check.sh
#   DEVICE_CHECK_REHEARSAL=1 WHEELHOUSE=.whl OUT=/tmp/check bash benchmarks/device_check.sh   tiny sizes, CPU allowed
#   DRY_RUN=1 bash benchmarks/device_check.sh   print the commands instead of running them
#
# Environment: PYTHON (default python3), WHEELHOUSE (default .whl), OUT (default runs/device_check),
# DEVICE_CHECK_BUDGET_S (default 530, leaving time to stop a step and summarise; the rehearsal's: 10 x the steps'
# seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh

python=${PYTHON:-python3}
wheelhouse=${WHEELHOUSE:-.whl}
out=${OUT:-runs/device_check}
rehearsal=${DEVICE_CHECK_REHEARSAL:-0}
export DEVICE_CHECK_REHEARSAL=$rehearsal PYTHONUNBUFFERED=1 PIP_NO_INDEX=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
export FTTRACE_COMPILATION_CACHE=off  # compile times as a fresh machine has them
export TMPDIR=${TMPDIR:-/tmp}
start=$SECONDS

if ! dry_run; then
  mkdir -p "$out"
  : > "$out/check.log"
fi
log=$out/check.log

note() {  # note STEP STATUS [RC]: a row of the script's own in results.jsonl (a step that failed or was cut short)
  dry_run && return 0
  printf '{"step": "%s", "status": "%s", "rc": %s, "time": %s}\n' "$1" "$2" "${3:-null}" "$(date +%s)" \
    >> "$out/results.jsonl"
}

# 1. Install, offline: the wheelhouse's wheels, then the project from the working tree (setuptools is the image's).
wheels=()
[[ -d $wheelhouse ]] && shopt -s nullglob && wheels=("$wheelhouse"/*.whl)
if dry_run; then
  (( ${#wheels[@]} )) && run "$python" -m pip install --no-index --no-deps --quiet "${wheels[@]}"
  run "$python" -m pip install --no-index --no-deps --no-build-isolation --quiet .
else
  echo "== install (wheelhouse: ${#wheels[@]} wheels from $wheelhouse)" | tee -a "$log"
  if (( ${#wheels[@]} )); then
    "$python" -m pip install --no-index --no-deps --quiet "${wheels[@]}" >> "$log" 2>&1 \
      || { note install failed $?; echo "install of the wheelhouse failed: see $log" >&2; exit 1; }
  fi
  "$python" -m pip install --no-index --no-deps --no-build-isolation --quiet . >> "$log" 2>&1 \
    || { note install failed $?; echo "install of fttrace failed: see $log" >&2; exit 1; }
  note install done
fi

# 2. The steps, each under its own limit, within the budget.
mapfile -t plan < <("$python" -m fttrace.bench.device_check plan)
(( ${#plan[@]} )) || { note plan failed; echo "fttrace.bench.device_check does not run: see $log" >&2; exit 1; }
total=0
for line in "${plan[@]}"; do total=$(( total + ${line#* } )); done
budget=${DEVICE_CHECK_BUDGET_S:-$([[ $rehearsal == 1 ]] && echo "$total" || echo 530)}
failed=() planned=0
for line in "${plan[@]}"; do
  name=${line% *} seconds=${line#* }
  used=$(( SECONDS - start ))
  dry_run && used=$planned  # a dry run takes no time: count each step's limit as spent
  left=$(( budget - used ))
  (( seconds > left )) && seconds=$left
  planned=$(( planned + seconds ))
  if dry_run; then
    run timeout -k 10 "$seconds" "$python" -m fttrace.bench.device_check "$name" --out "$out"
    continue
  fi
  if (( seconds < 5 )); then
    echo "== $name: no time left in the ${budget}s budget" | tee -a "$log"
    note "$name" "no time left"
    failed+=("$name")
    continue
  fi
  echo "== $name (at most ${seconds}s)" | tee -a "$log"
  rc=0
  timeout -k 10 "$seconds" "$python" -m fttrace.bench.device_check "$name" --out "$out" >> "$log" 2>&1 || rc=$?
  if (( rc != 0 )); then
    status=$([[ $rc == 124 || $rc == 137 ]] && echo "timed out" || echo failed)
    echo "   $name $status (status $rc; see $log)" | tee -a "$log"
    note "$name" "$status" "$rc"
    failed+=("$name")
    [[ $name == preflight ]] && { tail -n 3 "$log" >&2; exit 1; }  # no accelerator: nothing else is worth timing
  fi
done

dry_run && exit 0
"$python" -m fttrace.bench.device_check summary --out "$out" > "$out/summary.txt" 2>> "$log" || true
echo "== done in $(( SECONDS - start ))s; rows: $out/results.jsonl, table: $out/summary.txt" | tee -a "$log"
if (( ${#failed[@]} )); then
  echo "steps that did not finish: ${failed[*]}" | tee -a "$log" >&2
  exit 1
fi
