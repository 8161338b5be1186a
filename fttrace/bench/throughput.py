"""`fttrace bench`: how fast the engine trains members, against one member at a time and a plain PyTorch loop.

For a named model shape and each member count, the modes train for the same number of steps:

  vmap        the engine's training loop (`train.train_steps`: `train_step` vmapped over members inside a
              loop over steps, batches sampled on device from each member's key), every member in one
              program; on a lone CPU the members are vmapped in cache-sized groups that take turns (`group`)
  vmap_full   the same, with the forward pass a plain model makes: every position's logits, the last one read
  sequential  the vmap program with one member, run for each member in turn
  torch       a plain PyTorch loop, one model at a time (`fttrace.bench.torch_baseline`; only where torch is installed)

Each row names the work its mode does (`WORK`). With `objective="answer"` (the PCFG/Tracr loss at the answer
position) vmap and sequential compute the last block and the unembedding at the answer position only, while
vmap_full and torch compute every position and read the last, as a researcher's loop would: like for like is
vmap_full against torch. With `objective="lm"` (the stories and canary loss) every mode computes the next-token loss
at every position. FLOPs are the matrix-multiply FLOPs of the work a row does (`train_flops`, forward x 3).

Throughput is member-steps per second: members x steps / seconds of the fastest of `repeats` timed runs (after
one untimed run); the modes take turns, so that they share the machine's other load alike. MFU divides achieved
FLOP/s by a peak: the device's published dense peak for the compute dtype where it is known (`SPEC_PEAK_FLOPS`),
else a large matmul timed in the same run (always reported as `matmul_flops`). The roofline (`roofline`) reads
the FLOPs and bytes accessed of one member's step from XLA's cost analysis of the compiled step: its arithmetic
intensity, the member-steps/s compute allows on this device (at that peak) and what compute and memory bandwidth
allow on an H100. XLA's bytes count each operand as read from memory; on a CPU, whose caches hold most of a small
step, they over-state the traffic, so no memory bound is drawn there.
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from fttrace.bench import torch_baseline as bench_torch

from fttrace.engine import train
from fttrace.config import positive_int
from fttrace.errors import UserError
from fttrace.model.transformer import DTYPES, ModelConfig, Transformer
from fttrace.answer.tasks.registry import build_task


@dataclasses.dataclass(frozen=True)
class BenchShape:
    d_model: int
    n_layers: int
    n_heads: int
    context: int
    vocab: int
    batch: int  # sequences per member per step


SHAPES = {
    "ref": BenchShape(d_model=128, n_layers=4, n_heads=4, context=64, vocab=64, batch=64),
    "large": BenchShape(d_model=256, n_layers=6, n_heads=8, context=128, vocab=512, batch=32),
    "small": BenchShape(d_model=64, n_layers=2, n_heads=4, context=32, vocab=32, batch=16),
    "tiny": BenchShape(d_model=32, n_layers=2, n_heads=2, context=16, vocab=16, batch=8),
    # the language-model studies' shapes (configs/stories_twist.py default and :gpu, configs/canary_unlock.py)
    "stories": BenchShape(d_model=64, n_layers=2, n_heads=4, context=240, vocab=1024, batch=8),
    "stories_gpu": BenchShape(d_model=256, n_layers=6, n_heads=8, context=384, vocab=1024, batch=64),
    "canary": BenchShape(d_model=64, n_layers=2, n_heads=4, context=48, vocab=320, batch=32),
}
MODES = ("vmap", "vmap_full", "sequential", "torch")
OBJECTIVES = ("answer", "lm")
WORK = {"answer": {"vmap": "answer position only", "vmap_full": "every position, last read",
                   "sequential": "answer position only", "torch": "every position, last read"},
        "lm": {mode: "next token at every position" for mode in MODES}}
DATA = ("random", "task")
H100 = dict(flops=989e12, bytes_per_s=3.35e12)  # dense bf16 peak, HBM3 bandwidth

# Published dense matmul peaks (FLOP/s) by device kind and compute dtype; float32 matmuls run as TF32 on these.
SPEC_PEAK_FLOPS = {
    "H100": {"bfloat16": 989e12, "float32": 494e12},
    "H200": {"bfloat16": 989e12, "float32": 494e12},
    "A100": {"bfloat16": 312e12, "float32": 156e12},
}


@dataclasses.dataclass(frozen=True)
class RandomTokens:
    """Uniform random sequences and answers: data of a shape's context and vocabulary, sampled on device."""
    context: int
    vocab: int

    def sample(self, key, batch: int, mix, spurious):
        del mix, spurious  # the task's mixture knobs mean nothing here
        draws = jax.random.randint(key, (batch, self.context + 1), 0, self.vocab, jnp.int32)
        return draws[:, :-1], draws[:, -1]


def random_corpus(context: int, vocab: int, documents: int = 256):
    """A resident corpus of `documents` uniform random documents of `context` + 1 tokens (the LM objective's data)."""
    from fttrace.lm.corpus import DeviceCorpus
    tokens = jax.random.randint(jax.random.PRNGKey(0), (documents * (context + 1) + context + 1,), 0, vocab, jnp.int32)
    return DeviceCorpus(tokens, jnp.arange(0, documents * (context + 1) + 1, context + 1, dtype=jnp.int32))


@dataclasses.dataclass
class Setup:
    """What every mode trains: model, data, optimiser phase, and the run's fixed choices."""
    shape_name: str
    objective_name: str  # OBJECTIVES
    model: ModelConfig
    task: object
    phase: object  # the pretraining section, with the shape's batch size
    batch: int
    context: int
    steps: int
    repeats: int
    seed: int
    lr: float
    matmul_size: int  # side of the square matmul timed for the peak; 0: 2048 on CPU, 8192 on accelerators
    max_members: int
    programs: dict = dataclasses.field(default_factory=dict, repr=False)  # members -> (compiled, compile_s)
    initial: train.TrainState | None = dataclasses.field(default=None, repr=False)

    @property
    def member_batch(self) -> int | None:
        return train.train_member_batch(self.model, self.phase)

    def flops_per_member_step(self, mode: str) -> float:
        """Matmul FLOPs of the work `mode` does (WORK)."""
        full = self.objective_name == "lm" or WORK["answer"][mode] != WORK["answer"]["vmap"]
        return train_flops(self.model, self.batch, self.context, every_position=full)

    def objective(self, mode: str):
        if self.objective_name == "lm":
            from fttrace.lm.steps import NextTokenObjective
            return NextTokenObjective(self.context)
        return train.AnswerObjective(self.task, answer_only=mode != "vmap_full")

    def data(self, members: int) -> tuple[train.DataSpec, object]:
        """(the members' DataSpec, the shared inputs) of the objective."""
        if self.objective_name == "lm":
            from fttrace.lm.steps import DocumentRange
            return (train.DataSpec(batch=DocumentRange(lo=jnp.zeros(members, jnp.int32),
                                                       hi=jnp.full(members, 256, jnp.int32))),
                    dict(corpus=random_corpus(self.context, self.model.vocab_size)))
        return train.DataSpec(batch=train.QueryMix(queries=jnp.zeros((members, 1)), spurious=jnp.zeros(members))), None

    def initial_state(self, members: int) -> train.TrainState:
        """The first `members` members, freshly initialised (all counts share one initialisation)."""
        if self.initial is None:
            self.initial = train.init_members(self.model, self.phase, self.seed, np.arange(self.max_members),
                                              np.full(self.max_members, self.lr))
        return jax.tree.map(lambda x: jnp.array(x[:members], copy=True), self.initial)  # runs donate their state

    def program(self, mode: str, state: train.TrainState, data: train.DataSpec, shared):
        """The compiled training loop of `mode` for the members of `state` and its compile time (compiled once per
        mode and count)."""
        n = state.step.shape[0]
        if (mode, n) not in self.programs:
            run = jax.jit(train.train_steps(Transformer(self.model), self.objective(mode), self.phase,
                                            self.member_batch), donate_argnums=0)
            t0 = time.perf_counter()
            compiled = run.lower(state, data, shared, jnp.int32(self.steps)).compile()
            self.programs[mode, n] = compiled, time.perf_counter() - t0
        return self.programs[mode, n]

    def roofline(self, mode: str) -> dict:
        """FLOPs and bytes accessed of one member's training step, from XLA's cost analysis of that step compiled
        alone: arithmetic intensity, and the member-steps/s an H100 allows by compute (bf16 peak) and by memory."""
        state = jax.tree.map(lambda x: x[0], self.initial_state(1))
        data, shared = self.data(1)
        data = jax.tree.map(lambda x: x[0], data)
        step = jax.jit(lambda s, d, sh: train.train_step(Transformer(self.model), self.objective(mode), self.phase,
                                                         s, d, sh))
        cost = step.lower(state, data, shared).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops, moved = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
        return dict(xla_flops=flops, xla_bytes=moved, intensity=flops / moved if moved else None,
                    h100_bound=min(H100["flops"] / flops if flops else float("inf"),
                                   H100["bytes_per_s"] / moved if moved else float("inf")))


def train_flops(cfg: ModelConfig, batch: int, context: int, every_position: bool = False) -> float:
    """Matmul FLOPs of one member's training step: 3 x the forward pass of `batch` sequences, with the last block and
    the unembedding at the answer position only, or at `every_position` (an LM loss, or a plain loop that computes
    every position and reads the last)."""
    d, f, inner, t = cfg.d_model, cfg.mlp, cfg.n_heads * cfg.hd, context

    def block(queries: int) -> int:  # one sequence: `queries` query positions over `t` keys
        return 2 * (d * inner * queries + 2 * d * inner * t + 2 * queries * t * inner + inner * d * queries
                    + 2 * d * f * queries)

    queries = t if every_position else 1
    forward = (cfg.n_layers - 1) * block(t) + block(queries) + 2 * d * cfg.vocab_size * queries
    return 3.0 * batch * forward


def setup_from_config(config) -> Setup:
    """Checks the bench keys of a config (bad input -> UserError) and builds what the modes train."""
    check_shape(config)
    check_members(config)
    unknown = [m for m in config.modes if m not in MODES]
    if unknown or not config.modes:
        raise UserError(f"config key 'modes': unknown mode(s) {unknown}; known: {', '.join(MODES)}")
    if config.data not in DATA:
        raise UserError(f"config key 'data': must be one of {', '.join(DATA)}, got {config.data!r}")
    objective = config.get("objective", "answer")
    if objective not in OBJECTIVES:
        raise UserError(f"config key 'objective': must be one of {', '.join(OBJECTIVES)}, decode (the decoder: "
                        f"fttrace/bench/decode.py), compaction (stopped members: fttrace/bench/compaction.py), "
                        f"got {objective!r}")
    if objective == "lm" and ("vmap_full" in config.modes or config.data == "task"):
        raise UserError("config key 'objective': the LM objective computes every position in every mode (no "
                        "vmap_full) on random documents (data='random')")
    for key in ("steps", "repeats"):
        positive_int(config, key)
    if not (isinstance(config.matmul_size, int) and config.matmul_size >= 0):
        raise UserError(f"config key 'matmul_size': must be 0 (automatic) or a positive integer, "
                        f"got {config.matmul_size!r}")
    shape = SHAPES[config.shape]
    if config.data == "task":
        task = build_task(config)
        context, vocab = task.seq_len, task.vocab_size
    else:
        context, vocab = shape.context, shape.vocab
        task = RandomTokens(context, vocab)
    m = config.model
    model = ModelConfig(vocab_size=vocab, max_len=context, d_model=shape.d_model, n_layers=shape.n_layers,
                        n_heads=shape.n_heads, layer_norm=m.layer_norm, causal=m.causal, activation=m.activation,
                        use_bias=m.use_bias, dtype=m.dtype)
    if "torch" in config.modes and not bench_torch.supports(model):
        raise UserError("config key 'modes': the torch loop mirrors the default architecture only (model.layer_norm, "
                        "model.causal and model.use_bias True)")
    phase = config.pretrain.copy_and_resolve_references()
    phase.batch_size = shape.batch
    return Setup(config.shape, objective, model, task, phase, shape.batch, context, config.steps, config.repeats,
                 config.seed, float(config.lr), config.matmul_size, max(config.members))


def check_shape(config) -> None:
    """The shape of a bench config: one of SHAPES (else UserError naming the key)."""
    if config.shape not in SHAPES:
        raise UserError(f"config key 'shape': unknown shape {config.shape!r}; known: {', '.join(SHAPES)}")


def check_members(config) -> None:
    """The member counts of a bench config: a tuple of positive integers (else UserError naming the key)."""
    members = config.members
    if not (isinstance(members, tuple) and members and all(
            isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in members)):
        raise UserError(f"config key 'members': must be a tuple of positive integers, got {members!r}")


def timed_rounds(runners: dict, repeats: int, label: str, log=None) -> dict:
    """Seconds of each runner's `run()` in `repeats` rounds, the runners taking turns within each round (so that
    they share whatever else the machine is doing alike): {name: [seconds per round]}."""
    seconds = {name: [] for name in runners}
    for round_ in range(repeats):
        if log:
            log(f"{label}: timed round {round_ + 1}/{repeats}")
        for name, r in runners.items():
            seconds[name].append(r.run())
    return seconds


def device_name() -> str:
    device = jax.devices()[0]
    return f"{device.platform}:{device.device_kind}"


def matmul_flops(dtype: str, size: int | None = None, repeats: int = 3) -> float:
    """FLOP/s of the fastest of `repeats` timed runs of a large square matmul in `dtype` on the default device."""
    on_cpu = jax.devices()[0].platform == "cpu"
    size = size or (2048 if on_cpu else 8192)
    calls = 2 if on_cpu else 20
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), DTYPES[dtype])
    matmul = jax.jit(lambda x: x @ x).lower(a).compile()
    jax.block_until_ready(matmul(a))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        outs = [matmul(a) for _ in range(calls)]
        jax.block_until_ready(outs)
        best = min(best, (time.perf_counter() - t0) / calls)
    return 2 * size ** 3 / best


def spec_peak_flops(dtype: str) -> float | None:
    kind = jax.devices()[0].device_kind
    return next((peaks[dtype] for name, peaks in SPEC_PEAK_FLOPS.items() if name in kind), None)


def program_memory_mb(compiled) -> float:
    """Peak memory the compiler plans for a program: arguments + outputs (less donated aliases) + temporaries."""
    m = compiled.memory_analysis()
    return (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes) / 2**20


def device_peak_mb() -> float | None:
    """The process's peak device memory so far (accelerators report it; XLA:CPU does not)."""
    stats = jax.devices()[0].memory_stats()
    return stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else None


class JaxRunner:
    """The engine's loop over every member at once, or over one member at a time (`sequential`), ready to time."""

    def __init__(self, setup: Setup, members: int, mode: str):
        stacked = setup.initial_state(members)
        sequential = mode == "sequential"
        self.states = [jax.tree.map(lambda x, i=i: x[i:i + 1], stacked) for i in range(members)] if sequential \
            else [stacked]
        n = 1 if sequential else members
        self.data, self.shared = setup.data(n)
        self.compiled, compile_s = setup.program(mode, self.states[0], self.data, self.shared)
        self.steps = jnp.int32(setup.steps)
        self.states[0], _ = self.compiled(self.states[0], self.data, self.shared, self.steps)  # untimed: first run
        jax.block_until_ready(self.states[0])
        self.info = dict(member_batch=train.member_batch_size(n, setup.member_batch), compile_s=compile_s,
                         peak_mem_per_member_mb=program_memory_mb(self.compiled) / n,
                         peak_mem_source="compiled program (XLA memory_analysis)", device=device_name())

    def run(self) -> float:
        """Seconds to train every member for the setup's steps."""
        t0 = time.perf_counter()
        for i, state in enumerate(self.states):
            self.states[i], self.losses = self.compiled(state, self.data, self.shared, self.steps)
        jax.block_until_ready((self.states, self.losses))
        return time.perf_counter() - t0

    def finish(self) -> dict:
        return dict(self.info, device_peak_mb=device_peak_mb(), final_loss=float(jnp.nanmean(self.losses[-1])))


def runner(setup: Setup, mode: str, members: int):
    if mode == "torch":
        return bench_torch.TorchRunner(setup, members)  # imports torch
    return JaxRunner(setup, members, mode)


def result_row(setup: Setup, mode: str, members: int, seconds: list, r) -> dict:
    """One measured row: the rate of the fastest of `seconds` (runs of `setup.steps` steps of every member), its
    tokens and FLOPs, and what the runner `r` reports (compile time, memory, device, final loss)."""
    rate = members * setup.steps / min(seconds)
    return dict(mode=mode, work=WORK[setup.objective_name][mode], shape=setup.shape_name, members=members,
                member_steps_per_s=rate, tokens_per_s=rate * setup.batch * setup.context,
                flops_per_member_step=setup.flops_per_member_step(mode),
                tflops=rate * setup.flops_per_member_step(mode) / 1e12, seconds=seconds, **r.finish())


def run_bench(config, log=None) -> dict:
    """Every mode at every member count; the results as a JSON-ready dict. `log(line)` hears progress.

    At each member count the modes are prepared (compiled, warmed up), then timed in turns, `repeats` rounds, so
    that every mode sees the same share of whatever else the machine is doing; the fastest round counts. The
    large matmul is timed before each member count too, and its best counts.
    """
    setup = setup_from_config(config)
    modes = list(config.modes)
    notes = []
    if "torch" in modes:
        if not bench_torch.available():
            modes.remove("torch")
            notes.append("torch is not installed (pip install 'fttrace[torch]'): the torch mode was skipped")
    measured, results = 0.0, []
    for members in config.members:
        measured = max(measured, matmul_flops(setup.model.dtype, setup.matmul_size or None))
        if log:
            log(f"{members} members: preparing {', '.join(modes)}")
        runners = {mode: runner(setup, mode, members) for mode in modes}
        seconds = timed_rounds(runners, setup.repeats, f"{members} members", log)
        results.extend(result_row(setup, mode, members, seconds[mode], r) for mode, r in runners.items())
        del runners
    spec = spec_peak_flops(setup.model.dtype)
    peak, basis = (spec, "published peak") if spec else (measured, "measured matmul")
    rooflines = {}
    for mode in modes:
        if mode != "torch" and WORK[setup.objective_name][mode] not in rooflines:
            line = setup.roofline(mode)
            line["device_compute_bound"] = peak / line["xla_flops"] if line["xla_flops"] else None
            rooflines[WORK[setup.objective_name][mode]] = line
    for r in results:
        r.update(mfu=r["tflops"] * 1e12 / peak, matmul_fraction=r["tflops"] * 1e12 / measured,
                 roofline=rooflines.get(r["work"]))
        torch_rate = next((t["member_steps_per_s"] for t in results
                           if t["mode"] == "torch" and t["members"] == r["members"]), None)
        r["speedup_vs_torch"] = r["member_steps_per_s"] / torch_rate if torch_rate else None
        r["same_work_as_torch"] = r["work"] == WORK[setup.objective_name]["torch"]
    return dict(shape=dict(name=setup.shape_name, **dataclasses.asdict(SHAPES[setup.shape_name]),
                           context_used=setup.context, vocab_used=setup.model.vocab_size),
                objective=setup.objective_name, data=config.data, dtype=setup.model.dtype, steps=setup.steps,
                repeats=setup.repeats, matmul_flops=measured, spec_peak_flops=spec,
                mfu_basis=basis, device=device_name(), jax_version=jax.__version__, notes=notes, results=results,
                rooflines=rooflines)


def aligned(header: tuple, rows: list) -> list[str]:
    """The header and rows (tuples of strings) as right-aligned text lines."""
    widths = [max(len(x) for x in column) for column in zip(header, *rows)]
    return ["  ".join(c.rjust(w) for c, w in zip(cells, widths)) for cells in (header, *rows)]


def format_table(report: dict) -> str:
    """The results as an aligned text table, one line per (members, mode)."""
    header = ("mode", "work", "members", "group", "member-steps/s", "x torch", "tokens/s", "TFLOP/s", "MFU",
              "mem/member MB", "compile s")

    def cell(value, form):
        return "-" if value is None else format(value, form)

    def speedup(r):  # against torch, marked where the row does less work than the torch loop
        text = cell(r["speedup_vs_torch"], ".2f")
        return text if r["same_work_as_torch"] or text == "-" else f"{text}*"

    rows = [(r["mode"], r["work"], str(r["members"]), cell(r.get("member_batch"), "d"),
             cell(r["member_steps_per_s"], ",.0f"), speedup(r), cell(r["tokens_per_s"], ",.0f"),
             cell(r["tflops"], ".4f"), cell(r["mfu"], ".1%"), cell(r["peak_mem_per_member_mb"], ".1f"),
             cell(r["compile_s"], ".1f"))
            for r in report["results"]]
    shape = report["shape"]
    title = (f"{shape['name']}: d{shape['d_model']} L{shape['n_layers']} H{shape['n_heads']} "
             f"T{shape['context_used']} V{shape['vocab_used']} B{shape['batch']}, {report['dtype']}, "
             f"{report['steps']} steps, {report['device']}; MFU against {report['mfu_basis']} "
             f"{report['spec_peak_flops'] or report['matmul_flops']:.3g} FLOP/s "
             f"(large matmul here: {report['matmul_flops']:.3g})")
    roofline = [f"roofline ({work}): XLA counts {r['xla_flops']:.3g} FLOP and {r['xla_bytes']:.3g} bytes accessed per "
                f"member-step (intensity {r['intensity'] or 0:.1f} FLOP/byte); compute allows "
                f"{r['device_compute_bound'] or 0:,.0f} member-steps/s here at the peak above, an H100 "
                f"{r['h100_bound']:,.0f} (989 TFLOP/s bf16, 3.35 TB/s; the bytes count operands as XLA sees them, "
                "cache reuse aside)" for work, r in report["rooflines"].items()]
    marked = ["* does less work than the torch loop (answer position only): not like for like"] if any(
        r["speedup_vs_torch"] and not r["same_work_as_torch"] for r in report["results"]) else []
    return "\n".join([title, *aligned(header, rows), *marked, *roofline, *report["notes"]])
