"""What the language-model study kinds share (stories: `stories/study.py`, canaries: `canary/study.py`).

  config checks   `check_phase` for one phase section (steps, batch size, schedule, warmup, eval steps, member
                  batch), `check_model` (model, eval and checkpoint sections) and `check_protocols`, through the
                  checks every study uses (config.require, positive_int, check_checkpoint; protocols.validate_for_model)
  LanguageModelStudy
                  the part of a study kind (runner.py) that is the same for both: one group of every seed's
                  members per model shape (`sweep.shapes`: width, depth, heads, MLP width as axes; each shape a
                  group, its columns in the members' rows), shards that deal out whole seeds, and a phase
                  (`train`): fresh members or children fanned out from their parents, the every-position objective
                  on each member's document range of the resident corpus, the study's measurements at each eval
                  step
  protocols       fine-tuning protocols (full, LoRA, SVF, top-k, L2-SP; fttrace/engine/protocols.py) as an axis of one
                  fine-tuning phase of either study (`sweep.protocol`, `protocols.phase`): `with_protocols`
"""
from __future__ import annotations

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from fttrace.engine import protocols
from fttrace.config import check_checkpoint, check_numerics, check_optimizer, positive_int, require
from fttrace.lm import corpus as corpus_lib
from fttrace.lm.steps import DocumentRange, NextTokenObjective
from fttrace.model.transformer import ModelConfig, Transformer
from fttrace.engine.runner import PhaseRunner
from fttrace.answer.sweep import shape_grid
from fttrace.engine.train import DataSpec, PhaseLoop, TrainState, fan_out, init_members, member_keys, param_count


# ---------------------------------------------------------------- config checks


def check_phase(config, phase: str) -> None:
    """One phase section: steps, batch size, schedule, warmup, eval steps rising from 0 to steps, member batch."""
    p = config[phase]
    for key in ("steps", "batch_size"):
        positive_int(config, f"{phase}.{key}")
    check_optimizer(config, phase, zero_lr=True)  # lr 0: the phase's LR is swept
    require(p.schedule in ("constant", "cosine"), f"{phase}.schedule", "must be 'constant' or 'cosine'")
    require(0 <= p.warmup_steps <= p.steps, f"{phase}.warmup_steps", f"must be in [0, {p.steps}]")
    steps = tuple(p.eval_steps)
    require(len(steps) >= 2 and steps[0] == 0 and steps[-1] == p.steps and all(
        isinstance(s, int) and a < s for a, s in zip(steps, steps[1:])), f"{phase}.eval_steps",
        f"must rise from 0 to {phase}.steps ({p.steps}), got {steps!r}")
    value = p.get("member_batch", 0)
    require(isinstance(value, int) and not isinstance(value, bool) and value >= 0, f"{phase}.member_batch",
            f"must be a non-negative integer (0: chosen for the device), got {value!r}")


MODEL_SHAPES = ("d_model", "n_layers", "n_heads", "d_mlp")  # the model fields `sweep.shapes` may vary


def check_model(config) -> None:
    """The model section of an LM study: positive sizes, heads dividing the width, its dtype and attention; the
    shapes of `sweep.shapes`; the eval and checkpoint sections."""
    m = config.model
    for key in ("d_model", "n_layers", "n_heads", "max_len"):
        positive_int(config, f"model.{key}")
    require(m.d_model % m.n_heads == 0, "model.n_heads", "must divide model.d_model")
    for key, values in config.sweep.get("shapes", {}).items():
        require(key in MODEL_SHAPES, f"sweep.shapes.{key}", f"is not a model field a sweep may vary (one of "
                f"{', '.join(MODEL_SHAPES)})")
        require(isinstance(values, tuple) and len(values) > 0 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values), f"sweep.shapes.{key}",
            "must be a non-empty tuple of positive integers")
    for shape in shape_grid(config):
        fields = {**dict(m), **shape}
        require(fields["d_model"] % fields["n_heads"] == 0, "sweep.shapes",
                f"n_heads {fields['n_heads']} does not divide d_model {fields['d_model']} in the shape {shape}")
    check_numerics(config)
    positive_int(config, "eval.batch_size")
    value = config.eval.get("member_batch", 0)
    require(isinstance(value, int) and not isinstance(value, bool) and value >= 0, "eval.member_batch",
            f"must be a non-negative integer (0: all members at once), got {value!r}")
    check_checkpoint(config)


def check_protocols(config, phases: tuple) -> None:
    """`sweep.protocol` (fine-tuning protocols, fttrace/engine/protocols.py) and `protocols.phase`, the fine-tuning
    phase whose members they parameterise (one of `phases`, not pretraining)."""
    if not protocols.in_sweep(config):
        return
    protocols.validate_for_model(config, config.model)
    phase = config.protocols.get("phase", "finetune")
    require(phase in phases[1:], "protocols.phase",
            f"must be a fine-tuning phase of the study ({', '.join(phases[1:])}), got {phase!r}")


def with_protocols(config, tables: dict) -> dict:
    """The member tables with the fine-tuning protocol as an axis of phase `protocols.phase`: each of its members
    once per protocol of `sweep.protocol` (with the protocol columns, protocols.COLUMNS), and each later member once
    per copy of its parent (inheriting the columns). Ids of that phase and later ones are numbered anew, in order."""
    if not protocols.in_sweep(config):
        return tables
    phase = config.protocols.get("phase", "finetune")
    order = list(tables)
    out = {name: tables[name] for name in order[:order.index(phase)]}
    next_id = 1 + max(int(t.member.max()) for t in out.values())
    copies = {}  # a member of `phase` or later: [(its copy's id, protocol columns)]
    for name in order[order.index(phase):]:
        rows = []
        for row in tables[name].to_dict("records"):
            if name == phase:
                versions = [(row["parent"], protocols.member_columns(config, p)) for p in config.sweep.protocol]
            else:
                versions = [(parent, columns) for parent, columns in copies.get(row["parent"], [])] or \
                    [(row["parent"], {})]
            for parent, columns in versions:
                copies.setdefault(row["member"], []).append((next_id, columns))
                rows.append(dict(row, member=next_id, parent=parent, **columns))
                next_id += 1
        out[name] = pd.DataFrame(rows)
    return out


def model_config(config, vocab_size: int, shape: dict | None = None) -> ModelConfig:
    """The model of `config.model` with a group's `shape` (`sweep.shapes` values) applied."""
    m = {**dict(config.model), **(shape or {})}
    return ModelConfig(vocab_size=vocab_size, max_len=m["max_len"], d_model=m["d_model"], n_layers=m["n_layers"],
                       n_heads=m["n_heads"], d_mlp=m.get("d_mlp", 0), dtype=m.get("dtype", "float32"),
                       attention=m.get("attention", "auto"))


# ---------------------------------------------------------------- the shared part of the kinds


@dataclasses.dataclass
class SeedGroup:
    """The members of some seeds and one model shape, every phase: {phase: members table}, in run order."""
    index: int
    tables: dict
    shape: dict = dataclasses.field(default_factory=dict)  # the group's `sweep.shapes` values ({}: config.model)


def rows_of(parents: pd.DataFrame, members: pd.DataFrame) -> np.ndarray:
    """The row of each member's parent in `parents`."""
    where = pd.Index(parents.member)
    return where.get_indexer(members.parent)


def stacked_parents(*states: tuple[TrainState, int]):
    """The real members of several phases' states, one after another, as parents to fan out from (their parameters
    and divergence; `train.fan_out` reads nothing else): [(state, its real member count), ...]."""
    def stack(field):
        return jax.tree.map(lambda *xs: jnp.concatenate([x[:n] for x, (_, n) in zip(xs, states)]),
                            *[getattr(state, field) for state, _ in states])
    return types.SimpleNamespace(params=stack("params"), diverged=stack("diverged"),
                                 diverged_step=stack("diverged_step"))


class LanguageModelStudy:
    """The shared part of the language-model study kinds. A subclass gives PHASES, KEY_PHASES (the name in
    train.PHASE_IDS whose key stream each phase uses), `member_tables()` (every seed's members of one shape; ids
    fixed by the config, so shards name members alike), `prepare`, which sets `vocab_size`, `corpus`
    (lm.corpus.Corpus) and `validation` (the held-out documents whose loss is `val_loss`), `build_measures` (its
    jitted measurements of the current `model`), and `run_group`, which starts with `use_group(group)`."""

    PHASES: tuple = ()
    KEY_PHASES: dict = {}
    FRESH = ()

    def __init__(self, config):
        self.config = config

    def groups(self) -> list[SeedGroup]:
        """One group per shape of `sweep.shapes` ([{}]: config.model), each with every seed's members; group g
        numbers its members after those of groups 0 .. g-1 and adds the shape's columns."""
        tables = with_protocols(self.config, self.member_tables())
        span = 1 + max(int(t.member.max()) for t in tables.values())
        groups = []
        for g, shape in enumerate(shape_grid(self.config)):
            def shifted(table, offset=g * span):
                parent = table.parent if table.parent.isna().all() else table.parent + offset
                return table.assign(member=table.member + offset, parent=parent, **shape)
            groups.append(SeedGroup(g, {phase: shifted(t) for phase, t in tables.items()}, shape))
        return groups

    def use_group(self, group: SeedGroup) -> None:
        """Make the group's model shape the current one: `model_cfg`, `model` and the study's measurements."""
        self.model_cfg = model_config(self.config, self.vocab_size, group.shape)
        self.model = Transformer(self.model_cfg)
        self.build_measures()  # (the subclass's)

    @staticmethod
    def shard(groups: list[SeedGroup], index: int, count: int) -> list[SeedGroup]:
        """Whole seeds dealt round-robin: shard `index` of `count` holds every member of seeds index, index + count,
        ... (a seed's lineages, controls included, never split)."""
        out = []
        for group in groups:
            seeds = sorted(set(group.tables[next(iter(group.tables))].seed))[index::count]
            out.append(SeedGroup(group.index, {phase: table[table.seed.isin(seeds)].reset_index(drop=True)
                                               for phase, table in group.tables.items()}, group.shape))
        return [g for g in out if all(len(t) for t in g.tables.values())]

    @staticmethod
    def member_count(group: SeedGroup) -> int:
        return sum(len(table) for table in group.tables.values())

    @staticmethod
    def phase_tables(group: SeedGroup) -> dict:
        return group.tables

    def shared_inputs(self, placement, held_out: dict | None = None) -> dict:
        """What every member reads, on every device: the resident corpus, the held-out batch (`val_loss`) and the
        batches of `held_out` ({name: TokenArrays}: `val_loss.<name>`)."""
        m, size = self.config.model, self.config.eval.batch_size
        batches = {name: corpus_lib.validation_batch(arrays, m.max_len, size) for name, arrays in
                   (held_out or {}).items()}
        return placement.replicate(dict(
            corpus=corpus_lib.to_device(self.corpus, m.max_len),
            validation=corpus_lib.validation_batch(self.validation, m.max_len, size),
            **({"held_out": batches} if batches else {})))

    def data_spec(self, members: pd.DataFrame) -> DataSpec:
        ranges = np.array([self.corpus.ranges[name] for name in members.data], np.int32).reshape(-1, 2)
        return DataSpec(batch=DocumentRange(lo=ranges[:, 0], hi=ranges[:, 1]))

    def protocol_phase(self) -> str | None:
        """The phase whose members fine-tune with a protocol (None: no protocol in the sweep)."""
        return self.config.protocols.get("phase", "finetune") if protocols.in_sweep(self.config) else None

    def protocol_layout(self, group: SeedGroup):
        """What the protocol phase's trees hold (protocols.Layout); None without protocols."""
        phase = self.protocol_phase()
        if phase is None:
            return None
        return protocols.group_layout(self.config, self.config.model.n_layers, group.tables[phase])

    def train(self, runner: PhaseRunner, group: SeedGroup, phase: str, parents: TrainState | None, parent_rows,
              lrs, measure, stop=None) -> TrainState:
        """One phase of the group's members: fresh (pretraining, `parents` None) or fanned out from rows
        `parent_rows` of `parents` at learning rates `lrs`; measured at each eval step by `measure(state, step,
        final, records)` -> {metric: values of this process's members (`runner.local_rows`)}, shown as an evaluation
        (its sets of members counted by `runner.progress.expect` / `done`); `stop(metrics)` -> the members that meet
        the phase's criterion in a record's metrics (they stop there: PhaseLoop). The protocol phase trains each
        member's protocol tree (protocols.py); the state it returns, and what `measure` sees, hold the merged
        parameters."""
        members = group.tables[phase]
        n, data, model = len(members), self.data_spec(members), None
        if parents is None:
            seeds = members.seed.to_numpy()
            state = init_members(self.model_cfg, self.config.pretrain, self.config.seed, seeds,
                                 np.full(len(seeds), self.config.pretrain.lr))
        else:
            keys = member_keys(self.config.seed, members.seed.to_numpy(), self.KEY_PHASES[phase])
            args = (parents, np.asarray(parent_rows), self.config[phase], np.asarray(lrs, np.float32), keys)
            if phase == self.protocol_phase():
                layout = self.protocol_layout(group)
                state, spec = protocols.fan_out(*args, layout, members, runner.placement)
                data, model = data.replace(protocol=spec), protocols.Reparameterised(Transformer(self.model_cfg),
                                                                                     layout)
            else:
                state = fan_out(*args)
        merged = (lambda s: s) if model is None else (lambda s: protocols.merge(model.layout, s))

        def measured(state, step, *args):
            with runner.progress.evaluation(f"group {runner.index} {phase} step {step}", timed=False):
                return runner.member_values(n, measure(merged(state), step, *args))
        loop = PhaseLoop(self.model_cfg, NextTokenObjective(self.model_cfg.max_len), self.config[phase], self.shared,
                         self.config.eval.member_batch, sharding=runner.placement.members, model=model,
                         measure=measured, stop=stop)
        return merged(runner.run_phase(phase, members, state, data, loop))

    @staticmethod
    def size_line(state: TrainState) -> str:
        return f"model: {param_count(jax.tree.map(lambda x: x[0], state.params)):,} parameters"
