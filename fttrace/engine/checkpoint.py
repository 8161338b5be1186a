"""Checkpoints of training phases: the member-stacked TrainState plus the phase's metric records so far.

    WORKDIR/checkpoints/g<group>-<phase>/<step>/{state,records,meta,checksums}   one orbax CheckpointManager per phase

A phase is checkpointed every `checkpoint.every_chunks` chunks (0: only at its end) and always at its end, which
is where the next phase starts from; the newest `checkpoint.keep` are kept. So are `checkpoint.keep_log_spaced`
mid-training ones (0: none): at the first evaluation step at or after each of that many log-spaced steps from the
phase's first evaluation after step 0 to its last (`log_spaced_steps`), each written when training reaches it, so
a notebook can open the model early in a phase, where most of a fine-tuning's change happens. Orbax writes a checkpoint into a
temporary directory and renames it once complete, so a run killed at any moment leaves complete checkpoints only,
and a resumed phase goes on from the newest. Saving is synchronous: the next chunk donates the state's buffers.
In a multi-process run every process writes the shards of its own members (`ocdbt.process_<k>/`).

`meta` names the run (a fingerprint of its config and shard), the fttrace version and the device count. A
checkpoint of another run, version or device count is refused, as is one that cannot be read; the message names
its path. A restored state is bit-for-bit the saved one, so a resumed phase continues exactly where it stopped.

`checksums` holds one JSON file per process: the crc32 of every row (member) of every array that process saved.
Orbax commits it with the arrays, and every restore (`restore`, `read_params`) recomputes the checksums of the rows
it read: bytes changed inside array data, which orbax and tensorstore would return as they are, make the checkpoint
"damaged" like any other unreadable one. Being per row, the checksums check any layout that reads them: a process
its own rows, `fttrace.open` every row. Checkpoints written without them are read unchecked.

`read_params` reads the parameters alone into host memory, on any device count (`fttrace.open`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
import zlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from fttrace.version import __version__
from fttrace.errors import UserError, io_reason, os_reason, out_of_memory
from fttrace.engine.placement import Placement, everywhere, sync

CHECKPOINTS_DIR = "checkpoints"
START_OVER = "or start over with --overwrite"
FINGERPRINTS = "checkpoint_fingerprints"  # the manifest's list of the fingerprints its run's checkpoints may carry
CHECKSUMS = "checksums"  # the orbax item holding each process's row checksums (`row_checksums`)
SET_ASIDE = ".damaged"  # suffix of a damaged checkpoint moved out of the way of a resumed phase


def run_fingerprint(identity: dict) -> str:
    """A short stable hash of what makes two runs the same run (config and shard)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


class DamagedCheckpoint(UserError):
    """A checkpoint that cannot be read, or whose arrays differ from the checksums saved with them."""

    def __init__(self, path, reason: str):
        super().__init__(f"checkpoint {path} is damaged or incomplete ({reason}); delete it to resume from the "
                         f"checkpoint before it, {START_OVER}")
        self.path, self.reason = path, reason


def damaged(path, reason: str) -> DamagedCheckpoint:
    return DamagedCheckpoint(path, reason)


def _leaf_name(path) -> str:
    """A leaf's path as a/b/0/c, the same for a TrainState and the plain dicts orbax restores it as."""
    return "/".join(str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k)))) for k in path)


def _held_rows(x):
    """(row, that row's bytes) of each row of `x`'s leading axis held by this process (a 0-d leaf is row 0)."""
    if isinstance(x, jax.Array) and x.ndim:
        for shard in x.addressable_shards:
            data = np.asarray(shard.data)
            yield from zip(range(x.shape[0])[shard.index[0]], data)
    else:
        yield from enumerate(np.reshape(np.asarray(x), (-1,) + np.shape(x)[1:]) if np.ndim(x) else [np.asarray(x)])


def row_checksums(tree, prefix: str) -> dict:
    """{leaf name: {row: crc32 of its bytes}} of the rows of `tree` held by this process."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        rows = out.setdefault(f"{prefix}/{_leaf_name(path)}", {})
        for row, data in _held_rows(leaf):
            rows.setdefault(int(row), zlib.crc32(np.ascontiguousarray(data).tobytes()))
    return out


def _as_json(checksums: dict) -> dict:
    return {name: {"rows": list(rows), "crc32": list(rows.values())} for name, rows in checksums.items()}


def saved_checksums(path) -> dict | None:
    """The row checksums every process saved in checkpoint `path`, merged; None for a checkpoint without them."""
    folder = epath.Path(path) / CHECKSUMS
    if not folder.exists():
        return None
    merged = {}
    try:
        for file in folder.glob("process-*.json"):
            for name, saved in json.loads(file.read_text()).items():
                merged.setdefault(name, {}).update(zip(saved["rows"], saved["crc32"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise damaged(path, "its checksums cannot be read") from None
    return merged


def verify(path, tree, prefix: str, saved: dict | None) -> None:
    """Raise DamagedCheckpoint when a row of `tree` read from checkpoint `path` differs from its saved checksum."""
    if saved is None:
        return
    for name, rows in row_checksums(tree, prefix).items():
        expected = saved.get(name, {})
        for row, crc in rows.items():
            if expected.get(row) != crc:
                raise damaged(path, f"the data of {name}, row {row}, does not match its checksum")


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


def _abandoned_read(kind, error, traceback) -> bool:
    """Whether an error is a late completion of an abandoned read: `Event loop is closed`, raised where tensorstore
    calls asyncio's `call_soon_threadsafe` from C (the outermost frame of its traceback)."""
    return (kind is RuntimeError and str(error) == "Event loop is closed" and traceback is not None
            and traceback.tb_frame.f_code.co_name == "call_soon_threadsafe"
            and traceback.tb_frame.f_globals.get("__name__") == "asyncio.base_events")


def ignore_abandoned_reads() -> None:
    """Keep late completions of an abandoned checkpoint read from printing tracebacks.

    When one array of a checkpoint cannot be read, orbax gives up and closes its event loop while tensorstore
    still has reads of the other arrays in flight. As they complete (up to the interpreter's exit), tensorstore's
    threads call into the closed loop and report the resulting `RuntimeError: Event loop is closed` through
    `sys.unraisablehook` or `sys.excepthook`, racing the one-line error that explains the damaged checkpoint. Only
    that error, raised by `call_soon_threadsafe` called from outside Python, is dropped; everything else still
    reaches the previous hooks. Installing it twice is harmless.
    """
    previous, previous_unraisable = sys.excepthook, sys.unraisablehook
    if not getattr(previous, "ignores_abandoned_reads", False):
        def hook(kind, error, traceback):
            if not _abandoned_read(kind, error, traceback):
                previous(kind, error, traceback)

        hook.ignores_abandoned_reads = True
        sys.excepthook = hook
    if not getattr(previous_unraisable, "ignores_abandoned_reads", False):
        def unraisable_hook(report):
            if not _abandoned_read(report.exc_type, report.exc_value, report.exc_traceback):
                previous_unraisable(report)

        unraisable_hook.ignores_abandoned_reads = True
        sys.unraisablehook = unraisable_hook


THREAD_ERROR = "_SignalingThread.run() raised an exception"  # how orbax logs a failure of one of its save threads
SAVE_THREADS_WAIT_S = 60.0  # how long a failed save waits for orbax's threads still writing


class _DropThreadErrors(logging.Filter):
    def filter(self, record) -> bool:
        return THREAD_ERROR not in record.getMessage()


@contextlib.contextmanager
def quiet_failed_save():
    """Make a failed save (a full disk) end in its one-line error only.

    Orbax writes a checkpoint's items on threads; when one fails, each logs its traceback, and the threads still
    writing go on after the save has raised, into a closed event loop and, if the process is ending, a shutting
    down interpreter, each printing another. Meanwhile their logs are dropped (the save raises the failure itself)
    and, when the save fails, the threads it started are waited for before the error is raised.
    """
    ignore_abandoned_reads()
    before, quiet = set(threading.enumerate()), _DropThreadErrors()
    log = logging.getLogger("absl")
    log.addFilter(quiet)
    try:
        yield
    except BaseException:
        for thread in set(threading.enumerate()) - before:
            thread.join(SAVE_THREADS_WAIT_S / 4)
        raise
    finally:
        log.removeFilter(quiet)


CHECKPOINT_STORES = ("gs://",)  # the object stores orbax writes arrays to (tensorstore's gcs driver)


def check_location(workdir) -> None:
    """Refuse a workdir on an object store orbax cannot write checkpoints to (s3://...: orbax builds tensorstore
    specs for local paths and gs:// only), before anything is written there."""
    scheme, sep, _ = str(workdir).partition("://")
    if sep and not str(workdir).startswith(CHECKPOINT_STORES):
        raise UserError(f"workdir {workdir}: orbax writes checkpoints to local paths and gs:// only, not {scheme}://; "
                        "mount the bucket (mountpoint-s3, SkyPilot's file_mounts) and give its local path "
                        f"(`fttrace merge`, `fttrace status` and fttrace.open's results do read {scheme}:// workdirs)")


def absolute(path) -> epath.Path:
    """`path` made absolute: orbax refuses relative local paths (URIs such as gs://... are absolute already)."""
    path = epath.Path(path)
    return path if "://" in str(path) else epath.Path(os.path.abspath(path))


def log_spaced_steps(steps, final: int, count: int) -> set[int]:
    """Of the evaluation steps `steps` reached so far (0 first), those kept as log-spaced checkpoints: for each of
    `count` steps spaced evenly in log from the first step after 0 to `final`, the first of `steps` at or after it."""
    reached = sorted(int(s) for s in steps if s > 0)
    if count <= 0 or not reached:
        return set()
    first = reached[0]
    targets = [first] if count == 1 or final <= first else [
        int(np.ceil(first * (final / first) ** (j / (count - 1)) - 1e-6)) for j in range(count)]
    return {next(s for s in reached if s >= t) for t in targets if t <= reached[-1]}


class _LogSpaced:
    """An orbax preservation policy: keep the checkpoints at `steps` (the phase's log-spaced steps so far)."""

    def __init__(self):
        self.steps: set[int] = set()

    def should_preserve(self, checkpoints, *, context=None) -> list[bool]:
        return [info.step in self.steps for info in checkpoints]


class Checkpoints:
    """The checkpoints of one run: where they live, whose they are and how often a phase writes one."""

    def __init__(self, root, fingerprint: str, placement: Placement, every_chunks: int, keep: int,
                 earlier: tuple[str, ...] = (), keep_log_spaced: int = 0):
        """`earlier`: other fingerprints of this same run, which its older checkpoints may carry (a run resumed
        after an upgrade of fttrace that changed what identifies a run); new checkpoints carry `fingerprint`."""
        self.root = absolute(root)
        self.fingerprint, self.placement = fingerprint, placement
        self.accepted = {fingerprint, *earlier}
        self.every_chunks, self.keep, self.keep_log_spaced = every_chunks, keep, keep_log_spaced

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
        self._log_spaced = _LogSpaced()
        options = ocp.CheckpointManagerOptions(
            create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True,
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
                [ocp.checkpoint_managers.LatestN(run.keep), self._log_spaced]))
        # Every process writes its own checksums file (primary_host=None: each one is "primary" for this item).
        checksums = ocp.JsonCheckpointHandler(
            f"process-{jax.process_index()}.json",
            multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=None))
        handlers = dict(state=ocp.StandardCheckpointHandler(), records=ocp.StandardCheckpointHandler(),
                        meta=ocp.JsonCheckpointHandler(), checksums=checksums)
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
        """Checkpoint if this chunk is due (every `every_chunks` chunks), reaches a log-spaced step or ends the
        phase. The log-spaced steps reached so far are kept from then on."""
        chunks, step = len(records) - 1, records[-1][0]
        every = self.run.every_chunks
        self._log_spaced.steps = log_spaced_steps([s for s, _ in records], final_step, self.run.keep_log_spaced)
        if step == final_step or (every and chunks % every == 0) or step in self._log_spaced.steps:
            self.save(state, records)

    def save(self, state, records) -> None:
        step = records[-1][0]
        # Metric names (which may hold '/' or '.') go to the metadata; the arrays are saved under plain keys.
        names = [sorted(metrics) for _, metrics in records]
        meta = dict(fttrace=__version__, run=self.run.fingerprint, devices=self.run.placement.device_count,
                    steps=[s for s, _ in records], metrics=names)
        arrays = [{f"m{i}": metrics[name] for i, name in enumerate(keys)} for keys, (_, metrics) in zip(names, records)]
        checksums = _as_json({**row_checksums(state, "state"), **row_checksums(arrays, "records")})
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  records=ocp.args.StandardSave(arrays),
                                  meta=ocp.args.JsonSave(meta),
                                  checksums=ocp.args.JsonSave(checksums))
        try:
            with quiet_failed_save():
                self._manager.save(step, args=args)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot write checkpoint {self.path(step)}: {io_reason(e)}") from None

    def restore(self, like, step: int):
        """(state, records) of the checkpoint at `step`; `like` is a state of the same structure and shapes.

        Every process restores and checks its own rows; a checkpoint damaged in any process's rows is damaged for
        all of them (they agree before anyone goes on), so that every process resumes from the same step."""
        path, error = self.path(step), None
        try:
            out = self._restore(like, step)
        except DamagedCheckpoint as e:
            out, error = None, e
        if not everywhere(error is None, f"checkpoint-verified {path}"):
            raise error or damaged(path, "another process found its rows of it damaged")
        return out

    def _restore(self, like, step: int):
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
        saved = saved_checksums(path)
        verify(path, out["state"], "state", saved)
        verify(path, out["records"], "records", saved)
        records = out["records"]
        if "metrics" in meta:  # (checkpoints of earlier runs saved the metrics under their names)
            records = [{name: metrics[f"m{i}"] for i, name in enumerate(names)}
                       for names, metrics in zip(meta["metrics"], records)]
        return out["state"], list(zip(meta["steps"], records))

    def set_aside(self, step: int) -> epath.Path:
        """Move the damaged checkpoint at `step` out of the phase's way (to `<step>.damaged`, kept for inspection),
        so that the phase, resumed from an earlier checkpoint, can write `step` again. Returns where it went."""
        target = self.directory / f"{step}{SET_ASIDE}"
        if jax.process_index() == 0:
            if target.exists():
                target.rmtree()
            self.path(step).rename(target)
        sync(f"checkpoint-set-aside {self.path(step)}")
        self._manager.reload()
        return target

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
                    meta=ocp.JsonCheckpointHandler(), checksums=ocp.JsonCheckpointHandler())  # known: no warning
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
    path = absolute(directory) / str(step)
    verify(path, out["state"], "state", saved_checksums(path))
    return out["state"]["params"], step
