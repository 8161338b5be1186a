"""The measurements of benchmarks/device_check.sh: one step per call, each streaming its rows to OUT/results.jsonl.

    python -m fttrace.bench.device_check STEP --out OUT     one step (STEPS), run from the repository root
    python -m fttrace.bench.device_check plan               each step and the seconds it may take, one a line
    python -m fttrace.bench.device_check summary --out OUT  the rows of OUT/results.jsonl as a table

Every row is one JSON line appended (and flushed) as soon as it is measured, so a step stopped at its time limit
loses nothing it had already measured; a step that finishes writes a last row with `"status": "done"`. A stopped
study step writes where it had got to (its progress file and the compile time so far) before it exits.

With DEVICE_CHECK_REHEARSAL=1 every step runs at tiny sizes and the backend may be the CPU: the rehearsal that CI
runs offline in an environment of the GPU image's versions (benchmarks/rehearsal_env.sh), where PyTorch is absent
and the torch loop is recorded as skipped. Anywhere else the check refuses a backend other than gpu or tpu.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import re
import signal
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from fttrace.errors import UserError

RESULTS = "results.jsonl"
TRACE = "trace.tar.gz"
TRACE_LIMIT_BYTES = 12 * 2**20  # what comes back from the device machine: 16 MiB a file

# (step, seconds it may take on a GPU, what it measures), in the order the script runs them: the most telling first,
# so that a check cut short still answers the questions that matter most.
STEPS = (
    ("preflight", 30, "the backend is a GPU or TPU; devices, memory limit, versions, fttrace's requirements"),
    ("ref", 90, "the ref shape: bf16 at 64 / 256 / 1,024 members, f32 and vmap_full at 256; MFU, memory, compile"),
    ("memory_plan", 60, "2,048 and 4,096 members of the ref shape: compiled memory plan, nothing materialised"),
    ("torch", 45, "the PyTorch loop at 64 members (autocast bf16, fused AdamW) against vmap_full"),
    ("stories", 60, "the stories :gpu shape's LM step, and its decoder"),
    ("trace", 30, "one profiler trace of the ref shape's step, compressed"),
    ("default", 90, "the default study end to end, compile time apart"),
    ("counter", 80, "the full counter grid at a tenth of its steps, and its full time extrapolated"),
    ("gpu_tests", 60, "the gpu-marked tests (with what is left of the budget)"),
)
REHEARSAL_TIMEOUT_SCALE = 10  # a tiny step on a 2-core CPU compiles for minutes (the counter: 421 s of 536 s, loaded)


def rehearsal() -> bool:
    return os.environ.get("DEVICE_CHECK_REHEARSAL", "0") == "1"


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each step's work is: the GPU check's, or the rehearsal's tiny ones."""
    shape: str
    steps: int
    repeats: int
    matmul: int  # side of the square matmul timed as the achievable peak
    ref: tuple  # (dtype, mode, members) cases, smallest first
    plan: tuple  # member counts planned but never materialised
    torch_members: int
    lm_shape: str
    lm_members: tuple
    decode_members: int
    decode_prompts: int
    decode_prompt_length: int
    trace_steps: int
    study: tuple  # overrides of the studies


GPU = Sizes(shape="ref", steps=20, repeats=2, matmul=8192,
            ref=(("bfloat16", "vmap", 64), ("bfloat16", "vmap", 256), ("float32", "vmap", 256),
                 ("bfloat16", "vmap_full", 256), ("bfloat16", "vmap", 1024)),
            plan=(2048, 4096), torch_members=64, lm_shape="stories_gpu", lm_members=(16, 64), decode_members=16,
            decode_prompts=64, decode_prompt_length=24, trace_steps=5, study=())
REHEARSAL = Sizes(shape="tiny", steps=2, repeats=1, matmul=256,
                  ref=(("bfloat16", "vmap", 2), ("bfloat16", "vmap", 4), ("float32", "vmap", 4),
                       ("bfloat16", "vmap_full", 4), ("bfloat16", "vmap", 8)),
                  plan=(16, 32), torch_members=2, lm_shape="tiny", lm_members=(2,), decode_members=2,
                  decode_prompts=2, decode_prompt_length=4, trace_steps=2,
                  study=("sweep.seeds=2", "model.d_model=16", "model.n_heads=2", "model.d_mlp=32",
                         "model.n_layers=1", "pretrain.steps=20", "pretrain.eval_every=10", "pretrain.batch_size=8",
                         "pretrain.warmup_steps=2", "finetune.steps=20", "finetune.eval_every=10",
                         "finetune.batch_size=8", "reft.steps=20", "reft.eval_every=10", "reft.batch_size=8",
                         "eval.examples=64", "probe.steps=30", "probe.train_examples=128", "probe.test_examples=64",
                         "prune.examples=64", "prune.random_draws=2", "prune.neuron_ks=(0,1,2)",
                         "prune.head_ks=(0,1)", "attention.examples=32", "patch.examples=16"))


def sizes() -> Sizes:
    return REHEARSAL if rehearsal() else GPU


class Rows:
    """Appends one JSON line per row to OUT/results.jsonl, flushed to disk at once."""

    def __init__(self, out, step: str):
        self.path = Path(out) / RESULTS
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.step = step

    def write(self, **row) -> None:
        line = json.dumps(dict(step=self.step, time=round(time.time(), 3), **row), default=_plain)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def _plain(value):
    """numpy scalars and arrays as Python numbers and lists; anything else as its text."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def read_rows(out) -> list[dict]:
    path = Path(out) / RESULTS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


class CompileClock:
    """Seconds XLA spent compiling in this process (JAX's backend-compile events), and in tracing and lowering."""
    BACKEND = "/jax/core/compile/backend_compile_duration"
    TRACING = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration")

    def __init__(self):
        import jax
        self.compile_s, self.tracing_s, self.programs = 0.0, 0.0, 0
        jax.monitoring.register_event_duration_secs_listener(self._heard)

    def _heard(self, event: str, seconds: float, **_) -> None:
        if event == self.BACKEND:
            self.compile_s += seconds
            self.programs += 1
        elif event in self.TRACING:
            self.tracing_s += seconds

    def report(self) -> dict:
        return dict(compile_s=round(self.compile_s, 3), tracing_s=round(self.tracing_s, 3), programs=self.programs)


# ---- the steps ----------------------------------------------------------------------------------------------------

def bench_config(configs: Path, *overrides):
    from fttrace import config as config_lib
    return config_lib.load(str(configs / "bench.py"), list(overrides))


def bench_setup(configs: Path, s: Sizes, dtype: str, members: tuple, modes=("vmap",), shape=None, objective="answer",
                steps=None):
    from fttrace.bench import throughput as bench
    return bench.setup_from_config(bench_config(
        configs, f"shape={shape or s.shape}", f"model.dtype={dtype}", f"members={tuple(members)}",
        f"modes={tuple(modes)}", f"steps={steps or s.steps}", f"repeats={s.repeats}", f"objective={objective}",
        f"matmul_size={s.matmul}"))


def efficiency(row: dict, dtype: str, matmul: dict) -> dict:
    """MFU of a row against the datasheet peak (where the device is known) and against the timed large matmul."""
    from fttrace.bench import throughput as bench
    spec = bench.spec_peak_flops(dtype)
    achieved = row["tflops"] * 1e12
    return dict(dtype=dtype, spec_peak_flops=spec, mfu_spec=achieved / spec if spec else None,
                matmul_flops=matmul.get(dtype), mfu_matmul=achieved / matmul[dtype] if matmul.get(dtype) else None)


def measure(rows: Rows, setup, runners: dict, members: int, extra=lambda row: {}) -> list[dict]:
    """Times the runners in turns, writes and returns one row per mode (with what `extra(row)` adds)."""
    from fttrace.bench import throughput as bench
    seconds = bench.timed_rounds(runners, setup.repeats, f"{members} members", log=print)
    written = []
    for mode, r in runners.items():
        row = bench.result_row(setup, mode, members, seconds[mode], r)
        row.update(extra(row))
        rows.write(kind="train", **row)
        written.append(row)
    return written


def step_preflight(rows: Rows, s: Sizes, configs: Path) -> None:
    import jax
    backend = jax.default_backend()
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    missing = missing_requirements()
    rows.write(kind="environment", backend=backend, devices=[str(d) for d in jax.devices()],
               device_kind=device.device_kind, bytes_limit=stats.get("bytes_limit"), python=platform.python_version(),
               versions=versions(), missing_requirements=missing, rehearsal=rehearsal(),
               xla_python_client_mem_fraction=os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"))
    allowed = ("gpu", "tpu", "cpu") if rehearsal() else ("gpu", "tpu")
    if backend not in allowed:
        raise UserError(f"JAX's backend is {backend}, not a GPU or TPU: this check measures an accelerator "
                        f"(jax {jax.__version__}; is the CUDA plugin installed and the GPU visible?)")
    if missing:
        raise UserError(f"fttrace's requirements are not all installed: {', '.join(missing)} (bring them in the "
                        f"wheelhouse: benchmarks/wheelhouse.sh)")


def versions() -> dict:
    found = {}
    for name in ("fttrace", "jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax",
                 "orbax-checkpoint", "chex", "ml-collections", "numpy", "torch"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def missing_requirements() -> list[str]:
    """fttrace's own requirements (no extras) that no installed distribution provides."""
    try:
        requires = importlib.metadata.requires("fttrace") or []
    except importlib.metadata.PackageNotFoundError:
        return ["fttrace (not installed)"]
    missing = []
    for requirement in requires:
        if "extra ==" in requirement:
            continue
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def step_ref(rows: Rows, s: Sizes, configs: Path) -> None:
    from fttrace.bench import throughput as bench
    matmul = {}
    for dtype in ("bfloat16", "float32"):
        matmul[dtype] = bench.matmul_flops(dtype, s.matmul)
        rows.write(kind="matmul", dtype=dtype, size=s.matmul, flops=matmul[dtype],
                   spec_peak_flops=bench.spec_peak_flops(dtype), device=bench.device_name())
    setups = {}
    for dtype, mode, members in s.ref:
        if dtype not in setups:
            counts = [m for d, _, m in s.ref if d == dtype]
            setups[dtype] = bench_setup(configs, s, dtype, counts, modes=sorted({m for d, m, _ in s.ref if d == dtype}))
        setup = setups[dtype]
        print(f"{dtype} {mode} at {members} members: compiling", flush=True)
        runner = bench.runner(setup, mode, members)
        measure(rows, setup, {mode: runner}, members, lambda row, dtype=dtype: efficiency(row, dtype, matmul))
        del runner


def memory_plan(setup, members: int) -> dict:
    """The compiler's memory plan of `members` members' training program, from abstract values alone: the state
    is `jax.eval_shape` of the initialisation, so no member is materialised on the device."""
    import jax
    import numpy as np

    from fttrace.bench import throughput as bench
    from fttrace.engine import train
    state = jax.eval_shape(lambda: train.init_members(setup.model, setup.phase, setup.seed, np.arange(members),
                                                      np.full(members, setup.lr)))
    data, shared = jax.eval_shape(lambda: setup.data(members))
    compiled, compile_s = setup.program("vmap", state, data, shared)
    analysis = compiled.memory_analysis()
    limit = (jax.devices()[0].memory_stats() or {}).get("bytes_limit")
    planned = bench.program_memory_mb(compiled)
    setup.programs.clear()
    return dict(members=members, planned_mb=planned, planned_mb_per_member=planned / members,
                argument_mb=analysis.argument_size_in_bytes / 2**20, temp_mb=analysis.temp_size_in_bytes / 2**20,
                member_batch=train.member_batch_size(members, setup.member_batch), compile_s=compile_s, bytes_limit=limit,
                fits=None if limit is None else planned * 2**20 <= limit, device=bench.device_name())


def step_memory_plan(rows: Rows, s: Sizes, configs: Path) -> None:
    setup = bench_setup(configs, s, "bfloat16", s.plan)
    for members in s.plan:
        print(f"planning {members} members", flush=True)
        rows.write(kind="memory_plan", shape=s.shape, dtype="bfloat16", **memory_plan(setup, members))


def step_torch(rows: Rows, s: Sizes, configs: Path) -> None:
    from fttrace.bench import throughput as bench
    from fttrace.bench import torch_baseline
    members = s.torch_members
    setup = bench_setup(configs, s, "bfloat16", (members,), modes=("vmap_full",))
    runners = {"vmap_full": bench.JaxRunner(setup, members, "vmap_full")}
    if torch_baseline.available():
        runners["torch"] = torch_baseline.TorchRunner(setup, members)
    elif not rehearsal():
        raise UserError("torch is not installed: the like-for-like PyTorch loop cannot run")
    written = measure(rows, setup, runners, members, lambda row: efficiency(row, "bfloat16", {}))
    rates = {r["mode"]: r["member_steps_per_s"] for r in written}
    if "torch" in rates:
        rows.write(kind="comparison", members=members, vmap_full_over_torch=rates["vmap_full"] / rates["torch"])
    else:
        rows.write(kind="train", mode="torch", members=members,
                   skipped="torch is not installed here (the rehearsal's environment leaves it out)")


def step_stories(rows: Rows, s: Sizes, configs: Path) -> None:
    from fttrace.bench import throughput as bench
    from fttrace.bench.decode import run_decode_bench
    setup = bench_setup(configs, s, "float32", s.lm_members, shape=s.lm_shape, objective="lm",
                        steps=max(s.steps // 4, 1))
    for members in s.lm_members:
        print(f"LM step at {members} members: compiling", flush=True)
        runner = bench.JaxRunner(setup, members, "vmap")
        measure(rows, setup, {"vmap": runner}, members)
        del runner
    report = run_decode_bench(bench_config(
        configs, f"shape={s.lm_shape}", "objective=decode", f"members=({s.decode_members},)", "repeats=1",
        "decode.modes=('vmap','vmap_whole_cache')", f"decode.prompts={s.decode_prompts}",
        f"decode.prompt_length={s.decode_prompt_length}"), log=print)
    for row in report["results"]:
        rows.write(kind="decode", shape=s.lm_shape, **row)


def step_trace(rows: Rows, s: Sizes, configs: Path, out: Path) -> None:
    import jax

    from fttrace.bench import throughput as bench
    members = s.ref[0][2]
    setup = bench_setup(configs, s, "bfloat16", (members,), steps=s.trace_steps)
    runner = bench.JaxRunner(setup, members, "vmap")  # compiled and run once before the trace
    with tempfile.TemporaryDirectory() as where:
        with jax.profiler.trace(where):
            seconds = runner.run()
        files = [p for p in Path(where).rglob("*") if p.is_file()]
        raw = sum(p.stat().st_size for p in files)
        target = out / TRACE
        with tarfile.open(target, "w:gz") as tar:
            for p in files:
                tar.add(p, arcname=str(p.relative_to(where)))
    size = target.stat().st_size
    if size > TRACE_LIMIT_BYTES:
        target.unlink()
    rows.write(kind="trace", members=members, steps=s.trace_steps, seconds=seconds, files=len(files),
               raw_bytes=raw, compressed_bytes=size,
               kept=size <= TRACE_LIMIT_BYTES, file=TRACE if size <= TRACE_LIMIT_BYTES else None)


def tenth(config, overrides: list[str]) -> list[str]:
    """Overrides that run every phase of `config` for a tenth of its steps, evaluated as often relative to them."""
    extra = []
    for phase in ("pretrain", "finetune", "reft"):
        section = config[phase]
        extra += [f"{phase}.steps={max(math.ceil(section.steps / 10), 1)}",
                  f"{phase}.eval_every={max(math.ceil(section.eval_every / 10), 1)}"]
    return overrides + extra


def run_study_timed(rows: Rows, config_path: Path, overrides: list[str], scale: int = 1) -> None:
    """Runs a study end to end in a fresh workdir outside OUT; writes its wall time, compile time, and the time of
    its training phases and evaluations (the manifest's). `scale`: the steps were cut by this factor, so the row also
    carries the full study's time extrapolated: compile and evaluations once, the rest of the training `scale` times.
    """
    from fttrace import config as config_lib
    from fttrace.engine.results import PROGRESS_FILE, read_manifest
    from fttrace.engine.runner import run_study
    clock = CompileClock()
    config = config_lib.load(str(config_path), overrides)
    workdir = Path(tempfile.mkdtemp(prefix="fttrace-device-check-")) / "run"
    start = time.perf_counter()

    def stopped(signum, frame):  # the step's time limit: say how far the study got before going
        progress = workdir / PROGRESS_FILE
        rows.write(kind="study", config=str(config_path), status="stopped", wall_s=time.perf_counter() - start,
                   progress=json.loads(progress.read_text()) if progress.exists() else None, **clock.report())
        os._exit(124)

    signal.signal(signal.SIGTERM, stopped)
    run_study(config, str(workdir), quiet=True)
    wall = time.perf_counter() - start
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    times = read_manifest(str(workdir)).get("time", {})
    phases = sum(t["wall_s"] for t in times.values() if t["kind"] == "phase" and "within" not in t)
    evaluations = sum(t["wall_s"] for t in times.values() if t["kind"] == "evaluation")
    compiled = clock.report()
    row = dict(kind="study", config=str(config_path), overrides=overrides, status="complete", wall_s=wall,
               wall_less_compile_s=wall - compiled["compile_s"], phases_s=phases, evaluations_s=evaluations,
               **compiled)
    if scale > 1:
        # The compile clock counts the evaluations' compiles too, so the repeated training time lies between the
        # training phases less every compile and the training phases whole: both ends are given.
        training = max(phases - compiled["compile_s"], 0.0)
        row.update(step_scale=scale, full_wall_s_estimate=wall + (scale - 1) * training,
                   full_wall_s_upper=wall + (scale - 1) * phases,
                   estimate="wall + (scale - 1) x (training phases - every compile): compiles and evaluations once; "
                            "upper: wall + (scale - 1) x training phases")
    rows.write(**row)


def step_default(rows: Rows, s: Sizes, configs: Path) -> None:
    run_study_timed(rows, configs / "default.py", list(s.study))


def step_counter(rows: Rows, s: Sizes, configs: Path) -> None:
    from fttrace import config as config_lib
    path = configs / "pcfg_counter.py"
    run_study_timed(rows, path, tenth(config_lib.load(str(path), list(s.study)), list(s.study)), scale=10)


def step_gpu_tests(rows: Rows, s: Sizes, configs: Path) -> None:
    import pytest
    tests = configs.parent / "tests" / "test_gpu.py"
    code = int(pytest.main(["-q", "-p", "no:cacheprovider", "-m", "gpu", str(tests)]))
    rows.write(kind="tests", path=str(tests), pytest_exit=code)
    if code != 0:
        raise UserError(f"the gpu-marked tests failed (pytest exit {code})")


# ---- entry point --------------------------------------------------------------------------------------------------

RUN = {"preflight": step_preflight, "ref": step_ref, "memory_plan": step_memory_plan, "torch": step_torch,
       "stories": step_stories, "default": step_default, "counter": step_counter, "gpu_tests": step_gpu_tests}


def run_step(name: str, out: Path, configs: Path = Path("configs")) -> None:
    rows = Rows(out, name)
    start = time.perf_counter()
    s = sizes()
    if name == "trace":
        step_trace(rows, s, configs, out)
    else:
        RUN[name](rows, s, configs)
    rows.write(status="done", seconds=round(time.perf_counter() - start, 3), rehearsal=rehearsal())


def plan_lines() -> list[str]:
    scale = REHEARSAL_TIMEOUT_SCALE if rehearsal() else 1
    return [f"{name} {seconds * scale}" for name, seconds, _ in STEPS]


def summary(out) -> str:
    """The rows as aligned text, one line per row, and which steps finished."""
    lines = []
    for r in read_rows(out):
        fields = {k: v for k, v in r.items() if k not in ("step", "time") and v is not None}
        shown = ", ".join(f"{k}={_short(v)}" for k, v in fields.items() if not isinstance(v, (dict, list)))
        lines.append(f"{r['step']:<12} {shown}")
    done = {r["step"] for r in read_rows(out) if r.get("status") == "done"}
    lines.append("steps done: " + ", ".join(n for n, _, _ in STEPS if n in done))
    lines.append("steps not done: " + (", ".join(n for n, _, _ in STEPS if n not in done) or "none"))
    return "\n".join(lines)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fttrace.bench.device_check", description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=[n for n, _, _ in STEPS] + ["plan", "summary"])
    parser.add_argument("--out", default=os.environ.get("OUT", "runs/device_check"))
    parser.add_argument("--configs", default="configs", help="the folder of the bundled configs")
    args = parser.parse_args(argv)
    if args.step == "plan":
        print("\n".join(plan_lines()))
        return 0
    if args.step == "summary":
        print(summary(args.out))
        return 0
    try:
        run_step(args.step, Path(args.out), Path(args.configs))
    except UserError as e:
        print(f"fttrace: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
