"""The results store: long-format Parquet plus a manifest, written atomically.

    WORKDIR/parts/<group>-<phase>.parquet   one file per finished (group, phase)
    WORKDIR/results.parquet                 all parts, rewritten after every part
    WORKDIR/manifest.json                   config, versions, devices, git commit, wall time, status

Rows: member, parent, phase, step, metric, value, status, and the member's hyperparameters as columns.
Every write goes to a temporary file in the same directory and is renamed into place, so a reader (or a run
killed mid-write) never sees a partial file.
"""
from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fttrace.errors import UserError

RESULTS_FILE = "results.parquet"
MANIFEST_FILE = "manifest.json"
PARTS_DIR = "parts"
BASE_COLUMNS = ("member", "parent", "phase", "step", "metric", "value", "status")


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yields a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))


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
    info = members.reset_index(drop=True).drop(columns=[c for c in ("parent_index",) if c in members])
    if parent_column is None or parent_column not in info:
        info = info.assign(parent=None)
    info = info.assign(status=status, phase=phase)
    frame = frame.join(info, on="row").drop(columns="row")
    frame["step"] = frame["step"].astype(np.int64)
    hyper = [c for c in frame.columns if c not in BASE_COLUMNS]
    return frame[list(BASE_COLUMNS) + hyper]


class ResultsStore:
    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.parts = self.workdir / PARTS_DIR

    @property
    def results_path(self) -> Path:
        return self.workdir / RESULTS_FILE

    def prepare(self) -> None:
        """Create the workdir and check that it is writable (before any work is done)."""
        try:
            self.parts.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.workdir, prefix=".write-check-"):
                pass
        except OSError as e:
            raise UserError(f"workdir {self.workdir} is not writable: {e.strerror or e}") from None

    def part_path(self, name: str) -> Path:
        return self.parts / f"{name}.parquet"

    def has_part(self, name: str) -> bool:
        return self.part_path(name).exists()

    def write_part(self, name: str, frame: pd.DataFrame) -> None:
        """Store one finished part and refresh results.parquet."""
        with atomic_path(self.part_path(name)) as tmp:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
        self.merge_parts()

    def merge_parts(self) -> None:
        files = sorted(self.parts.glob("*.parquet"))
        if not files:
            return
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        with atomic_path(self.results_path) as tmp:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)

    def read(self) -> pd.DataFrame:
        return pd.read_parquet(self.results_path)


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("fttrace", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml-collections", "numpy",
                 "pandas", "pyarrow"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def manifest(config_dict: dict, devices: list[str], **extra) -> dict:
    return dict(config=config_dict, versions=_versions(), devices=devices, git_commit=_git_commit(),
                host=platform.node(), written=datetime.datetime.now(datetime.timezone.utc).isoformat(), **extra)
