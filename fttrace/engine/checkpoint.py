"""Checkpoints of training phases: the member-stacked TrainState plus the phase's metric records so far.

    WORKDIR/checkpoints/g<group>-<phase>/<step>/{state,records,meta}     one orbax CheckpointManager per phase

A phase is checkpointed every `checkpoint.every_chunks` chunks (0: only at its end) and always at its end, which
is where the next phase starts from; the newest `checkpoint.keep` are kept. Orbax writes a checkpoint into a
temporary directory and renames it once complete, so a run killed at any moment leaves complete checkpoints only,
and a resumed phase goes on from the newest. Saving is synchronous: the next chunk donates the state's buffers.
In a multi-process run every process writes the shards of its own members (`ocdbt.process_<k>/`).

`meta` names the run (a fingerprint of its config and shard), the fttrace version and the device count. A
checkpoint of another run, version or device count is refused, as is one that cannot be read; the message names
its path. A restored state is bit-for-bit the saved one, so a resumed phase continues exactly where it stopped.

`read_params` reads the parameters alone into host memory, on any device count (`fttrace.open`).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from fttrace.version import __version__
from fttrace.errors import UserError, io_reason, os_reason, out_of_memory
from fttrace.engine.placement import Placement

CHECKPOINTS_DIR = "checkpoints"
START_OVER = "or start over with --overwrite"
FINGERPRINTS = "checkpoint_fingerprints"  # the manifest's list of the fingerprints its run's checkpoints may carry


def run_fingerprint(identity: dict) -> str:
    """A short stable hash of what makes two runs the same run (config and shard)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def damaged(path, reason: str) -> UserError:
    return UserError(f"checkpoint {path} is damaged or incomplete ({reason}); delete it to resume from the checkpoint "
                     f"before it, {START_OVER}")


def restore_failure(path, error: Exception, unreadable: str) -> Exception:
    """What a failed restore of checkpoint `path` means, as the exception to raise: a checkpoint that does not fit
    this run's state (another shape or structure) or a restore that ran out of memory is kept and said so; a file
    that cannot be read or parsed is damage (`damaged`, with `unreadable` as the reason where the OS gives none);
    anything else (a bug) is raised as it is, never blamed on the checkpoint."""
    text = str(error)
    first = text.splitlines()[0][:240] if text else type(error).__name__
    if "compatible with the stored shape" in text or "tree structure" in text.lower():
        return UserError(f"checkpoint {path} does not fit this run's state ({first}); it is kept: resume it with the "
                         f"fttrace and config that wrote it, {START_OVER}")
    if out_of_memory(error):
        return UserError(f"restoring checkpoint {path} ran out of memory ({first}); the checkpoint is kept: train "
                         "fewer members together (member_batch) or use more devices")
    # json, tensorstore and orbax read errors (orbax reports a failed array read as a bare Exception)
    if isinstance(error, (OSError, ValueError, RuntimeError)) or type(error) is Exception:
        return damaged(path, os_reason(error) or unreadable)
    return error


def ignore_abandoned_reads() -> None:
    """Keep late completions of an abandoned checkpoint read from printing tracebacks.

    When one array of a checkpoint cannot be read, orbax gives up and closes its event loop while tensorstore
    still has reads of the other arrays in flight. As they complete, tensorstore's I/O threads call into the
    closed loop and print the resulting `RuntimeError: Event loop is closed` (through `sys.excepthook`), racing
    the one-line error that explains the damaged checkpoint. Only that error, raised off the main thread, is
    dropped; everything else still reaches the previous hook. Installing it twice is harmless.
    """
    previous = sys.excepthook
    if getattr(previous, "ignores_abandoned_reads", False):
        return

    def hook(kind, error, traceback):
        if (kind is RuntimeError and str(error) == "Event loop is closed"
                and threading.current_thread() is not threading.main_thread()):
            return
        previous(kind, error, traceback)

    hook.ignores_abandoned_reads = True
    sys.excepthook = hook


def absolute(path) -> epath.Path:
    """`path` made absolute: orbax refuses relative local paths (URIs such as gs://... are absolute already)."""
    path = epath.Path(path)
    return path if "://" in str(path) else epath.Path(os.path.abspath(path))


class Checkpoints:
    """The checkpoints of one run: where they live, whose they are and how often a phase writes one."""

    def __init__(self, root, fingerprint: str, placement: Placement, every_chunks: int, keep: int,
                 earlier: tuple[str, ...] = ()):
        """`earlier`: other fingerprints of this same run, which its older checkpoints may carry (a run resumed
        after an upgrade of fttrace that changed what identifies a run); new checkpoints carry `fingerprint`."""
        self.root = absolute(root)
        self.fingerprint, self.placement = fingerprint, placement
        self.accepted = {fingerprint, *earlier}
        self.every_chunks, self.keep = every_chunks, keep

    def phase(self, name: str) -> "PhaseCheckpoints":
        """The checkpoints of one phase of one group (`name` as its results part: g<group>-<phase>)."""
        return PhaseCheckpoints(self, name)

    def remove_all(self) -> None:
        """Delete every checkpoint of the workdir (for --overwrite)."""
        if self.root.exists():
            self.root.rmtree()


class PhaseCheckpoints:
    """Save and restore one phase's (state, records); use as a context manager."""

    def __init__(self, run: Checkpoints, name: str):
        self.run = run
        self.directory = run.root / name
        options = ocp.CheckpointManagerOptions(
            create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True,
            preservation_policy=ocp.checkpoint_managers.LatestN(run.keep))
        handlers = dict(state=ocp.StandardCheckpointHandler(), records=ocp.StandardCheckpointHandler(),
                        meta=ocp.JsonCheckpointHandler())
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot use checkpoint directory {self.directory}: {io_reason(e)}") from None

    def __enter__(self) -> "PhaseCheckpoints":
        return self

    def __exit__(self, *exc) -> None:
        self._manager.close()

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def path(self, step: int) -> epath.Path:
        return self.directory / str(step)

    def after_chunk(self, state, records, final_step: int) -> None:
        """Checkpoint if this chunk is due (every `every_chunks` chunks) or ends the phase."""
        chunks, step = len(records) - 1, records[-1][0]
        every = self.run.every_chunks
        if step == final_step or (every and chunks % every == 0):
            self.save(state, records)

    def save(self, state, records) -> None:
        step = records[-1][0]
        # Metric names (which may hold '/' or '.') go to the metadata; the arrays are saved under plain keys.
        names = [sorted(metrics) for _, metrics in records]
        meta = dict(fttrace=__version__, run=self.run.fingerprint, devices=self.run.placement.device_count,
                    steps=[s for s, _ in records], metrics=names)
        arrays = [{f"m{i}": metrics[name] for i, name in enumerate(keys)} for keys, (_, metrics) in zip(names, records)]
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  records=ocp.args.StandardSave(arrays),
                                  meta=ocp.args.JsonSave(meta))
        try:
            self._manager.save(step, args=args)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot write checkpoint {self.path(step)}: {io_reason(e)}") from None

    def restore(self, like, step: int):
        """(state, records) of the checkpoint at `step`; `like` is a state of the same structure and shapes."""
        path = self.path(step)
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # noqa: BLE001 -- whatever an unreadable checkpoint makes orbax raise
            raise restore_failure(path, e, "its metadata cannot be read") from None
        self._check(meta, path)
        members = self.run.placement.members
        state_target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=members), like)
        ignore_abandoned_reads()
        try:
            records_target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=members),
                                          self._manager.item_metadata(step)["records"])
            out = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(state_target), records=ocp.args.StandardRestore(records_target)))
        except Exception as e:  # noqa: BLE001 -- a damaged array file surfaces as tensorstore/orbax errors
            raise restore_failure(path, e, "its arrays cannot be read") from None
        records = out["records"]
        if "metrics" in meta:  # (checkpoints of earlier runs saved the metrics under their names)
            records = [{name: metrics[f"m{i}"] for i, name in enumerate(names)}
                       for names, metrics in zip(meta["metrics"], records)]
        return out["state"], list(zip(meta["steps"], records))

    def _check(self, meta, path) -> None:
        if not isinstance(meta, dict) or not {"fttrace", "run", "devices", "steps"} <= set(meta):
            raise UserError(f"checkpoint {path} has no fttrace metadata; {START_OVER}")
        if meta["fttrace"] != __version__:
            raise UserError(f"checkpoint {path} was written by fttrace {meta['fttrace']} and this is fttrace "
                            f"{__version__}: resume it with fttrace {meta['fttrace']}, {START_OVER}")
        if meta["run"] not in self.run.accepted:
            raise UserError(f"checkpoint {path} belongs to a run of another config or shard; use another --workdir, "
                            f"{START_OVER}")
        if meta["devices"] != self.run.placement.device_count:
            raise UserError(f"checkpoint {path} was written on {meta['devices']} devices and this run has "
                            f"{self.run.placement.device_count}: resume it on {meta['devices']} devices, {START_OVER}")


def _reader(directory) -> ocp.CheckpointManager:
    handlers = dict(state=ocp.PyTreeCheckpointHandler(), records=ocp.StandardCheckpointHandler(),
                    meta=ocp.JsonCheckpointHandler())
    try:
        return ocp.CheckpointManager(absolute(directory), options=ocp.CheckpointManagerOptions(create=False),
                                     item_handlers=handlers)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read checkpoint directory {directory}: {io_reason(e)}") from None


def saved_steps(directory) -> list[int]:
    """The steps of the complete checkpoints in one phase's checkpoint directory, oldest first."""
    with _reader(directory) as manager:
        return sorted(manager.all_steps())


def read_params(directory, step: int | None = None) -> tuple[dict, int]:
    """The member-stacked parameters saved in one phase's checkpoint directory, as numpy arrays on the host, and the
    step they were saved at (`step`, default the newest). Rows follow the phase's member table, then the pad rows
    of the device count that wrote them; the optimiser state is not read."""
    with _reader(directory) as manager:
        steps = sorted(manager.all_steps())
        if not steps:
            raise UserError(f"{directory} holds no complete checkpoint")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise UserError(f"{directory} holds no checkpoint at step {step}; it has steps "
                            f"{', '.join(map(str, steps))}")
        ignore_abandoned_reads()
        try:
            tree = manager.item_metadata(step)["state"].tree["params"]
            target = {"params": jax.tree.map(lambda _: 0, tree)}
            host = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
            out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                item=target, restore_args=host, partial_restore=True)))
        except Exception as e:  # noqa: BLE001 -- whatever an unreadable checkpoint makes orbax raise
            raise restore_failure(epath.Path(directory) / str(step), e, "its parameters cannot be read") from None
    return out["state"]["params"], step
