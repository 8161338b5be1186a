#!/usr/bin/env bash
# One call that measures what needs an accelerator, in about 8 minutes of device time.
#
# When: a GPU machine is at hand for a few minutes. Run it from the repository root; it writes JSON and logs
# under $OUT (default runs/device_check), each step bounded in time:
#   1. the `gpu`-marked tests: bf16 against f32, every local GPU, the memory plan (memory_plan.json)
#   2. fttrace bench, reference and large shapes in bf16: vmap, vmap_full, sequential (and torch where installed) at
#      1 / 64 / 256 members, then vmap alone at 1,024
#   3. the LM step at the stories :gpu shape (every-position loss), and its decoder (sampled tokens/s, windowed
#      against the whole cache)
#   4. a timed slice of the full counter grid: its pretraining and first fine-tuning chunks (progress in the log)
#
#   benchmarks/device_check.sh
#   OUT=/tmp/check benchmarks/device_check.sh
#   DRY_RUN=1 benchmarks/device_check.sh   print the commands instead of running them
set -euo pipefail
source "$(dirname "$0")/../launch/common.sh"

out=${OUT:-runs/device_check}
export FTTRACE_DEVICE_OUT=$out  # where tests/test_gpu.py writes the memory plan
dry_run || mkdir -p "$out"

step() {  # step NAME SECONDS COMMAND...: COMMAND within SECONDS, its output in $out/NAME.log
  local name=$1 seconds=$2
  shift 2
  if dry_run; then run timeout "$seconds" "$@"; return 0; fi
  echo "== $name (at most ${seconds}s)"
  timeout "$seconds" "$@" > "$out/$name.log" 2>&1 || echo "   $name ended with status $? (see $out/$name.log)"
  tail -n 3 "$out/$name.log"
}

bench=("${FTTRACE_CMD[@]}" bench configs/bench.py --config.repeats=2)
step gpu-tests 80 python -m pytest -q -m gpu tests/test_gpu.py
for shape in ref large; do
  step "bench-$shape" 80 "${bench[@]}" --config.shape="$shape" --config.model.dtype=bfloat16 --config.steps=20 \
    --config.members="(1,64,256)" --config.modes="('vmap','vmap_full','sequential','torch')" \
    --out "$out/bench-$shape.json"
  step "bench-$shape-1024" 50 "${bench[@]}" --config.shape="$shape" --config.model.dtype=bfloat16 --config.steps=20 \
    --config.members="(1024,)" --config.modes="('vmap',)" --out "$out/bench-$shape-1024.json"
done
step bench-stories-gpu 60 "${bench[@]}" --config.shape=stories_gpu --config.objective=lm --config.steps=10 \
  --config.members="(1,16,64)" --config.modes="('vmap','sequential','torch')" --out "$out/bench-stories-gpu.json"
step decode-stories-gpu 30 "${bench[@]}" --config.shape=stories_gpu --config.objective=decode --config.repeats=1 \
  --config.members="(16,)" --config.decode.modes="('vmap','vmap_whole_cache')" --out "$out/decode-stories-gpu.json"
step counter-slice 50 "${FTTRACE_CMD[@]}" run configs/pcfg_counter.py --workdir "$out/counter-slice" --overwrite \
  --config.finetune.steps=400 --config.evals="()"
