"""The results store: long-format Parquet plus a manifest, written atomically.

    WORKDIR/parts/<group>-<phase>.parquet   one file per finished (group, phase), and its .sha256 beside it
    WORKDIR/results.parquet                 all parts, rewritten after every part
    WORKDIR/manifest.json                   config, versions, devices, git commit, wall time, status

Rows: member, parent, phase, step, metric, value, status, and the member's hyperparameters as columns.
Every write goes to a temporary file in the same directory and is renamed into place, so a reader (or a run
killed mid-write) never sees a partial file; a write that fails (full disk, no permission) raises a UserError
naming the file and leaves the previous version in place. Paths go through etils.epath, so WORKDIR may be a
`gs://` location. In a multi-process run each process writes the parts of its own members
(`<group>-<phase>.process-<k>-of-<n>.parquet`) and process 0 writes results.parquet and the manifest.

A part's SHA-256 is written (atomically, before the part itself) from the bytes that reached the disk, and checked
whenever the run reads the part back (resume, assembling results.parquet): a part whose bytes changed is refused by
name, with the remedy (delete it: the run recomputes it). Parts written without one are read unchecked. Every
Parquet file is read through `read_parquet`, which turns a truncated or corrupt file into one error naming it.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib.metadata
import io
import json
import os
import platform
import re
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from etils import epath

from analysis.schema import BASE_COLUMNS, MANIFEST_FILE, PARTS_DIR, RESULTS_FILE  # noqa: F401  (re-exported: the layout)
from fttrace.errors import UserError, io_reason, storage_error

LIVE_DIR = "live"  # the curves of phases still training, rewritten as they go; removed when the phase's part is written
PROGRESS_FILE = "progress.json"  # where the run is now (fttrace/engine/progress.py; `fttrace status`)
# A manifest's status: "running" until the run ends, then COMPLETE with its wall time in `wall_s`. Workdirs of the LM
# studies written by fttrace 0.3.0 and before say "done" and `wall_seconds` instead: `finished` and `wall_time` read
# either schema.
COMPLETE = "complete"
OLD_SCHEMA = {"status": "done", "wall_s": "wall_seconds"}


def finished(manifest: dict) -> bool:
    return manifest.get("status") in (COMPLETE, OLD_SCHEMA["status"])


def wall_time(manifest: dict) -> float | None:
    return manifest.get("wall_s", manifest.get(OLD_SCHEMA["wall_s"]))


TEMPORARY_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; on success it replaces `path` in one rename.

    On object stores (gs://, s3://) an object appears whole once its upload completes, and the rename is a copy of
    the whole object then a delete: `path` is never seen half-written. A write cut off midway (the connection lost)
    leaves at most the temporary object, which no reader takes for `path` and the next run removes
    (`ResultsStore.remove_temporaries`); a part's checksum is written before the part, whose appearance marks it done.
    """
    path = epath.Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}{TEMPORARY_SUFFIX}"
    try:
        yield tmp
        tmp.replace(path)
    except BaseException as e:
        with contextlib.suppress(Exception):  # best effort: the store may be out of reach (the next run cleans up)
            tmp.unlink()
        if storage_error(e):
            raise UserError(f"cannot write {path}: {io_reason(e)}") from None
        raise


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))


CHECKSUM_SUFFIX = ".sha256"  # a results part's checksum file: <part>.parquet.sha256


def checksum_path(path) -> epath.Path:
    path = epath.Path(path)
    return path.parent / f"{path.name}{CHECKSUM_SUFFIX}"


def write_parquet(path, frame: pd.DataFrame, checksum: bool = False) -> None:
    """Write `frame` to `path` atomically; with `checksum`, first the SHA-256 of the written bytes beside it, so
    that a part on disk always has its checksum."""
    with atomic_path(path) as tmp:
        with tmp.open("wb") as f:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), f)
        if checksum:
            with atomic_path(checksum_path(path)) as sum_tmp:
                sum_tmp.write_text(hashlib.sha256(tmp.read_bytes()).hexdigest() + "\n")


def read_parquet(path, remedy: str = "", checksum: bool = False) -> pd.DataFrame:
    """The table in Parquet file `path`; a file that cannot be read or parsed is one UserError naming it (and
    `remedy`, what to do about it). With `checksum`, the file's bytes must match the SHA-256 written beside it
    (if one was)."""
    path = epath.Path(path)
    tail = f"; {remedy}" if remedy else ""
    try:
        data = path.read_bytes()
        expected = checksum_path(path).read_text().strip() if checksum and checksum_path(path).exists() else None
    except Exception as e:  # noqa: BLE001 -- told apart by storage_error
        if not storage_error(e):
            raise
        raise UserError(f"cannot read {path}: {io_reason(e)}{tail}") from None
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise UserError(f"{path} is damaged (its bytes do not match its checksum {checksum_path(path).name}){tail}")
    try:
        return pd.read_parquet(io.BytesIO(data))
    except (pa.ArrowException, ValueError, OSError) as e:
        raise UserError(f"{path} is damaged or not a Parquet file ({io_reason(e)}){tail}") from None


def status_of(diverged) -> np.ndarray:
    """The `status` column of members whose `diverged` flags are given: "diverged" or "ok"."""
    return np.where(np.asarray(diverged), "diverged", "ok").astype(object)


def long_frame(members: pd.DataFrame, phase: str, records, status: np.ndarray | None = None,
               parent_column: str | None = "parent") -> pd.DataFrame:
    """Long-format rows of one phase.

    members: one row per member (its id, parent and hyperparameters), in member-axis order.
    records: [(step, {metric: array[members]}), ...].
    status: per-member status strings (default "ok").
    """
    n = len(members)
    status = np.full(n, "ok", object) if status is None else np.asarray(status, object)
    pieces = []
    for step, metrics in records:
        for metric, values in metrics.items():
            values = np.asarray(values, np.float64).reshape(n)
            pieces.append(pd.DataFrame({"row": np.arange(n), "step": step, "metric": metric, "value": values}))
    frame = pd.concat(pieces, ignore_index=True)
    # Positional helper columns (parent_index, pretrain_index) index arrays of one run; they are not results.
    info = members.reset_index(drop=True).drop(columns=[c for c in members if c.endswith("_index")])
    if parent_column is None or parent_column not in info:
        info = info.assign(parent=None)
    info = info.assign(status=status, phase=phase)
    frame = frame.join(info, on="row").drop(columns="row")
    frame["step"] = frame["step"].astype(np.int64)
    hyper = [c for c in frame.columns if c not in BASE_COLUMNS]
    return frame[list(BASE_COLUMNS) + hyper]


class ResultsStore:
    def __init__(self, workdir, process_index: int = 0, process_count: int = 1):
        self.workdir = workdir_path(workdir)
        self.parts = self.workdir / PARTS_DIR
        self.process_index, self.process_count = process_index, process_count

    @property
    def results_path(self) -> epath.Path:
        return self.workdir / RESULTS_FILE

    @property
    def writes_results(self) -> bool:
        """Process 0 writes results.parquet and the manifest; every process writes its own parts."""
        return self.process_index == 0

    def prepare(self) -> None:
        """Create the workdir and check that it is writable (before any work is done)."""
        try:
            self.parts.mkdir(parents=True, exist_ok=True)
            probe = self.workdir / f".write-check-{uuid.uuid4().hex}{TEMPORARY_SUFFIX}"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise UserError(f"workdir {self.workdir} is not writable: {io_reason(e)}") from None

    def remove_temporaries(self) -> None:
        """Delete the temporary files of writes that a killed run left unfinished."""
        for folder in (self.workdir, self.parts, self.workdir / LIVE_DIR):
            for tmp in folder.glob(f".*{TEMPORARY_SUFFIX}"):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()

    def clear(self) -> None:
        """Delete every result of a previous run (for --overwrite)."""
        for path in [*self.parts.glob("*.parquet"), *self.parts.glob(f"*{CHECKSUM_SUFFIX}"),
                     *(self.workdir / LIVE_DIR).glob("*.parquet"), self.results_path, self.workdir / PROGRESS_FILE]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def part_path(self, name: str, process: int | None = None, folder: str = PARTS_DIR) -> epath.Path:
        """This process's file of part `name` (or that of process `process`); `folder` LIVE_DIR: its live curve."""
        if self.process_count == 1:
            return self.workdir / folder / f"{name}.parquet"
        process = self.process_index if process is None else process
        return self.workdir / folder / f"{name}.process-{process}-of-{self.process_count}.parquet"

    def write_live(self, name: str, frame: pd.DataFrame) -> None:
        """This process's rows so far of a phase still training (part `name`)."""
        path = self.part_path(name, folder=LIVE_DIR)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_parquet(path, frame)

    def drop_live(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.part_path(name, folder=LIVE_DIR).unlink()

    def read_live(self) -> pd.DataFrame | None:
        """The rows of every phase still training (None if there are none). A live file removed meanwhile (its
        phase ended) is skipped."""
        frames = []
        for path in sorted((self.workdir / LIVE_DIR).glob("*.parquet")):
            if path.exists():
                frames.append(read_parquet(path, LIVE_REMEDY))
        return pd.concat(frames, ignore_index=True) if frames else None

    def has_part(self, name: str) -> bool:
        """Whether every process has written part `name`.

        Every process gets the same answer without talking to the others: a process checks a part before it
        writes its own file of it, so within a run the answer only depends on files written by earlier runs.
        """
        return all(self.part_path(name, k).exists() for k in range(self.process_count))

    def write_part(self, name: str, frame: pd.DataFrame) -> None:
        """Store one finished part (with its checksum) and refresh results.parquet."""
        write_parquet(self.part_path(name), frame, checksum=True)
        self.merge_parts()

    def merge_parts(self) -> None:
        """Rewrite results.parquet from every part, each checked against its checksum (process 0 only)."""
        files = sorted(self.parts.glob("*.parquet"))
        if not files or not self.writes_results:
            return
        write_parquet(self.results_path, pd.concat([read_stored_part(f) for f in files], ignore_index=True))

    def read(self) -> pd.DataFrame:
        return read_parquet(self.results_path, RESULTS_REMEDY)

    def read_part(self, name: str) -> pd.DataFrame:
        return read_stored_part(self.part_path(name))


PART_REMEDY = "delete it and run the workdir again: the run recomputes that part"
RESULTS_REMEDY = ("rewrite it: run the same `fttrace run` again (it rebuilds the file from its parts), or for a "
                  "merged workdir `fttrace merge ... --overwrite`")
LIVE_REMEDY = "it is rewritten as its phase trains: read it again, or delete it"


def read_stored_part(path) -> pd.DataFrame:
    """A results part, checked against its checksum."""
    return read_parquet(path, PART_REMEDY, checksum=True)


def workdir_path(workdir) -> epath.Path:
    """A workdir as a path; a gs:// one needs gcsfs (the [gcs] extra), which is checked here, once, by name."""
    path = epath.Path(workdir)
    if str(workdir).startswith("gs://"):
        try:
            import gcsfs  # noqa: F401 -- etils reads gs:// paths through it
        except ImportError:
            raise UserError(f"workdir {workdir}: gs:// paths need gcsfs: pip install 'fttrace[gcs]'") from None
    return path


def read_manifest(workdir) -> dict:
    """The manifest of a workdir; one error naming it when it is missing or not an fttrace manifest."""
    workdir = workdir_path(workdir)
    path = workdir / MANIFEST_FILE
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        found = None
    if not isinstance(found, dict) or not {"config", "status", "devices"} <= set(found):
        raise UserError(f"{workdir} is not an fttrace workdir ({path} is missing or unreadable)")
    return found


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("fttrace", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml-collections", "numpy",
                 "pandas", "pyarrow"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _packages() -> dict:
    """Every installed distribution and its version."""
    return dict(sorted((d.metadata["Name"], d.version) for d in importlib.metadata.distributions()
                       if d.metadata["Name"]))


ENVIRONMENT_PREFIXES = ("XLA_", "JAX_", "TPU_", "CUDA_VISIBLE_DEVICES", "FTTRACE_", "NCCL_", "TF_CPP_")


def provenance() -> dict:
    """What reproduces a run beyond its config: the command line, the environment variables that steer XLA and JAX,
    the git commit of the source and whether its tree had uncommitted changes, and every installed package."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return dict(argv=list(sys.argv), environment={k: v for k, v in sorted(os.environ.items())
                                                  if k.startswith(ENVIRONMENT_PREFIXES)},
                git_commit=_git("rev-parse", "HEAD") or None, git_dirty=None if status is None else bool(status),
                packages=_packages())


def machine() -> dict:
    """The CPU a run computed on, which its floats depend on (XLA generates different code for AVX2 and AVX-512):
    its model, its cores, the widest vector extension it has, and the one XLA was limited to (`XLA_FLAGS`'s
    `--xla_cpu_max_isa`; None: the CPU's own)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", info, re.M).group(1).strip()
        flags = set(re.search(r"^flags\s*:\s*(.+)$", info, re.M).group(1).split())
    except (OSError, AttributeError):  # not Linux, or no x86 flags line
        pass
    isa = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")) if flag in flags),
               platform.machine())
    limit = re.search(r"--xla_cpu_max_isa=(\S+)", os.environ.get("XLA_FLAGS", ""))
    return dict(cpu=model, cores=os.cpu_count(), isa=isa, xla_cpu_max_isa=limit.group(1) if limit else None)


def manifest(config_dict: dict, devices: list[str], **extra) -> dict:
    return dict(config=config_dict, versions=_versions(), devices=devices, **provenance(), host=platform.node(),
                machine=machine(), written=datetime.datetime.now(datetime.timezone.utc).isoformat(), **extra)
