"""A workdir's training curves as TensorBoard event files: one run per member, grouped by cell, and each cell's
mean and quantiles (`fttrace tensorboard WORKDIR`).

The rows, cells, curves and settings are the store's as `fttrace/tools/logged.py` reads them (a running or a
finished sweep, from any machine that sees the workdir). Layout of the log directory:

    LOGDIR/<phase>/<cell>/<member>/events...   tag: the metric; the member's curve, and its hyperparameters
    LOGDIR/<phase>/<cell>/cell/events...       tags: the metric (the cell's mean) and metric/q10, /q50, /q90

TensorBoard so draws a cell's members beside its mean on each metric's chart (a regex on the run name picks cells
or members), and its HPARAMS tab lists every member with its settings (the hparams plugin's summaries, written into
the member's run). Only curves are written; a value that is not finite (a frozen or diverged member; a cell whose
members all are) is left out. With `--follow S` the command polls every S seconds and appends the steps that
arrived.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
from etils import epath

from fttrace.errors import UserError
from fttrace.engine.results import workdir_path
from fttrace.tools.logged import member_curves, member_settings, store_rows

LOGDIR = "tensorboard"  # default log directory, inside the workdir
MARK = ".fttrace-tensorboard"  # marks a log directory this command wrote (and may therefore rebuild)
QUANTILES = (0.1, 0.5, 0.9)
SUMMARY = "cell"  # the run of a cell's mean and quantiles, beside its members' runs


def cell_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Columns phase, cell, metric, step, value: per cell and step, the members' mean (tag: the metric) and
    quantiles (tags metric/q10, metric/q50, metric/q90) of every curve; a member's NaN is not counted."""
    columns = ["phase", "cell", "metric", "step", "value"]
    finite = curves[np.isfinite(curves.value.astype(float))] if len(curves) else curves
    if finite.empty:
        return pd.DataFrame(columns=columns)
    grouped = finite.groupby(["phase", "cell", "metric", "step"], sort=True)["value"]
    parts = [grouped.mean().reset_index()]
    for q in QUANTILES:
        part = grouped.quantile(q).reset_index()
        parts.append(part.assign(metric=part.metric + f"/q{round(q * 100)}"))
    return pd.concat(parts, ignore_index=True)[columns]


def cell_means(rows: pd.DataFrame) -> pd.DataFrame:
    """The cells' means alone (`cell_summary` of the curves in `rows`, without the quantiles)."""
    summary = cell_summary(member_curves(rows))
    return summary[~summary.metric.str.contains("/q", regex=False)].reset_index(drop=True)


class EventLog:
    """The log directory, rebuilt when the command starts; appends each (phase, cell, metric)'s new steps."""

    def __init__(self, logdir: epath.Path):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise UserError("TensorBoard event files need tensorboardX: pip install 'fttrace[tensorboard]'") from None
        self._writer_class = SummaryWriter
        if logdir.exists() and any(logdir.iterdir()):
            if not (logdir / MARK).exists():
                raise UserError(f"{logdir} holds files this command did not write; choose another --logdir")
            logdir.rmtree()
        logdir.mkdir(parents=True, exist_ok=True)
        (logdir / MARK).write_text("written by fttrace tensorboard; rebuilt each time it starts\n")
        self.logdir, self.writers, self.last = logdir, {}, {}

    def _writer(self, phase: str, cell: str, run: str):
        writer = self.writers.get((phase, cell, run))
        if writer is None:
            writer = self.writers[(phase, cell, run)] = self._writer_class(str(self.logdir / phase / cell / run))
        return writer

    def _append(self, frame: pd.DataFrame, run_of) -> int:
        written = 0
        for (phase, cell, run, metric), curve in frame.groupby(["phase", "cell", run_of, "metric"], sort=False):
            new = curve[curve.step > self.last.get((phase, cell, run, metric), -1)]
            new = new[np.isfinite(new.value.astype(float))]
            if new.empty:
                continue
            writer = self._writer(phase, cell, run)
            for step, value in zip(new.step, new.value):
                writer.add_scalar(metric, float(value), int(step))
            self.last[(phase, cell, run, metric)] = int(new.step.max())
            written += len(new)
        return written

    def write(self, rows: pd.DataFrame) -> int:
        """Append the steps of `rows` (the store's rows, `store_rows`) not written yet: each member's curves, each
        cell's mean and quantiles; a member's hyperparameters when its run is created. Returns how many scalars
        were written."""
        from tensorboardX.summary import hparams
        curves = member_curves(rows)
        summary = cell_summary(curves).assign(run=SUMMARY)
        settings = member_settings(curves)
        metrics = curves.groupby(["phase", "member"])["metric"].unique() if len(curves) else {}
        for (phase, cell, member) in curves[["phase", "cell", "member"]].drop_duplicates().itertuples(index=False):
            if (phase, cell, member) not in self.writers:
                writer = self._writer(phase, cell, member)
                names = {m: 0.0 for m in metrics[(phase, member)]}  # the plugin reads their values from the curves
                # into the member's own run: `add_hparams` would start a run of its own for them
                for event in hparams(dict(settings[(phase, member)], cell=cell), names):
                    writer._get_file_writer().add_summary(event)
        written = self._append(curves, "member") + self._append(summary, "run")
        for writer in self.writers.values():
            writer.flush()
        return written

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def write_event_files(workdir, logdir=None, follow: float | None = None, say=print) -> epath.Path:
    """Write the workdir's curves as event files under `logdir` (default WORKDIR/tensorboard); with `follow`,
    keep appending new steps every `follow` seconds until interrupted."""
    workdir = workdir_path(workdir)
    if not workdir.is_dir():
        raise UserError(f"{workdir} is not a workdir (no such directory)")
    logdir = workdir / LOGDIR if logdir is None else workdir_path(logdir)
    log = EventLog(logdir)
    try:
        while True:
            written = log.write(store_rows(workdir))
            if follow is None:
                say(f"{written} scalars in {len(log.writers)} runs (a member's or a cell's): tensorboard --logdir "
                    f"{logdir}")
                return logdir
            if written:
                say(f"{time.strftime('%H:%M:%S')} {written} new scalars")
            time.sleep(follow)
    except KeyboardInterrupt:
        return logdir
    finally:
        log.close()
