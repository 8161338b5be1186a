"""`fttrace bench --config.objective=compaction`: what stopped members cost, with and without compaction.

A phase fine-tuned to a criterion, or one where members diverge, soon holds mostly frozen members. `train.PhaseLoop`
compacts them out between chunks (`compact=True`: only the members still training are gathered into a smaller
member axis); without it every frozen member still costs a full step. This times one phase of `steps` steps,
evaluated every `steps / compaction.chunks` steps on a held-out set, for each share of members stopped before
its first step (`compaction.stopped`, the stopped ones drawn at random), in both modes:

  full     every member in every chunk (`compact=False`)
  compact  the members still training, padded to the loop's unit x a power of two (`compact=True`)

on a named shape (`bench.SHAPES`) with the answer-position objective and random tokens, taking turns as
`fttrace.bench.throughput` does. Each run checks that both modes give the same records and final states (bit for bit
on a CPU: `same_results`) and reports the member axis of its chunks (`widths`). The saving to expect is the share of
member-steps left (the width of the compacted axis over the member count) plus the evaluation and the gathers,
which compaction does not remove.
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from fttrace.bench import throughput as bench

from fttrace.engine import train
from fttrace.config import positive_int
from fttrace.errors import UserError

MODES = ("full", "compact")


def check(config) -> None:
    """Bad compaction-bench keys -> UserError naming the key."""
    c = config.compaction
    if not (isinstance(c.stopped, tuple) and c.stopped and all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and 0 <= s < 1 for s in c.stopped)):
        raise UserError(f"config key 'compaction.stopped': must be a tuple of shares in [0, 1), got {c.stopped!r}")
    if positive_int(config, "steps") % positive_int(config, "compaction.chunks"):
        raise UserError(f"config key 'compaction.chunks': must divide steps ({config.steps}), got {c.chunks!r}")
    positive_int(config, "compaction.examples")
    if config.data != "random":
        raise UserError(f"config key 'data': the compaction bench trains on random tokens (data='random'), got "
                        f"{config.data!r}")


class PhaseRun:
    """One mode's phase over `members` members of which those in `stopped` are frozen from the start."""

    def __init__(self, setup: bench.Setup, members: int, stopped: np.ndarray, eval_sets: dict, mode: str):
        self.setup, self.members, self.stopped = setup, members, stopped
        self.loop = train.PhaseLoop(setup.model, train.AnswerObjective(setup.task), setup.phase, eval_sets,
                                    compact=mode == "compact")
        self.data = setup.data(members)[0]
        self.final, self.records = self.train()  # untimed: compiles every width this run meets

    def train(self):
        state = train.halt(self.setup.initial_state(self.members), jnp.asarray(self.stopped))
        first = len(self.loop.widths)
        state, records = self.loop.run(state, self.data)
        self.widths = self.loop.widths[first:]  # the member axis of this run's chunks
        return jax.block_until_ready((state, records))

    def run(self) -> float:
        t0 = time.perf_counter()
        self.train()
        return time.perf_counter() - t0


def same_results(a: PhaseRun, b: PhaseRun) -> bool:
    """Whether two runs' records and final states are equal (NaN equal to NaN)."""
    equal = lambda x, y: np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)  # noqa: E731
    return (all(sa == sb and all(equal(ma[k], mb[k]) for k in ma) for (sa, ma), (sb, mb) in zip(a.records, b.records))
            and all(jax.tree.leaves(jax.tree.map(equal, a.final, b.final))))


def run_compaction_bench(config, log=None) -> dict:
    """Both modes at every member count and stopped share; the results as a JSON-ready dict."""
    check(config)
    config = config.copy_and_resolve_references()
    config.modes, config.objective = ("vmap",), "answer"
    setup = bench.setup_from_config(config)
    setup.phase.steps, setup.phase.eval_every = config.steps, config.steps // config.compaction.chunks
    setup.phase.target = 0.0
    eval_sets = {"held_out": setup.task.sample(jax.random.PRNGKey(config.seed + 1), config.compaction.examples,
                                               None, None)}
    results = []
    for members in config.members:
        for share in config.compaction.stopped:
            count = int(round(share * members))
            stopped = np.zeros(members, bool)
            stopped[np.random.default_rng(config.seed).choice(members, count, replace=False)] = True
            label = f"{members} members, {count} stopped"
            if log:
                log(f"{label}: compiling {', '.join(MODES)}")
            runs = {mode: PhaseRun(setup, members, stopped, eval_sets, mode) for mode in MODES}
            seconds = bench.timed_rounds(runs, config.repeats, label, log)
            same = same_results(runs["full"], runs["compact"])
            for mode, r in runs.items():
                best = min(seconds[mode])
                results.append(dict(mode=mode, members=members, stopped=count, training=members - count,
                                    steps=config.steps, chunks=config.compaction.chunks, seconds=seconds[mode],
                                    widths=list(r.widths),
                                    training_member_steps_per_s=(members - count) * config.steps / best,
                                    speedup_vs_full=min(seconds["full"]) / best, same_results=same,
                                    device=bench.device_name()))
            del runs
    shape = dict(name=config.shape, **dataclasses.asdict(bench.SHAPES[config.shape]))
    return dict(objective="compaction", shape=shape,
                steps=config.steps, chunks=config.compaction.chunks, repeats=config.repeats,
                device=bench.device_name(), jax_version=jax.__version__, results=results)


def format_compaction_table(report: dict) -> str:
    """The results as an aligned text table, one line per (members, stopped, mode)."""
    header = ("mode", "members", "stopped", "member axis per chunk", "seconds", "x full", "training member-steps/s",
              "same results")
    rows = [(r["mode"], str(r["members"]), str(r["stopped"]), ",".join(map(str, sorted(set(r["widths"])))),
             f"{min(r['seconds']):.2f}", f"{r['speedup_vs_full']:.2f}", f"{r['training_member_steps_per_s']:,.0f}",
             "yes" if r["same_results"] else "NO") for r in report["results"]]
    s = report["shape"]
    title = (f"compaction, {s['name']}: d{s['d_model']} L{s['n_layers']} H{s['n_heads']} T{s['context']} "
             f"V{s['vocab']} B{s['batch']}, {report['steps']} steps in {report['chunks']} chunks, {report['device']}")
    return "\n".join([title, *bench.aligned(header, rows)])
