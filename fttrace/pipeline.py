"""The run tree of a study, group by group: pretrain -> fan-out -> fine-tune -> evaluations.

Each phase of a group is one jitted program over all of the group's members; each finished phase is written to
the results store at once, so a long sweep shows its results as it goes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from fttrace import config as config_lib
from fttrace.errors import UserError
from fttrace.evals import EVALS
from fttrace.progress import Progress
from fttrace.results import MANIFEST_FILE, ResultsStore, long_frame, manifest, write_json
from fttrace.sweep import Group, build_groups
from fttrace.tasks.registry import build_task
from fttrace.train import PHASE_IDS, DataSpec, PhaseLoop, TrainState, eval_sets_for, fan_out, init_members, \
    member_key


def status_of(state: TrainState) -> np.ndarray:
    return np.where(np.asarray(state.diverged), "diverged", "ok").astype(object)


def with_divergence(records, state: TrainState):
    """Adds each member's divergence step (-1 if healthy) to the last record of a phase."""
    step, metrics = records[-1]
    return records[:-1] + [(step, dict(metrics, diverged_step=np.asarray(state.diverged_step, np.float64)))]


def phase_keys(base_seed: int, seeds, phase: str):
    return jax.vmap(lambda s: member_key(base_seed, s, PHASE_IDS[phase]))(jnp.asarray(seeds, jnp.int32))


class GroupRun:
    """One group's members through the run tree; keeps the phase-final states for later phases."""

    def __init__(self, config, group: Group, task, eval_sets, store: ResultsStore, progress: Progress):
        self.config, self.group, self.task, self.eval_sets = config, group, task, eval_sets
        self.store, self.progress = store, progress
        self.states: dict[str, TrainState] = {}

    def train_phase(self, phase: str, members: pd.DataFrame, state: TrainState, data: DataSpec) -> TrainState:
        phase_cfg = self.config[phase] if phase in self.config else self.config.finetune
        loop = PhaseLoop(self.group.model, self.task, phase_cfg, self.eval_sets)
        label = f"group {self.group.index} {phase}"
        state, records = loop.run(state, data, self.progress.phase(label, len(members)))
        frame = long_frame(members, phase, with_divergence(records, state), status_of(state))
        self.store.write_part(f"g{self.group.index}-{phase}", frame)
        self.states[phase] = state
        return state

    def pretrain(self) -> TrainState:
        pt = self.group.pretrain
        state = init_members(self.group.model, self.config.pretrain, self.config.seed, pt.seed.to_numpy(),
                             pt.pretrain_lr.to_numpy())
        data = DataSpec(p_ft_operand=jnp.asarray(pt.prior.to_numpy(), jnp.float32),
                        spurious=jnp.zeros(len(pt), jnp.float32))
        return self.train_phase("pretrain", pt, state, data)

    def finetune(self) -> TrainState:
        ft = self.group.finetune
        state = fan_out(self.states["pretrain"], self.group.parent_index, self.config.finetune,
                        ft.finetune_lr.to_numpy(), phase_keys(self.config.seed, ft.seed.to_numpy(), "finetune"))
        data = DataSpec(p_ft_operand=jnp.ones(len(ft), jnp.float32),
                        spurious=jnp.asarray(ft.spurious.to_numpy(), jnp.float32))
        return self.train_phase("finetune", ft, state, data)

    def run(self) -> None:
        self.pretrain()
        self.finetune()
        for name in self.config.get("evals", ()):
            EVALS[name](self)


def check_workdir(store: ResultsStore, config_json: str, overwrite: bool) -> None:
    """Refuse to mix two different configs in one workdir (unless --overwrite)."""
    path = store.workdir / MANIFEST_FILE
    if not path.exists():
        return
    try:
        previous = json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is unreadable or not an fttrace manifest; use another --workdir") from None
    if json.dumps(previous, sort_keys=True, default=str) != config_json and not overwrite:
        raise UserError(f"workdir {store.workdir} holds a run of a different config; choose another --workdir "
                        "or pass --overwrite")


def run_study(config, workdir, quiet: bool = False, overwrite: bool = False) -> Path:
    """Run every group of the config's sweep; returns the path of results.parquet."""
    start = time.time()
    store = ResultsStore(Path(workdir))
    config_json = config_lib.to_json(config)
    store.prepare()
    check_workdir(store, config_json, overwrite)
    if overwrite:
        for part in store.parts.glob("*.parquet"):
            part.unlink()
    devices = [str(d) for d in jax.devices()]
    write_json(store.workdir / MANIFEST_FILE, manifest(json.loads(config_json), devices, status="running"))
    progress = Progress(quiet)
    task = build_task(config)
    eval_sets = eval_sets_for(task, config.eval.examples, config.eval.seed, config.task.spurious_test)
    groups = build_groups(config)
    n_members = sum(len(g.pretrain) + len(g.finetune) for g in groups)
    progress.say(f"fttrace: {len(groups)} group(s), {n_members} members, devices: {', '.join(devices)}")
    for group in groups:
        GroupRun(config, group, task, eval_sets, store, progress).run()
    write_json(store.workdir / MANIFEST_FILE, manifest(json.loads(config_json), devices, status="complete",
                                                       wall_s=round(time.time() - start, 3)))
    return store.results_path
