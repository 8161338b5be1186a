"""Training state, optimiser and the jitted phase loop, vmapped over the member axis.

Every leaf of a `TrainState` has a leading member axis. A phase is a Python loop over *chunks*, from one eval step
to the next (`eval_steps`); one chunk is one jitted call: a loop over steps of the vmapped train step, then the
vmapped evaluation. What a step trains on is the study's *objective*: the answer-position loss of a task
(`AnswerObjective`) or the every-position LM loss of a corpus (`lm.steps.NextTokenObjective`), reading the member's
data pytree (`DataSpec.batch`). Batches are sampled on device inside the step from the member's key, so nothing
crosses to the host inside a chunk. Per-member hyperparameters (learning rate, task mixture, shortcut strength) are
arrays: the learning rate, and any optimiser hyperparameter a sweep varies (OPTIMIZER_AXES), live in the optimiser
state through `optax.inject_hyperparams`.

A member whose loss, gradients or new parameters are non-finite is frozen (its parameters and optimiser state
stop changing) and flagged with the step; vmap keeps its neighbours' arithmetic independent of it. A member that
meets its phase's criterion (`phase.target`, read from held-out accuracies at each evaluation, or a study's own
`stop` rule over what it measures on the host, e.g. the rate of a feature in sampled text) is frozen the same way
and its stop step recorded. Between chunks, frozen members leave the program (`PhaseLoop`, compaction): the
others train in a smaller member axis whose member batches keep their width, so no member's numbers change.

The optimiser works on the parameters flattened into one vector per member: its state holds one array per
moment, so the update, the finiteness checks and the freeze are a few large kernels instead of a few per
parameter array. On XLA:CPU that halves the compile time of a training chunk and trims the step.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import flax
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from fttrace.engine import memory
from fttrace.engine.members import map_members
from fttrace.model.transformer import ModelConfig, Transformer, init_params


@flax.struct.dataclass
class TrainState:
    params: Any
    opt_state: Any  # the optimiser's state for the flattened parameter vector (`flat_params`)
    key: jax.Array  # uint32[2], this member's stream for the phase
    step: jax.Array  # int32
    diverged: jax.Array  # bool: frozen because something became non-finite
    diverged_step: jax.Array  # int32, -1 while healthy
    stopped: jax.Array  # bool: frozen because it reached its phase's criterion (`phase.target`)
    stop_step: jax.Array  # int32: the step at which it did, -1 while training


@flax.struct.dataclass
class QueryMix:
    """What an answer-position task's batches ask, per member (AnswerObjective)."""
    queries: jax.Array  # [Q]: probabilities over the task's `queries` (which operand or target a sequence asks for)
    spurious: jax.Array  # probability that a sequence carries the shortcut


@flax.struct.dataclass
class DataSpec:
    """Per-member parameters of the training distribution and of the update."""
    # What the study's objective draws a member's batches from: a study-defined pytree of per-member arrays
    # (QueryMix for the answer-position tasks, lm.steps.DocumentRange for the language models).
    batch: Any
    # The members' fine-tuning protocol (protocols.UpdateSpec: which entries train, L2-SP strength and anchor);
    # None: every parameter trains freely.
    protocol: Any = None
    # The phase's stopping criterion: {eval set name: weight [members]}; a member stops once the weighted sum of its
    # accuracies on those held-out sets reaches `phase.target`. None: every member trains for the whole budget.
    criterion: Any = None


def data_spec(queries, spurious, criterion=None) -> DataSpec:
    """An answer-position task's DataSpec of float32 numpy arrays (queries [members, Q], spurious [members])."""
    crit = None if criterion is None else {k: np.asarray(v, np.float32) for k, v in criterion.items()}
    return DataSpec(batch=QueryMix(queries=np.asarray(queries, np.float32), spurious=np.asarray(spurious, np.float32)),
                    criterion=crit)


def lr_multiplier(step, warmup, steps: int, schedule: str, final_fraction: float = 0.0, xp=jnp):
    """The schedule's shape at `step` (peak 1; the per-member peak LR is an injected hyperparameter): a linear
    warm-up from 0 over `warmup` steps (none at 0), then constant, or a cosine decay that reaches `final_fraction` at
    `steps`. `warmup` may differ per member (it is injected too); xp: jax.numpy, or numpy for a plain loop."""
    step = xp.asarray(step, xp.float32)
    warm = xp.where(warmup > 0, xp.minimum(step / xp.maximum(warmup, 1), 1.0), 1.0)
    if schedule != "cosine":
        return warm
    progress = xp.clip((step - warmup) / xp.maximum(steps - warmup, 1), 0.0, 1.0)
    decay = final_fraction + (1 - final_fraction) * 0.5 * (1 + xp.cos(math.pi * progress))
    return xp.where(step < warmup, warm, decay)


def scale_by_phase_schedule(warmup_steps, phase) -> optax.GradientTransformation:
    """Updates scaled by the phase's `lr_multiplier`; under `optax.inject_hyperparams` the warm-up is a number in the
    optimiser state, so members of one program may warm up for different lengths."""
    def init(params):
        return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        m = lr_multiplier(state.count, warmup_steps, phase.steps, phase.schedule, phase.get("final_lr_fraction", 0.0))
        return (jax.tree.map(lambda u: u * m.astype(u.dtype), updates),
                optax.ScaleByScheduleState(count=jnp.minimum(state.count, jnp.iinfo(jnp.int32).max - 1) + 1))
    return optax.GradientTransformation(init, update)


def make_optimizer(phase, lr) -> optax.GradientTransformation:
    parts = [optax.clip_by_global_norm(phase.grad_clip)] if phase.grad_clip > 0 else []
    parts += [optax.inject_hyperparams(optax.adamw)(learning_rate=lr, b1=phase.b1, b2=phase.b2,
                                                    weight_decay=phase.weight_decay),
              optax.inject_hyperparams(scale_by_phase_schedule, static_args=("phase",))(
                  warmup_steps=float(phase.warmup_steps), phase=phase)]
    return optax.chain(*parts)


def member_key(base_seed: int, seed, phase_id: int):
    """The key of one member in one phase: depends only on the member's seed, never on its sweep position."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(base_seed), seed), phase_id)


PHASE_IDS = {"init": 0, "pretrain": 1, "finetune": 2, "reft": 3, "eval": 4, "control": 5}


def member_keys(base_seed: int, seeds, phase: str):
    """The keys of members of seeds `seeds` in `phase` (a name in PHASE_IDS): from the seed only, never the sweep
    position, so a member's data order is the same alone or in any sweep (and a seed's members share it)."""
    return jax.vmap(lambda s: member_key(base_seed, s, PHASE_IDS[phase]))(jnp.asarray(np.asarray(seeds), jnp.int32))


# Optimiser hyperparameters a sweep may vary per member (they live in the optimiser state: `inject_hyperparams`).
OPTIMIZER_AXES = ("weight_decay", "b1", "b2", "eps", "warmup_steps")


def init_members(cfg: ModelConfig, phase, base_seed: int, seeds, lrs, hyper=None) -> TrainState:
    """Fresh members: parameters from each seed's init key, optimiser state with each member's LR (and `hyper`:
    {name: [members]} of OPTIMIZER_AXES in place of the phase's)."""
    @jax.jit
    @jax.vmap
    def init(seed, lr, hyper):
        params = init_params(cfg, member_key(base_seed, seed, PHASE_IDS["init"]))
        return new_state(params, phase, lr, member_key(base_seed, seed, PHASE_IDS["pretrain"]), hyper)
    hyper = {name: jnp.asarray(values, jnp.float32) for name, values in (hyper or {}).items()}
    seeds, lrs = jnp.asarray(seeds, jnp.int32), jnp.asarray(lrs, jnp.float32)
    memory.require_room(jax.eval_shape(init, seeds, lrs, hyper), f"{len(seeds):,} members' parameters and optimiser "
                        "state")
    return init(seeds, lrs, hyper)


def flat_params(params) -> tuple[jax.Array, Callable]:
    """All parameters of one member as one vector, and the function that restores the tree."""
    return jax.flatten_util.ravel_pytree(params)


def new_state(params, phase, lr, key, hyper=None) -> TrainState:
    """One member's fresh state; `hyper`: {name: value} of OPTIMIZER_AXES in place of the phase's values (they live
    in the optimiser state, like the LR, so members of one program may differ in them)."""
    opt_state = make_optimizer(phase, lr).init(flat_params(params)[0])
    if hyper:
        opt_state = optax.tree_utils.tree_set(opt_state, **{k: jnp.asarray(v, jnp.float32) for k, v in hyper.items()})
    return TrainState(params=params, opt_state=opt_state, key=key,
                      step=jnp.zeros((), jnp.int32), diverged=jnp.zeros((), bool),
                      diverged_step=jnp.full((), -1, jnp.int32), stopped=jnp.zeros((), bool),
                      stop_step=jnp.full((), -1, jnp.int32))


def fan_out(parent: TrainState, parent_index, phase, lrs, keys, wrap=None, hyper=None) -> TrainState:
    """Children of `parent` members: gathered parameters, a fresh optimiser with each child's LR and key.

    A diverged parent stays diverged in its children (with its step), so a broken lineage is never revived.
    wrap: optional `params -> trainable tree` of member-stacked parameters (a fine-tuning protocol's
    reparameterisation), applied before the optimiser state is made. hyper: {name: [children]} values of
    OPTIMIZER_AXES in place of the phase's.
    """
    idx = jnp.asarray(parent_index)
    hyper = {name: jnp.asarray(values, jnp.float32) for name, values in (hyper or {}).items()}
    lrs = jnp.asarray(lrs, jnp.float32)
    make = jax.jit(jax.vmap(lambda p, lr, k, h: new_state(p, phase, lr, k, h)))

    def gathered(tree):
        params = jax.tree.map(lambda x: x[idx], tree)
        return params if wrap is None else wrap(params)
    memory.require_room(jax.eval_shape(lambda tree: make(gathered(tree), lrs, keys, hyper), parent.params),
                        f"{len(lrs):,} children's parameters and optimiser state")
    fresh = make(gathered(parent.params), lrs, keys, hyper)
    return fresh.replace(diverged=parent.diverged[idx], diverged_step=parent.diverged_step[idx])


def answer_loss(model: Transformer, params, tokens, answers, masks=None, answer_only: bool = True):
    """Cross-entropy and accuracy of the answer predicted at the last position (`answer_only=False`: computed as a
    plain model would, the logits of every position, then the last read: the same numbers for more work)."""
    logits = model.apply({"params": params}, tokens, masks=masks, answer_only=answer_only)
    logits = logits if answer_only else logits[:, -1]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, answers).mean()
    acc = (logits.argmax(-1) == answers).mean()
    return loss, acc


class AnswerObjective:
    """The loss of the answer-position tasks (PCFG, Tracr): batches from the task's on-device sampler, asking the
    member's QueryMix; cross-entropy of the answer at the last position. Its shared inputs are the held-out sets
    ({name: (tokens, answers)}), on which every member is evaluated between chunks.

    An objective is what a study kind gives the phase loop: `loss(model, params, key, batch, batch_size, shared)`
    -> (loss, aux) for one member, and `evaluate(model, params, shared)` -> {metric: scalar} (jitted, per member)."""

    def __init__(self, task, answer_only: bool = True):
        self.task, self.answer_only = task, answer_only  # answer_only=False: the full forward (benchmarks)

    def loss(self, model, params, key, batch: QueryMix, batch_size: int, shared):
        tokens, answers = self.task.sample(key, batch_size, batch.queries, batch.spurious)
        return answer_loss(model, params, tokens, answers, answer_only=self.answer_only)

    @staticmethod
    def evaluate(model, params, eval_sets: dict) -> dict:
        """Loss and accuracy of one member on each held-out set ({name: (tokens, answers)})."""
        out = {}
        for name, (tokens, answers) in eval_sets.items():
            out[f"{name}_loss"], out[f"{name}_acc"] = answer_loss(model, params, tokens, answers)
        return out


def train_step(model, objective, phase, state: TrainState, data: DataSpec, shared):
    """One step of one member (vmapped by the caller). Returns the new state and the training loss."""
    key, k_batch = jax.random.split(state.key)
    (loss, _), grads = jax.value_and_grad(
        lambda p: objective.loss(model, p, k_batch, data.batch, phase.batch_size, shared), has_aux=True)(state.params)
    return apply_gradients(phase, state, key, loss, grads, data.protocol)


def apply_gradients(phase, state: TrainState, key, loss, grads, protocol=None):
    """One optimiser update of one member; a member whose loss, gradients or new parameters are not finite is
    frozen (and marked diverged at this step) instead, and a stopped member stays as it is. Returns the new state
    and the loss (NaN once frozen).

    protocol: the member's protocols.UpdateSpec, or None. With one, the L2-SP gradient l2sp x (w - anchor) joins the
    loss gradient, and the gradient (before clipping) and the update are multiplied by the mask, so entries
    outside the mask never move (weight decay included)."""
    flat, unflatten = flat_params(state.params)
    flat_grads = flat_params(grads)[0]
    if protocol is not None:
        flat_grads = (flat_grads + protocol.l2sp * (flat - protocol.anchor)) * protocol.mask
    tx = make_optimizer(phase, 0.0)  # the LR is read from opt_state (inject_hyperparams)
    updates, opt_state = tx.update(flat_grads, state.opt_state, flat)
    if protocol is not None:
        updates = updates * protocol.mask
    new_flat = flat + updates
    finite = jnp.isfinite(loss) & jnp.isfinite(flat_grads).all() & jnp.isfinite(new_flat).all()
    ok = ~state.diverged & ~state.stopped & finite
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
    diverging = ~state.diverged & ~state.stopped & ~finite
    return state.replace(
        params=unflatten(keep(new_flat, flat)), opt_state=keep(opt_state, state.opt_state), key=key,
        step=state.step + 1, diverged=state.diverged | diverging,
        diverged_step=jnp.where(diverging, state.step, state.diverged_step)), jnp.where(ok, loss, jnp.nan)


# Members train in member batches (vmapped together) of at most this many activations (sequences x context x
# d_model x layers per batch): on a lone CPU, batches of a few members amortise the on-device sampler and stay in
# cache; on an accelerator, all at once is fastest until activations overflow its memory. The measurements behind both
# numbers (`fttrace bench configs/bench.py --config.pretrain.member_batch=N`): benchmarks/NOTES.md. An accelerator that
# reports its memory sizes the batch from the compiled program instead (`memory.py`, `PhaseLoop`); the budget is the
# fallback.
BATCH_ACTIVATIONS = {"cpu": 2**18, "accelerator": 2**29}


def sized_by_memory(phase) -> int | None:
    """The device memory (bytes) a phase's member batch is sized against: where `phase.member_batch` is 0, one
    device holds every member and it reports its memory (an accelerator); else None (a CPU, several devices, or a
    batch the config sets)."""
    if phase.get("member_batch", 0) or jax.device_count() > 1:
        return None
    return memory.device_bytes_limit()


def train_member_batch(model_cfg: ModelConfig, phase) -> int | None:
    """How many members train together: `phase.member_batch` if set; all of them (None) when members are spread
    over several devices; else the largest power of two whose activations fit `BATCH_ACTIVATIONS` (where
    `sized_by_memory`, `PhaseLoop` replaces it by the size the compiled program's memory allows)."""
    if phase.get("member_batch", 0):
        return phase.member_batch
    if jax.device_count() > 1:
        return None
    budget = BATCH_ACTIVATIONS["cpu" if jax.default_backend() == "cpu" else "accelerator"]
    per_member = phase.batch_size * model_cfg.max_len * model_cfg.d_model * model_cfg.n_layers
    return 2 ** int(math.log2(max(budget // per_member, 1)))


def member_batch_size(members: int, member_batch: int | None) -> int:
    """Members per member batch: the largest divisor of `members` up to `member_batch` (None: all of them). A size
    that does not divide the count would leave a remainder batch, and compile the step a second time for it."""
    return max(g for g in range(1, min(member_batch or members, members) + 1) if members % g == 0)


def train_steps(model, objective, phase, member_batch: int | None = None) -> Callable:
    """`steps` steps of every member: (state, data, shared, steps) -> (state, mean training loss per member [members]
    over the steps it trained, NaN if none), to be jitted. `steps` may be traced: one program serves chunks of any
    length (a phase evaluated at uneven steps compiles its training once).

    member_batch: members trained together (vmapped, in member batches of `member_batch_size`); batches take turns
    (`lax.map`),
    each running all its steps before the next starts. None: every member at once.
    """
    def one_member(state: TrainState, data: DataSpec, shared, steps):
        def body(_, carry):
            state, total, count = carry
            state, loss = train_step(model, objective, phase, state, data, shared)
            finite = jnp.isfinite(loss)
            return state, total + jnp.where(finite, loss, 0.0), count + finite
        state, total, count = jax.lax.fori_loop(0, steps, body, (state, jnp.zeros((), jnp.float32),
                                                                 jnp.zeros((), jnp.int32)))
        return state, jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)

    def run(state: TrainState, data: DataSpec, shared, steps):
        members = state.step.shape[0]
        batch = member_batch_size(members, member_batch)
        one = lambda s, d: one_member(s, d, shared, steps)  # noqa: E731
        if batch == members:  # one batch: a plain vmap, which keeps a member axis sharded over devices as it is
            return jax.vmap(one)(state, data)
        return map_members(one, state, data, batch=batch)
    return run


def eval_steps(phase) -> tuple[int, ...]:
    """The steps at which a phase evaluates its members: `phase.eval_steps` (uneven, from 0 to `phase.steps`), or
    every `phase.eval_every` steps from 0, preceded with `phase.eval_schedule = "log"` by `log_spaced_steps`."""
    if phase.get("eval_steps"):
        return tuple(phase.eval_steps)
    even = tuple(range(0, phase.steps + 1, phase.eval_every))
    if phase.get("eval_schedule", "even") == "log":
        return (0, *log_spaced_steps(phase.eval_every), *even[1:])
    return even


def log_spaced_steps(below: int) -> tuple[int, ...]:
    """1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, ... up to (not including) `below`."""
    return tuple(sorted({int(m * 10 ** e) for e in range(len(str(below))) for m in (1, 1.5, 2, 3, 5, 7)
                         if m * 10 ** e < below and float(m * 10 ** e).is_integer()}))


class PhaseLoop:
    """Runs one training phase of a member-stacked state: jitted chunks of steps, evaluation at each eval step."""

    def __init__(self, model_cfg: ModelConfig, objective, phase, shared, eval_member_batch: int = 8,
                 sharding=None, model=None, compact: bool = True, measure: Callable | None = None,
                 stop: Callable | None = None):
        """objective: the study's loss and evaluation (AnswerObjective, lm.steps.NextTokenObjective).
        shared: the inputs every member reads (held-out sets, a resident corpus), passed to the objective.
        sharding: where the member axis of states and metrics lives (placement.Placement.members).
        model: what applies the state's parameters (default `Transformer(model_cfg)`; a protocol's
        `protocols.Reparameterised` for trainable trees).
        measure: `measure(state, step, final, records) -> {metric: [members]}`, measurements made outside the jitted
        program (sampling and decoding text, say) at every eval step, merged into the records (`final`: the phase's
        last step; `records`: the phase's records before this one).
        stop: `stop(metrics) -> bool [members]`, the members that meet the phase's criterion at this evaluation,
        read from its metrics (`measure`'s included); they stop as with `phase.target` (step 0 included).
        compact: once members have stopped or diverged, train (and evaluate) only the others. On one device they
        are gathered to the front of the member axis and one program computes the leading `unit`s of it (`unit`:
        the least common multiple of the training and evaluation batches; the count of units is an argument, so a
        phase compiles its training once however many members stop); on several devices they are gathered into a
        member axis of `unit` x a power of two (`unit` also a multiple of the device count). Either way every
        member is computed in member batches of the same width as in the full program, so its numbers do not change (bit
        for bit on a CPU), and a frozen member's records and state are what the full program gives it.
        Single-process runs only."""
        self.model = Transformer(model_cfg) if model is None else model
        self.objective, self.phase, self.shared, self.measure, self.stop = objective, phase, shared, measure, stop
        self.sharding, self.compact = sharding, compact
        self.member_batch, self.eval_member_batch = train_member_batch(model_cfg, phase), eval_member_batch
        self.bytes_limit = sized_by_memory(phase)  # not None: `member_batch` is measured when the phase starts
        self._programs = {}  # (training, evaluation) member batch widths -> (chunk, first record, leading units)
        placed = {} if sharding is None else {"out_shardings": sharding}

        def put(state, metrics, sub_state, sub_metrics, index, steps):
            """The whole member axis after a chunk of the members at `index`: frozen members outside it advance
            their step and key as a chunk would (so states match an uncompacted run), keep their metrics and have
            no training loss."""
            state, metrics = idle(state, metrics, steps)
            scatter = lambda full, part: full.at[index].set(part)  # noqa: E731
            # (metrics made by `measure` are not the chunk's: they stay, and the next measure replaces them)
            metrics = {name: scatter(full, sub_metrics[name]) if name in sub_metrics else full
                       for name, full in metrics.items()}
            return jax.tree.map(scatter, state, sub_state), metrics

        self._put, self._idle = jax.jit(put, **placed), jax.jit(idle, **placed)
        self._halt = jax.jit(halt, **placed)
        self._take = jax.jit(lambda tree, index: jax.tree.map(lambda x: x[index], tree))
        self.widths: list[int] = []  # the member axis of every chunk run (compaction shows here)
        self.measuring_s = 0.0  # seconds `measure` took in the last `run`

    def programs(self, batch: int, eval_batch: int):
        """The jitted chunk, first-record and leading-units functions that train members in member batches of `batch`
        and evaluate them in batches of `eval_batch` (both must divide the member count)."""
        if (batch, eval_batch) not in self._programs:
            advance = train_steps(self.model, self.objective, self.phase, batch)
            target = self.phase.get("target", 0.0)

            def metrics_of(state, shared, losses):
                metrics = map_members(lambda p: self.objective.evaluate(self.model, p, shared), state.params,
                                      batch=eval_batch)
                metrics["train_loss"] = jnp.full(state.step.shape, jnp.nan) if losses is None else losses
                return metrics

            def chunk(state, data, shared, steps):
                state, losses = advance(state, data, shared, steps)
                metrics = metrics_of(state, shared, losses)
                return stop_at_target(state, data, metrics, target), metrics

            def first_record(state, data, shared):
                metrics = metrics_of(state, shared, None)
                return stop_at_target(state, data, metrics, target), metrics

            unit = math.lcm(batch, eval_batch)

            def leading_units(state, data, shared, steps, metrics, units):
                """A chunk of the first `units` x `unit` members (a traced count); the members after them are idle
                (step and key advanced, metrics kept, no training loss). One program serves every count."""
                out_state, out_metrics = idle(state, metrics, steps)

                def one_unit(i, carry):
                    out_state, out_metrics = carry
                    start = i * unit
                    take = lambda x: jax.lax.dynamic_slice_in_dim(x, start, unit)  # noqa: E731
                    sub_state, sub_metrics = chunk(jax.tree.map(take, state), jax.tree.map(take, data), shared,
                                                   steps)
                    put = lambda full, part: jax.lax.dynamic_update_slice_in_dim(full, part, start, 0)  # noqa: E731
                    return (jax.tree.map(put, out_state, sub_state),
                            {name: put(full, sub_metrics[name]) if name in sub_metrics else full
                             for name, full in out_metrics.items()})
                return jax.lax.fori_loop(0, units, one_unit, (out_state, out_metrics))

            placed = {} if self.sharding is None else {"out_shardings": self.sharding}
            self._programs[batch, eval_batch] = (jax.jit(chunk, donate_argnums=0, **placed),
                                                 jax.jit(first_record, **placed),
                                                 jax.jit(leading_units, donate_argnums=0, **placed))
        return self._programs[batch, eval_batch]

    def run(self, state: TrainState, data: DataSpec, on_chunk=None, records=None, on_records=None):
        """Train for `phase.steps`; returns the final state and [(step, {metric: [members]}), ...].

        The first record (step 0) evaluates the state before any update; the others follow at `eval_steps(phase)`.
        With `phase.target` and a criterion in `data`, a member that meets it at an evaluation stops there (step 0
        included). Metrics stay on device (with several processes, each holds only its members' values).
        `on_chunk(step, total, seconds, training=..., trained=..., measuring=..., batch=...)` is called after each
        chunk (progress display; `trained`: members that trained in the chunk, `training`: those still training
        after it, both None with several processes; `measuring`: seconds of `measure` in this run so far; `batch`:
        members trained together), `on_records(state, records)` too (checkpoints). Once every member has stopped or
        diverged, the phase ends (`_ended`: no more chunks; the records of the steps left are filled in as the loop
        would give them). To
        resume, pass the records of the interrupted run with its state: training goes on after the last recorded
        step.
        """
        members = state.step.shape[0]
        if self.bytes_limit is not None:  # once per loop: compaction keeps the batch's width
            program = jax.jit(train_steps(self.model, self.objective, self.phase), donate_argnums=0)
            self.member_batch = memory.measured_member_batch(program, state, data, self.shared, self.bytes_limit)
            self.bytes_limit = None
        batches = member_batch_size(members, self.member_batch), member_batch_size(members, self.eval_member_batch)
        programs = self.programs(*batches)
        first = programs[1]
        schedule = eval_steps(self.phase)
        self.measuring_s = 0.0
        self._chunk_names = None  # the metrics a chunk computes (None: every metric; a `measure` adds its own)
        if records is None:
            state, metrics = first(state, data, self.shared)
            if self.measure is not None:
                self._chunk_names = set(metrics)
            metrics = self._measured(state, metrics, 0, [])
            state, records = self._stopped(state, metrics), [(0, metrics)]
        elif self.measure is not None:
            self._chunk_names = set(jax.eval_shape(first, state, data, self.shared)[1])
        records, training = list(records), self.training_count(state)
        for done in [s for s in schedule if s > records[-1][0]]:
            t0 = time.perf_counter()
            if training == 0 and self.compact:  # every member has stopped or diverged: the phase ends here
                return self._ended(state, records, on_chunk, on_records)
            steps = done - records[-1][0]
            state, metrics = self._advance(programs, math.lcm(*batches), state, data, records[-1][1], steps)
            metrics = jax.block_until_ready(self._measured(state, metrics, done, records))
            state = self._stopped(state, metrics)
            records.append((done, metrics))
            if on_records is not None:
                on_records(state, records)
            trained, training = training, self.training_count(state)
            if on_chunk is not None:
                on_chunk(done, self.phase.steps, time.perf_counter() - t0, training=training, trained=trained,
                         measuring=self.measuring_s, batch=batches[0])
        return state, records

    def _ended(self, state: TrainState, records: list, on_chunk, on_records):
        """The rest of a phase whose members have all stopped or diverged, without training: each eval step left
        gets the record the loop would give it (the last one's metrics, no training loss), and the state reaches the
        final step as idle chunks would take it (step and key advanced), so the results and the final checkpoint are
        what stepping on to the budget gives. Without a `measure`, that is one idle advance; a `measure` still
        measures at each step left (its measurements of the stopped members may differ from step to step: text
        sampled with the step's key), each record checkpointed as the loop does."""
        t0 = time.perf_counter()
        left = [s for s in eval_steps(self.phase) if s > records[-1][0]]
        if self.measure is None:
            state, metrics = self._idle(state, records[-1][1], jnp.int32(left[-1] - records[-1][0]))
            records += [(done, metrics) for done in left]
            if on_records is not None:
                on_records(state, records)
        else:
            for done in left:
                state, metrics = self._idle(state, records[-1][1], jnp.int32(done - records[-1][0]))
                records.append((done, jax.block_until_ready(self._measured(state, metrics, done, records))))
                if on_records is not None:
                    on_records(state, records)
        if on_chunk is not None:
            on_chunk(self.phase.steps, self.phase.steps, time.perf_counter() - t0, training=0, trained=0,
                     measuring=self.measuring_s)
        return state, records

    def _measured(self, state: TrainState, metrics: dict, step: int, records: list) -> dict:
        """The jitted evaluation's metrics with those of `measure` (if any) at `step`, after `records`; the
        seconds `measure` takes add to `measuring_s` (from the program's end: the chunk is waited for first)."""
        if self.measure is None:
            return metrics
        metrics = jax.block_until_ready(metrics)
        t0 = time.perf_counter()
        measured = self.measure(state, step, step == self.phase.steps, records)
        self.measuring_s += time.perf_counter() - t0
        return {**metrics, **measured}

    def _stopped(self, state: TrainState, metrics: dict) -> TrainState:
        """`state` with the members that meet the study's `stop` rule in `metrics` stopped."""
        return state if self.stop is None else self._halt(state, self.stop(metrics))

    @staticmethod
    def training_count(state: TrainState) -> int | None:
        """How many members still train (None where another process holds some of them)."""
        if jax.process_count() > 1:
            return None
        return int((~np.asarray(state.stopped | state.diverged)).sum())

    def _advance(self, programs, unit: int, state: TrainState, data: DataSpec, metrics: dict, steps: int):
        """One chunk of `steps` steps: of every member, or, with `compact`, of the members still training (see
        __init__); `programs`: `self.programs(...)`; `unit`: the least common multiple of the training and
        evaluation batch widths."""
        chunk, _, leading = programs
        steps = jnp.int32(steps)
        devices = len(self.sharding.device_set) if self.sharding is not None else 1
        if self.compact and devices == 1 and jax.process_count() == 1:
            return self._advance_leading(leading, unit, state, data, metrics, steps)
        index = self._training_members(state, unit) if self.compact else None
        if index is None:
            self.widths.append(state.step.shape[0])
            return chunk(state, data, self.shared, steps)
        self.widths.append(len(index))
        if not len(index):  # every member has stopped or diverged: nothing to compute
            return self._idle(state, metrics, steps)
        sub_state, sub_data = self._take((state, data), index)
        if self.sharding is not None:
            sub_state, sub_data = jax.device_put((sub_state, sub_data), self.sharding)
        sub_state, sub_metrics = chunk(sub_state, sub_data, self.shared, steps)
        return self._put(state, metrics, sub_state, sub_metrics, index, steps)

    def _advance_leading(self, leading, unit: int, state: TrainState, data: DataSpec, metrics: dict, steps):
        """A chunk on one device: the members still training gathered to the front, the leading units of `unit`
        members computed by one program, the member axis put back in order."""
        frozen = np.asarray(state.stopped | state.diverged)
        training = np.flatnonzero(~frozen)
        units = -(-len(training) // unit)
        self.widths.append(units * unit)
        if not len(training):  # every member has stopped or diverged: nothing to compute
            return self._idle(state, metrics, steps)
        if not frozen.any():  # every member computed: the chunk's metrics only, as the full program gives them
            state, metrics = leading(state, data, self.shared, steps, metrics, jnp.int32(units))
            return state, metrics if self._chunk_names is None else {
                name: value for name, value in metrics.items() if name in self._chunk_names}
        order = np.concatenate([training, np.flatnonzero(frozen)])
        state, data, metrics = self._take((state, data, metrics), jnp.asarray(order, jnp.int32))
        state, metrics = leading(state, data, self.shared, steps, metrics, jnp.int32(units))
        return self._take((state, metrics), jnp.asarray(np.argsort(order), jnp.int32))

    def _training_members(self, state: TrainState, batches: int):
        """Indices of the members still training, padded with a frozen one to `unit` x a power of two (see
        __init__); None when that would not shrink the member axis, or with several processes."""
        if jax.process_count() > 1:
            return None
        frozen = np.asarray(state.stopped | state.diverged)
        n = len(frozen)
        devices = len(self.sharding.device_set) if self.sharding is not None else 1
        unit = math.lcm(batches, devices)
        training = np.flatnonzero(~frozen)
        if not len(training):
            return jnp.zeros((0,), jnp.int32)
        size = unit * 2 ** math.ceil(math.log2(max(len(training) / unit, 1)))
        if size >= n or not frozen.any():
            return None
        pad = np.full(size - len(training), np.flatnonzero(frozen)[0])
        return jnp.asarray(np.concatenate([training, pad]), jnp.int32)


def idle(state: TrainState, metrics: dict, steps):
    """A chunk in which no member trains: every member advances its step and key, keeps its metrics."""
    keys = jax.lax.fori_loop(0, steps, lambda _, k: jax.vmap(lambda x: jax.random.split(x)[0])(k), state.key)
    return (state.replace(step=state.step + steps, key=keys),
            dict(metrics, train_loss=jnp.full_like(metrics["train_loss"], jnp.nan)))


def stop_at_target(state: TrainState, data: DataSpec, metrics: dict, target: float) -> TrainState:
    """Stop every healthy member whose criterion (data.criterion: weights over eval sets) reaches `target` now."""
    if data.criterion is None or not target:
        return state
    score = sum(weight * metrics[f"{name}_acc"] for name, weight in data.criterion.items())
    return halt(state, score >= target)


def halt(state: TrainState, reached) -> TrainState:
    """Stop every healthy member where `reached` (bool [members]) holds, recording the step."""
    reached = ~state.stopped & ~state.diverged & reached
    return state.replace(stopped=state.stopped | reached, stop_step=jnp.where(reached, state.step, state.stop_step))


EVAL_SETS = ("pt", "ft", "ft_shortcut")  # C_PT; C_FT without the shortcut (C_Te = 0); C_FT with it (C_Te = 1)


# Candidate strings per test sequence: enough that few test strings repeat (the shortcut's strings are rare).
TEST_CANDIDATES = 1024


def eval_sets_for(task, examples: int, seed: int, name: str = "eval") -> dict:
    """Held-out sets shared by every member, drawn from the task's held-out inputs: "pt" asks about the pretraining
    operand (target), "ft" about the fine-tuning one without the shortcut and "ft_shortcut" with it on every input.
    `name` seeds a distinct draw: "eval" the sets logged during training (and read by stopping criteria), from the
    task's "eval" pool; "test" those of the end-of-phase measurements, from its disjoint "test" pool, each input
    at most once where the pool allows (`Task.sample_heldout`)."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), PHASE_IDS["eval"]), sum(map(ord, name)))
    keys = jax.random.split(key, len(EVAL_SETS))
    mixes = {"pt": task.query_mix(pt=1.0), "ft": task.query_mix(ft=1.0), "ft_shortcut": task.query_mix(ft=1.0)}
    if name != "test":
        return {s: task.sample_heldout(k, examples, mixes[s], float(s == "ft_shortcut")) for s, k in zip(EVAL_SETS, keys)}
    return {s: task.sample_heldout(k, examples, mixes[s], float(s == "ft_shortcut"), candidates=TEST_CANDIDATES,
                                   pool="test", distinct=True) for s, k in zip(EVAL_SETS, keys)}


def param_count(params) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(params)))
