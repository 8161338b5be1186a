"""The engine: one runner for every study kind.

A study kind (the answer-position tasks in `answer/study.py`, the stories in `stories/study.py`, the canaries in
`canary/study.py`) declares its groups of members and, for each group, its phases: which members, from which
parents, trained on what (`train.PhaseLoop` with the kind's objective and measurements). Everything else is here,
written once:

  numerics         `model.dtype` "auto" becomes the backend's dtype once, before anything else reads the config
                   (`resolved_config`): the manifest, the run's identity and every phase see the dtype it runs in
  the workdir      its identity (config, shard, fttrace version, device layout): a rerun of the same run resumes,
                   anything else is refused by name (`check_workdir`); one writer at a time (`lock.py`); the
                   manifest (`running` / `complete`, and every invocation that worked on the run)
  placement        the member axis padded and sharded over every device of every process (`placement.py`)
  shards           `--shard i/N` runs a slice of the kind's groups (`fttrace merge` joins the shards' stores)
  a phase          `PhaseRunner.run_phase`: trained in jitted chunks, checkpointed (orbax, `checkpoint.py`) so a
                   killed run resumes mid-phase bit for bit, live curves as it goes, then its results part with
                   each member's status, divergence step and stop step; a finished phase is restored, not retrained
  progress         member-steps/s and ETA of the members still training, evaluations' sets done (`progress.py`),
                   and the record `fttrace status` reads

A study kind is a class built from the config, with
  groups()                 its groups (each with an `index`); `shard(groups, i, n)` the slice of shard i of n
  member_count(group)      members of a group (the progress line)
  phase_tables(group)      {phase: members table} of the phases that keep parameters, in run order (fttrace.open)
  protocol_layout(group)   what the group's fine-tuning-protocol trees hold (protocols.Layout), None without any
  FRESH                    workdir folders that --overwrite removes besides the results and checkpoints
  prepare(workdir, placement)  builds what its phases read (a task, a corpus); returns a description for the manifest
  run_group(runner, group) runs the group's phases through `runner`
  final_lines(results_path)  the lines `fttrace run` prints at the end
Its module names it `KIND`; config.py knows each kind's module and its config check.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import sys
import time

import jax
import numpy as np
import pandas as pd
from etils import epath

from fttrace.version import __version__
from fttrace import config as config_lib
from fttrace.engine.checkpoint import CHECKPOINTS_DIR, FINGERPRINTS, START_OVER, Checkpoints, DamagedCheckpoint, \
    PhaseCheckpoints, check_location, run_fingerprint
from fttrace.errors import UserError, out_of_memory
from fttrace.engine.lock import WorkdirLock
from fttrace.engine.placement import Placement, sync
from fttrace.engine.progress import Progress
from fttrace.engine.results import COMPLETE, MANIFEST_FILE, PROGRESS_FILE, ResultsStore, finished, long_frame, manifest, \
    status_of, write_json
from fttrace.engine.train import PhaseLoop, TrainState, member_batch_size
from fttrace.model.transformer import resolve_dtype


LIVE_EVERY_S = 30.0  # how often a training phase's live curves are rewritten (fttrace.open(...).live())


def with_final_steps(records, diverged_step, stop_step):
    """Adds each member's divergence step (-1 if healthy) and the step at which it met the phase's criterion (-1 if
    it did not, or the phase has none) to the last record of a phase."""
    step, metrics = records[-1]
    return records[:-1] + [(step, dict(metrics, diverged_step=np.asarray(diverged_step, np.float64),
                                       stop_step=np.asarray(stop_step, np.float64)))]


def resolved_config(config, backend: str | None = None):
    """`config` with `model.dtype` "auto" replaced by the dtype it means on `backend` (default: JAX's; bfloat16 on
    a GPU or TPU, float32 on a CPU); a config without "auto" is returned as it is. A CPU run of a config that says
    "auto" is thus the run, identity and results included, of one that says float32; a run started on an
    accelerator is resumed in bfloat16 only (a CPU resume of it is refused by name, model.dtype, unless it asks for
    bfloat16)."""
    if "model" not in config or config.model.get("dtype") != "auto":
        return config
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.model.dtype = resolve_dtype("auto", backend)
    return config


def run_identity(config, shard: tuple[int, int] | None = None) -> dict:
    """What makes two runs the same run: the config (but the keys that cannot change a result, such as the
    checkpoint cadence) and the shard of the grid."""
    return dict(config=config_lib.results_relevant(json.loads(config_lib.to_json(config))),
                shard=list(shard) if shard else None)


class PhaseRunner:
    """Runs the phases of one group of a study: placement, checkpoints, resume, live curves and the results parts.

      part_name(phase)  "g<group>-<phase>": the results part and checkpoint directory of a phase of this group
      done(part)        whether results part `part` is written (by every process): a measurement skips the work
                        behind a part that is done, so a resumed run redoes nothing
      run_phase(phase, members, state, data, loop)
                        trains, checkpoints and writes part `part_name(phase)`; when that part exists already (a
                        resumed run) it restores the phase's final state from its checkpoint instead of training
      write_phase(phase, members, records, state=None)
                        writes records [(step, {metric: per-member values})] as part `part_name(phase)`
    Member-stacked arrays (states, measurements) carry a member axis padded to a multiple of the device count with
    copies of member 0, after the real members; `members` tables list the real members only. run_phase pads its
    inputs itself; write_phase keeps the rows of this process's real members and drops the rest.
    """

    def __init__(self, config, index: int, store: ResultsStore, progress: Progress, placement: Placement,
                 checkpoints: Checkpoints):
        self.config, self.index, self.store, self.progress = config, index, store, progress
        self.placement, self.checkpoints = placement, checkpoints

    def part_name(self, phase: str) -> str:
        return f"g{self.index}-{phase}"

    def done(self, part: str) -> bool:
        return self.store.has_part(part)

    def run_phase(self, phase: str, members: pd.DataFrame, state: TrainState, data, loop: PhaseLoop) -> TrainState:
        """Train `state` for one phase with `loop` (its objective, its measurements), write its results part and
        return its final state; a phase finished by an earlier run is restored from its final checkpoint."""
        part = self.part_name(phase)
        state, data = self.placement.place(state), self.placement.place(data)
        with self.checkpoints.phase(part) as checkpoints:
            if self.done(part):
                state = self._restore_final(part, checkpoints, state, loop.phase.steps)
                self.store.drop_live(part)  # left by a run killed between writing the part and dropping it
            else:
                state = self._train(phase, members, state, data, loop, checkpoints)
        return state

    def _train(self, phase, members, state, data, loop: PhaseLoop, checkpoints: PhaseCheckpoints) -> TrainState:
        label = f"group {self.index} {phase}"
        records, first_step = None, 0
        if checkpoints.steps():
            state, records, first_step = self._resume(label, checkpoints, state)
        live = LiveCurves(self, phase, members)

        def on_records(state, records):
            live.update(records)
            checkpoints.after_chunk(state, records, loop.phase.steps)

        try:
            with self.progress.phase(label, len(members), first_step) as on_chunk:
                state, records = loop.run(state, data, on_chunk, records=records, on_records=on_records)
        except Exception as e:  # noqa: BLE001 -- XLA reports running out of memory as a runtime error
            if not out_of_memory(e):
                raise
            together = member_batch_size(len(members), loop.member_batch)
            key = f"{phase}.member_batch" if phase in self.config else "the phase's member_batch"
            raise UserError(f"{label}: out of device memory training {len(members)} members, {together} at a time "
                            f"({str(e).splitlines()[0][:160]}); lower {key} (training) or "
                            "eval.member_batch (evaluation), or use more devices; the checkpoints so far are kept "
                            "and a rerun resumes from them") from None
        self.write_phase(phase, members, records, state)
        self.store.drop_live(self.part_name(phase))
        return state

    def _resume(self, label: str, checkpoints: PhaseCheckpoints, like: TrainState):
        """(state, records, step) of the newest good checkpoint of a phase. A damaged newer one is set aside (kept
        as <step>.damaged), saying so in one line, and the phase resumes from the one before it; with none before
        it, the damage is the error."""
        while True:
            step = checkpoints.steps()[-1]
            try:
                state, records = checkpoints.restore(like, step)
            except DamagedCheckpoint as e:
                if len(checkpoints.steps()) < 2:
                    raise
                aside = checkpoints.set_aside(step)
                if self.store.writes_results:
                    self.progress.warn(f"{label}: checkpoint {e.path} is damaged ({e.reason}); it is kept as "
                                       f"{aside} and the phase resumes from the checkpoint before it")
                continue
            self.progress.say(f"{label}: resuming from the checkpoint at step {step}")
            return state, records, step

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

    def local_rows(self, members: pd.DataFrame) -> np.ndarray:
        """The rows of `members` this process holds (the rows whose records it writes)."""
        return self.placement.local_rows(len(members))

    def local(self, tree, members: pd.DataFrame):
        """Member-stacked arrays of `members` (padded, sharded) at this process's rows, as numpy."""
        return self.placement.fetch(tree, self.local_rows(members))

    def member_values(self, n: int, local_values: dict) -> dict:
        """Per-member values measured on the host for this process's real members ({metric: [local rows]}) as
        member-stacked arrays like the ones the jitted evaluation gives (padded, sharded; NaN where not held)."""
        rows = self.placement.local_rows(n)
        out = {}
        for name, values in local_values.items():
            full = np.full(self.placement.padded(n), np.nan, np.float32)
            full[rows] = values
            out[name] = self.placement.place(full)
        return out


class LiveCurves:
    """A training phase's curves so far, written to the workdir's live folder after its first chunk and then at most
    every LIVE_EVERY_S seconds (so a reader of a running sweep sees them); the phase's part replaces them."""

    def __init__(self, run: PhaseRunner, phase: str, members: pd.DataFrame):
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
    if overwrite:  # starts over, whatever the workdir holds (even a damaged manifest)
        return ()
    previous = previous_manifest(store)
    if previous is None:
        return ()
    config, shard, versions = previous["config"], previous.get("shard"), previous["versions"]
    if "fingerprint" in previous and FINGERPRINTS not in previous:
        raise UserError(f"workdir {store.workdir} holds a {config.get('study', 'language-model')} run of an earlier "
                        "fttrace, whose phase-end checkpoints this version does not resume; its results stay readable; "
                        "choose another --workdir or pass --overwrite")
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


def previous_manifest(store: ResultsStore) -> dict | None:
    """The manifest a workdir holds (None if none); one that cannot be read is refused by name."""
    path = store.workdir / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        previous = json.loads(path.read_text())
        if not isinstance(previous["config"], dict) or not isinstance(previous["versions"], dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is unreadable or not an fttrace manifest; use another --workdir, or pass "
                        "--overwrite to start over") from None
    return previous


def invocation() -> dict:
    """This `fttrace run`: its command line, host, process id and start time (the manifest's `invocations`)."""
    return dict(argv=list(sys.argv), host=platform.node(), pid=os.getpid(),
                started=datetime.datetime.now(datetime.timezone.utc).isoformat())


def manifest_history(previous: dict | None, this: dict, given: dict, shard, layout: dict) -> dict | None:
    """The manifest this invocation (`this`, with config `given`) writes, or None for a finished run's, which stays
    as it is: a fresh one (the whole config, as this run was given it), or for a resume the one it resumes with this
    invocation added, its original command line and start kept (and the keys that cannot change a result, which may
    differ in a resume, named in the invocation)."""
    if previous is None:
        return manifest(given, shard=shard, **layout, invocations=[this])
    if finished(previous):
        return None
    if changed := config_lib.differences(previous["config"], given):
        this.update(config_changes=changed)
    first = dict(argv=previous.get("argv"), host=previous.get("host"), started=previous.get("written"))
    return dict(previous, invocations=[*previous.get("invocations", [first]), this])


def describe_shard(shard) -> str:
    return f"shard {shard[0]}/{shard[1]} of the grid" if shard else "the whole grid"


def study_kind(config):
    """The study kind class of `config` (`config.study`; the answer-position tasks without one)."""
    return config_lib.study_module(config).KIND


def run_study(config, workdir, quiet: bool = False, overwrite: bool = False,
              shard: tuple[int, int] | None = None) -> epath.Path:
    """Run every group of the config's study (or of one shard of it); returns the path of results.parquet.

    A workdir that holds an unfinished run of the same config and shard is resumed. With several processes
    (placement.join_processes), each trains and writes its own members; process 0 holds the workdir's lock
    (`lock.py`: a second writer is refused, naming it) from before it reads the workdir until the run ends, however
    it ends, and writes the manifest. The manifest keeps its history: the first invocation writes it, each resume
    adds itself to `invocations`, and a finished run's manifest is never rewritten (a rerun changes nothing in it).
    """
    start = time.time()
    config = resolved_config(config)
    check_location(workdir)
    kind = study_kind(config)(config)
    groups = kind.groups()
    if shard:
        groups = kind.shard(groups, *shard)
        if not groups:
            raise UserError(f"--shard {shard[0]}/{shard[1]}: this shard of the grid holds no members (the grid has "
                            f"fewer lineages than {shard[1]} shards); split it into fewer shards")
    placement = Placement()
    store = ResultsStore(workdir, jax.process_index(), jax.process_count())
    identity = run_identity(config, shard)
    layout = dict(devices=[str(d) for d in jax.devices()], processes=jax.process_count())
    store.prepare()
    with WorkdirLock(store.workdir, "run") if store.writes_results else contextlib.nullcontext():
        earlier = check_workdir(store, identity, layout, overwrite)
        previous = None if overwrite else previous_manifest(store)
        checkpoints = Checkpoints(store.workdir / CHECKPOINTS_DIR, run_fingerprint(identity), placement,
                                  config.checkpoint.every_chunks, config.checkpoint.keep, earlier,
                                  config.checkpoint.get("keep_log_spaced", 0))
        this = invocation()
        history = manifest_history(previous, this, json.loads(config_lib.to_json(config)), identity["shard"],
                                   layout) if store.writes_results else None
        described = None

        def write_manifest(**fields) -> None:
            if history is not None:
                history.update(task=described, **{FINGERPRINTS: sorted(checkpoints.accepted)}, **fields)
                write_json(store.workdir / MANIFEST_FILE, history)

        if store.writes_results:
            store.remove_temporaries()
            if overwrite:
                store.clear()
                checkpoints.remove_all()
                for folder in kind.FRESH:
                    if (store.workdir / folder).exists():
                        (store.workdir / folder).rmtree()
        progress = Progress(quiet or not store.writes_results,
                            record=store.workdir / PROGRESS_FILE if store.writes_results else None)
        if store.writes_results:
            with progress.quieted():
                described = kind.prepare(store.workdir, placement)  # process 0 first: it may write prepared data
            store.merge_parts()  # results.parquet holds every part that a killed run had finished
            write_manifest(status="running")
        sync("fttrace-start")  # the other processes write nothing before process 0 has cleared the workdir
        if not store.writes_results:
            with progress.quieted():
                described = kind.prepare(store.workdir, placement)
        n_members = sum(kind.member_count(g) for g in groups)
        progress.say(f"fttrace: {describe_shard(identity['shard'])}: {len(groups)} group(s), {n_members} members, "
                     f"{placement.device_count} device(s) in {jax.process_count()} process(es): "
                     f"{', '.join(layout['devices'])}")
        for group in groups:
            kind.run_group(PhaseRunner(config, group.index, store, progress, placement, checkpoints), group)
        sync("fttrace-end")
        if store.writes_results:
            store.merge_parts()  # also covers a run killed between writing its last part and merging it
            wall = round(time.time() - start, 3)
            this.update(wall_s=wall)
            write_manifest(status=COMPLETE, wall_s=wall, time=progress.times,
                           ended=datetime.datetime.now(datetime.timezone.utc).isoformat())
    return store.results_path
