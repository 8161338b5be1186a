"""The run tree of a study, group by group: pretrain -> fan-out -> fine-tune -> evaluations.

Each phase of a group is one jitted program over all of the group's members, with the member axis sharded over
every device (placement.py). Each finished phase is written to the results store at once, so a long sweep shows
its results as it goes, and checkpointed (checkpoint.py), so a run started again into its workdir resumes:
phases whose results part exists are skipped, an interrupted phase goes on from its newest checkpoint, and the
results equal those of an uninterrupted run.
"""
from __future__ import annotations

import json
import time

import jax
import ml_collections
import numpy as np
import pandas as pd
from etils import epath

from fttrace.version import __version__
from fttrace import config as config_lib
from fttrace import protocols
from fttrace.checkpoint import CHECKPOINTS_DIR, FINGERPRINTS, START_OVER, Checkpoints, PhaseCheckpoints, run_fingerprint
from fttrace.errors import UserError
from fttrace.evals import EVALS, in_run_order
from fttrace.model import Transformer
from fttrace.placement import Placement, sync
from fttrace.progress import Progress
from fttrace.results import COMPLETE, MANIFEST_FILE, PROGRESS_FILE, ResultsStore, long_frame, manifest, status_of, \
    write_json
from fttrace.sweep import Group, build_groups, optimizer_values, shard_groups
from fttrace.tasks import queries
from fttrace.tasks.registry import build_task
from fttrace.train import PhaseLoop, TrainState, data_spec, eval_sets_for, fan_out, init_members, member_keys, \
    new_state


LIVE_EVERY_S = 30.0  # how often a training phase's live curves are rewritten (fttrace.open(...).live())


def with_final_steps(records, diverged_step, stop_step):
    """Adds each member's divergence step (-1 if healthy) and the step at which it met the phase's criterion (-1 if
    it did not, or the phase has none) to the last record of a phase."""
    step, metrics = records[-1]
    return records[:-1] + [(step, dict(metrics, diverged_step=np.asarray(diverged_step, np.float64),
                                       stop_step=np.asarray(stop_step, np.float64)))]


def run_identity(config, shard: tuple[int, int] | None = None) -> dict:
    """What makes two runs the same run: the config (but the keys that cannot change a result, such as the
    checkpoint cadence) and the shard of the grid."""
    return dict(config=config_lib.results_relevant(json.loads(config_lib.to_json(config))),
                shard=list(shard) if shard else None)


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


class GroupRun:
    """One group's members through the run tree; keeps the phase-final states for later phases.

    Evaluations (fttrace/evals) receive the GroupRun and use:
      config, group, task, eval_sets, store, progress, placement
      states[phase]     phase-final TrainStates: "pretrain", "finetune" and the phases evaluations train
      train_phase(phase, members, state, data, phase_cfg=None)
                        trains, checkpoints and writes part `part_name(phase)`; when that part exists already (a
                        resumed run) it restores the phase's final state from its checkpoint instead of training
      part_name(phase)  "g<group>-<phase>": the results part and checkpoint directory of a phase of this group
      done(part)        whether results part `part` is written (by every process): an evaluation skips the work
                        behind a part that is done, so a resumed run redoes nothing
      write_phase(phase, members, records, state=None)
                        writes records [(step, {metric: per-member values})] as part `part_name(phase)`
    Member-stacked arrays (states, eval outputs) carry a member axis padded to a multiple of the device count with
    copies of member 0, after the real members; `members` tables list the real members only. train_phase pads its
    inputs itself; write_phase keeps the rows of this process's real members and drops the rest.
    """

    def __init__(self, config, group: Group, task, eval_sets, store: ResultsStore, progress: Progress,
                 placement: Placement | None = None, checkpoints: Checkpoints | None = None):
        self.config, self.group, self.task, self.eval_sets = config, group, task, eval_sets
        self.store, self.progress = store, progress
        self.placement = placement or Placement()
        self.checkpoints = checkpoints or Checkpoints(
            store.workdir / CHECKPOINTS_DIR, run_fingerprint(run_identity(config)), self.placement,
            config.checkpoint.every_chunks, config.checkpoint.keep)
        self.states = PhaseStates({"pretrain": self.pretrain, "finetune": self.finetune})

    def part_name(self, phase: str) -> str:
        return f"g{self.group.index}-{phase}"

    def done(self, part: str) -> bool:
        return self.store.has_part(part)

    def train_phase(self, phase: str, members: pd.DataFrame, state: TrainState, data,
                    phase_cfg=None, model=None) -> TrainState:
        """Train `state` for one phase, write its results part and keep its final state in `states`.

        phase_cfg: the phase's optimiser/steps section (default: the config section named like the phase).
        model: what applies the state's parameters (PhaseLoop's `model`; default the group's Transformer).
        """
        phase_cfg = self.group.phase(self.config, phase) if phase_cfg is None else phase_cfg
        part = self.part_name(phase)
        state, data = self.placement.place(state), self.placement.place(data)
        with self.checkpoints.phase(part) as checkpoints:
            if self.done(part):
                state = self._restore_final(part, checkpoints, state, phase_cfg.steps)
                self.store.drop_live(part)  # left by a run killed between writing the part and dropping it
            else:
                state = self._train(phase, members, state, data, phase_cfg, checkpoints, model)
        self.states[phase] = state
        return state

    def _train(self, phase, members, state, data, phase_cfg, checkpoints: PhaseCheckpoints, model=None) -> TrainState:
        label = f"group {self.group.index} {phase}"
        records, first_step = None, 0
        if saved := checkpoints.steps():
            first_step = saved[-1]
            state, records = checkpoints.restore(state, first_step)
            self.progress.say(f"{label}: resuming from the checkpoint at step {first_step}")
        loop = PhaseLoop(self.group.model, self.task, phase_cfg, self.eval_sets, self.config.eval.member_batch,
                         sharding=self.placement.members, model=model)
        live = LiveCurves(self, phase, members)

        def on_records(state, records):
            live.update(records)
            checkpoints.after_chunk(state, records, phase_cfg.steps)

        state, records = loop.run(state, data, self.progress.phase(label, len(members), first_step), records=records,
                                  on_records=on_records)
        self.write_phase(phase, members, records, state)
        self.store.drop_live(self.part_name(phase))
        return state

    @staticmethod
    def _restore_final(part: str, checkpoints: PhaseCheckpoints, like: TrainState, final_step: int) -> TrainState:
        if final_step not in checkpoints.steps():
            raise UserError(f"results part {part} is written but its final checkpoint {checkpoints.path(final_step)} "
                            f"is missing; delete the part to train the phase again, {START_OVER}")
        return checkpoints.restore(like, final_step)[0]

    def local_records(self, members: pd.DataFrame, records):
        """(rows of this process's real members, their records as numpy)."""
        rows = self.placement.local_rows(len(members))
        return rows, [(step, self.placement.fetch(metrics, rows)) for step, metrics in records]

    def write_phase(self, phase: str, members: pd.DataFrame, records, state: TrainState | None = None) -> None:
        """Write one phase's records; with its final `state`, also each member's status, divergence and stop step."""
        rows, local = self.local_records(members, records)
        status = None
        if state is not None:
            diverged, diverged_step, stop_step = self.placement.fetch(
                (state.diverged, state.diverged_step, state.stop_step), rows)
            local, status = with_final_steps(local, diverged_step, stop_step), status_of(diverged)
        self.store.write_part(self.part_name(phase), long_frame(members.iloc[rows], phase, local, status))

    def pretrain(self) -> TrainState:
        if self.task.pretrained_model is not None:
            return self.load_pretrained()
        pt = self.group.pretrain
        seeds, lrs = self.placement.place((pt.seed.to_numpy(np.int32), pt.pretrain_lr.to_numpy(np.float32)))
        state = init_members(self.group.model, self.group.phase(self.config, "pretrain"), self.config.seed, seeds, lrs)
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
            loop = PhaseLoop(self.group.model, self.task, evaluate_only, self.eval_sets,
                             self.config.eval.member_batch, sharding=self.placement.members)
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
        if not protocols.in_sweep(self.config):
            state = fan_out(self.states["pretrain"], parents, self.config.finetune, lrs, keys, hyper=hyper)
            return self.train_phase("finetune", ft, state, data)
        # Fine-tuning protocols: members train trees (protocols.py) and later phases see the merged parameters.
        layout = protocols.group_layout(self.config, self.group.model.n_layers, ft)
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
        members = len(self.group.pretrain) + len(self.group.finetune)
        for name in in_run_order(self.config.get("evals", ())):
            with self.progress.step(f"group {self.group.index} {name}", members):
                EVALS[name](self)


class LiveCurves:
    """A training phase's curves so far, written to the workdir's live folder after its first chunk and then at most
    every LIVE_EVERY_S seconds (so a reader of a running sweep sees them); the phase's part replaces them."""

    def __init__(self, run: GroupRun, phase: str, members: pd.DataFrame):
        self.run, self.phase, self.members, self.written = run, phase, members, None

    def update(self, records) -> None:
        if self.written is not None and time.monotonic() - self.written < LIVE_EVERY_S:
            return
        rows, local = self.run.local_records(self.members, records)
        frame = long_frame(self.members.iloc[rows], self.phase, local)
        self.run.store.write_live(self.run.part_name(self.phase), frame)
        self.written = time.monotonic()


def check_workdir(store: ResultsStore, identity: dict, layout: dict, overwrite: bool) -> tuple[str, ...]:
    """Refuse to mix two runs in one workdir (unless --overwrite): another config, shard, fttrace version or
    device layout (checkpoints hold the member axis padded for the devices that wrote them).

    Returns the earlier fingerprints of the run the workdir holds, which its checkpoints may carry: those its
    manifest lists, and the hash of its whole config (what identified a run before RESULTS_NEUTRAL keys existed).
    """
    path = store.workdir / MANIFEST_FILE
    if not path.exists():
        return ()
    try:
        previous = json.loads(path.read_text())
        config, shard, versions = previous["config"], previous.get("shard"), previous["versions"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is unreadable or not an fttrace manifest; use another --workdir") from None
    if overwrite:
        return ()
    earlier = (*previous.get(FINGERPRINTS, ()), run_fingerprint(dict(config=config, shard=shard)))
    workdir, advice = store.workdir, "choose another --workdir or pass --overwrite"
    config = config_lib.results_relevant(config)
    if json.dumps(config, sort_keys=True, default=str) != json.dumps(identity["config"], sort_keys=True):
        raise UserError(f"workdir {workdir} holds a run of a different config "
                        f"({config_lib.named_differences(config, identity['config'])}); {advice}")
    if shard != identity["shard"]:
        raise UserError(f"workdir {workdir} holds {describe_shard(shard)}, not {describe_shard(identity['shard'])}; "
                        f"{advice}")
    if versions.get("fttrace") != __version__:
        raise UserError(f"workdir {workdir} holds a run of fttrace {versions.get('fttrace')} and this is fttrace "
                        f"{__version__}; resume it with that version, or {advice}")
    before = (len(previous.get("devices", ())), previous.get("processes", 1))
    now = (len(layout["devices"]), layout["processes"])
    if before != now:
        raise UserError(f"workdir {workdir} holds a run on {before[0]} device(s) in {before[1]} process(es) and this "
                        f"one has {now[0]} in {now[1]}; resume it on the same layout, or {advice}")
    return tuple(sorted(set(earlier)))


def describe_shard(shard) -> str:
    return f"shard {shard[0]}/{shard[1]} of the grid" if shard else "the whole grid"


def run_study(config, workdir, quiet: bool = False, overwrite: bool = False,
              shard: tuple[int, int] | None = None) -> epath.Path:
    """Run every group of the config's sweep (or of one shard of it); returns the path of results.parquet.

    A workdir that holds an unfinished run of the same config and shard is resumed. With several processes
    (placement.join_processes), each trains and writes its own members; process 0 writes the manifest.
    """
    start = time.time()
    placement = Placement()
    store = ResultsStore(workdir, jax.process_index(), jax.process_count())
    identity = run_identity(config, shard)
    layout = dict(devices=[str(d) for d in jax.devices()], processes=jax.process_count())
    store.prepare()
    earlier = check_workdir(store, identity, layout, overwrite)
    checkpoints = Checkpoints(store.workdir / CHECKPOINTS_DIR, run_fingerprint(identity), placement,
                              config.checkpoint.every_chunks, config.checkpoint.keep, earlier)

    task = build_task(config)

    def write_manifest(**extra) -> None:  # the whole config, as this run was given it
        write_json(store.workdir / MANIFEST_FILE, manifest(json.loads(config_lib.to_json(config)),
                                                           shard=identity["shard"], **layout, task=task.describe(),
                                                           **{FINGERPRINTS: sorted(checkpoints.accepted)}, **extra))

    if store.writes_results:
        store.remove_temporaries()
        if overwrite:
            store.clear()
            checkpoints.remove_all()
        store.merge_parts()  # results.parquet holds every part that a killed run had finished
        write_manifest(status="running")
    sync("fttrace-start")  # the other processes write nothing before process 0 has cleared the workdir
    progress = Progress(quiet or not store.writes_results,
                        record=store.workdir / PROGRESS_FILE if store.writes_results else None)
    # Jitted: one compiled program instead of a couple of hundred eagerly compiled sampler ops (same values).
    eval_sets = placement.replicate(jax.jit(lambda: eval_sets_for(task, config.eval.examples, config.eval.seed))())
    groups = build_groups(config)
    if shard:
        groups = shard_groups(groups, *shard)
    n_members = sum(len(g.pretrain) + len(g.finetune) for g in groups)
    progress.say(f"fttrace: {describe_shard(identity['shard'])}: {len(groups)} group(s), {n_members} members, "
                 f"{placement.device_count} device(s) in {jax.process_count()} process(es): "
                 f"{', '.join(layout['devices'])}")
    for group in groups:
        GroupRun(config, group, task, eval_sets, store, progress, placement, checkpoints).run()
    sync("fttrace-end")
    if store.writes_results:
        store.merge_parts()  # also covers a run killed between writing its last part and merging it
        write_manifest(status=COMPLETE, wall_s=round(time.time() - start, 3))
    return store.results_path
