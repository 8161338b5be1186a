"""The answer-position study kind (PCFG, Tracr, fine-tuning protocols): its run tree, group by group.

pretrain -> fan-out -> fine-tune -> evaluations (fttrace/evals): each phase of a group is one jitted program over all
of the group's members, run by the engine (`runner.py`: placement over every device, checkpoints and mid-phase
resume, the results store). Batches come from the task's on-device sampler (`train.AnswerObjective`); every member
is evaluated on the held-out sets between chunks.
"""
from __future__ import annotations

import jax
import ml_collections
import numpy as np
import pandas as pd

from fttrace.engine import protocols
from fttrace.answer import planted, reft
from fttrace.answer.evals import EVALS, in_run_order
from fttrace.model.transformer import Transformer
from fttrace.engine.runner import PhaseRunner
from fttrace.answer.sweep import Group, build_groups, optimizer_values, shard_groups
from fttrace.answer.tasks import queries
from fttrace.answer.tasks.registry import build_task
from fttrace.engine.train import AnswerObjective, PhaseLoop, TrainState, data_spec, eval_sets_for, fan_out, \
    init_members, member_keys, new_state


# What trains after fine-tuning, named in `evals` beside the measurements (the config's word for what follows
# fine-tuning): reverse fine-tuning and its control (reft.py), then the members of known answer (planted.py). Phases of
# the study kind, each written as it finishes, run in this order before every measurement so that the measurements
# cover their members too. `planted` has no config section of its own (it reads finetune's and reft's).
TRAINED = {"reft": reft.run_reft, "planted": planted.run_planted}
SECTIONLESS = ("planted",)


class PhaseStates(dict):
    """Phase-final states by phase. A built-in phase that a resumed run skipped is always `in` the states: asking
    for it re-enters the phase, which restores its final checkpoint instead of training."""

    def __init__(self, phases: dict):
        super().__init__()
        self._phases = phases

    def __missing__(self, phase: str) -> TrainState:
        if phase not in self._phases:
            raise KeyError(phase)
        return self._phases[phase]()

    def __contains__(self, phase) -> bool:
        return super().__contains__(phase) or phase in self._phases


class GroupRun(PhaseRunner):
    """One group's members through the run tree; keeps the phase-final states for later phases.

    Evaluations (fttrace/evals) receive the GroupRun and use what the engine's PhaseRunner gives (part_name, done,
    write_phase, store, progress, placement) and:
      config, group, task, eval_sets
      tables            the member table of every phase of the group that keeps parameters (TaskStudy.phase_tables):
                        what evaluations read to know the members of a level
      states[phase]     phase-final TrainStates: "pretrain", "finetune" and the phases evaluations train
      train_phase(phase, members, state, data, phase_cfg=None)
                        trains (the answer-position objective, evaluated on `eval_sets`), checkpoints and writes part
                        `part_name(phase)`; a phase finished by an earlier run is restored instead
    """

    def __init__(self, runner: PhaseRunner, group: Group, task, eval_sets, tables: dict[str, pd.DataFrame]):
        super().__init__(runner.config, group.index, runner.store, runner.progress, runner.placement,
                         runner.checkpoints)
        self.group, self.task, self.eval_sets, self.tables = group, task, eval_sets, tables
        self.states = PhaseStates({"pretrain": self.pretrain, "finetune": self.finetune})

    def loop(self, phase_cfg, model=None) -> PhaseLoop:
        """The phase loop of this group's members: the task's objective, evaluated on the held-out sets."""
        return PhaseLoop(self.group.model, AnswerObjective(self.task), phase_cfg, self.eval_sets,
                         self.config.eval.member_batch, sharding=self.placement.members, model=model)

    def train_phase(self, phase: str, members: pd.DataFrame, state: TrainState, data,
                    phase_cfg=None, model=None) -> TrainState:
        """Train `state` for one phase, write its results part and keep its final state in `states`.

        phase_cfg: the phase's optimiser/steps section (default: the config section named like the phase).
        model: what applies the state's parameters (PhaseLoop's `model`; default the group's Transformer).
        """
        phase_cfg = self.group.phase(self.config, phase) if phase_cfg is None else phase_cfg
        self.states[phase] = state = self.run_phase(phase, members, state, data, self.loop(phase_cfg, model))
        return state

    def pretrain(self) -> TrainState:
        if self.task.pretrained_model is not None:
            return self.load_pretrained()
        pt = self.group.pretrain
        seeds, lrs, hyper = self.placement.place((pt.seed.to_numpy(np.int32), pt.pretrain_lr.to_numpy(np.float32),
                                                  optimizer_values(pt, "pretrain")))
        state = init_members(self.group.model, self.group.phase(self.config, "pretrain"), self.config.seed, seeds, lrs,
                             hyper)
        data = data_spec(queries.pretraining(self.task, pt.prior.to_numpy()), np.zeros(len(pt)))
        return self.train_phase("pretrain", pt, state, data)

    def load_pretrained(self) -> TrainState:
        """The pretrained members of a task that brings its model (a compiled program): every member is that model,
        with a fresh optimiser at its pretraining LR. Nothing is trained; the pretrain part holds the step-0
        evaluation (and is written once: a resumed run loads the model again)."""
        pt = self.group.pretrain
        params = self.task.pretrained_model.params
        stacked = jax.tree.map(lambda x: np.broadcast_to(x, (len(pt),) + x.shape).copy(), params)
        state = jax.jit(jax.vmap(lambda p, lr, key: new_state(p, self.config.pretrain, lr, key)))(
            stacked, pt.pretrain_lr.to_numpy(np.float32), member_keys(self.config.seed, pt.seed.to_numpy(), "pretrain"))
        state = self.placement.place(state)
        part = self.part_name("pretrain")
        if not self.done(part):
            evaluate_only = ml_collections.ConfigDict(dict(self.config.pretrain.to_dict(), steps=0))
            loop = self.loop(evaluate_only)
            data = data_spec(queries.reft(self.task, len(pt)), np.zeros(len(pt)))
            _, records = loop.run(state, self.placement.place(data))
            self.write_phase("pretrain", pt, records, state)
        self.states["pretrain"] = state
        return state

    def finetune(self) -> TrainState:
        ft = self.group.finetune
        parents, lrs, keys, hyper = self.placement.place((
            self.group.parent_index.astype(np.int32), ft.finetune_lr.to_numpy(np.float32),
            member_keys(self.config.seed, ft.seed.to_numpy(), "finetune"), optimizer_values(ft, "finetune")))
        # The criterion is accuracy on the member's own fine-tuning distribution: its mixture of inputs with and
        # without the shortcut, on the held-out sets.
        spurious = ft.spurious.to_numpy(np.float32)
        data = data_spec(queries.fine_tuning(self.task, len(ft)), spurious,
                         criterion={"ft": 1 - spurious, "ft_shortcut": spurious})
        layout = protocol_layout(self.config, self.group)
        if layout is None:
            state = fan_out(self.states["pretrain"], parents, self.config.finetune, lrs, keys, hyper=hyper)
            return self.train_phase("finetune", ft, state, data)
        # Fine-tuning protocols: members train trees (protocols.py) and later phases see the merged parameters.
        state, spec = protocols.fan_out(self.states["pretrain"], parents, self.config.finetune, lrs, keys, layout, ft,
                                        self.placement, hyper)
        state = self.train_phase("finetune", ft, state, data.replace(protocol=spec),
                                 model=protocols.Reparameterised(Transformer(self.group.model), layout))
        self.states["finetune"] = merged = protocols.merge(layout, state)
        return merged

    def run(self) -> None:
        for phase, train in (("pretrain", self.pretrain), ("finetune", self.finetune)):
            if not self.done(self.part_name(phase)):
                train()
        evals = self.config.get("evals", ())
        for name, train in TRAINED.items():
            if name in evals:
                with self.progress.evaluation(f"group {self.group.index} {name}"):
                    train(self)
        for name in in_run_order(evals):
            with self.progress.evaluation(f"group {self.group.index} {name}"):
                self.evaluate(EVALS[name])

    def evaluate(self, measurement) -> None:
        """Run one measurement and write what it returns as its results part (once: a resumed run skips it)."""
        part = self.part_name(measurement.phase)
        if not self.done(part):
            self.store.write_part(part, measurement.measure(self))


def protocol_layout(config, group: Group):
    """What the group's fine-tuning trees hold (protocols.Layout); None without protocols in the sweep."""
    if not protocols.in_sweep(config):
        return None
    return protocols.group_layout(config, group.model.n_layers, group.finetune)


class TaskStudy:
    """The answer-position study kind (runner.py): groups of the sweep grid, each through GroupRun."""

    FRESH = ()

    def __init__(self, config):
        self.config = config

    def groups(self) -> list[Group]:
        return build_groups(self.config)

    @staticmethod
    def shard(groups: list[Group], index: int, count: int) -> list[Group]:
        return shard_groups(groups, index, count)

    @staticmethod
    def member_count(group: Group) -> int:
        return len(group.pretrain) + len(group.finetune)

    def phase_tables(self, group: Group) -> dict[str, pd.DataFrame]:
        """The member tables of one group's phases that keep parameters, in run-tree order."""
        tables = {"pretrain": group.pretrain, "finetune": group.finetune}
        if "reft" in self.config.get("evals", ()):
            tables["reft"] = rf = reft.reft_members(group, self.config.reft)
            if self.config.reft.control:
                tables["control_pretrain"], tables["control_reft"] = reft.control_members(
                    group, rf, self.config.reft.control_lr_factors)
                if "planted" in self.config.evals:
                    tables.update(planted.phase_tables(group, tables["control_pretrain"], self.config.reft))
        return tables

    def protocol_layout(self, group: Group):
        return protocol_layout(self.config, group)

    def prepare(self, workdir, placement) -> dict:
        """The task, and the held-out sets every member is evaluated on (replicated on every device)."""
        config = self.config
        self.task = task = build_task(config)
        # Jitted: one compiled program instead of a couple of hundred eagerly compiled sampler ops (same values).
        self.eval_sets = placement.replicate(jax.jit(lambda: eval_sets_for(task, config.eval.examples,
                                                                           config.eval.seed))())
        return task.describe()

    def run_group(self, runner: PhaseRunner, group: Group) -> None:
        GroupRun(runner, group, self.task, self.eval_sets, self.phase_tables(group)).run()

    @staticmethod
    def final_lines(results_path) -> str:
        from fttrace.answer.final_table import final_lines
        return final_lines(results_path)


KIND = TaskStudy
