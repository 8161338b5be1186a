"""A workdir's training curves as TensorBoard event files, one mean per cell (`fttrace tensorboard WORKDIR`).

Read from the store as it is on disk — the parts of finished phases and the live curves of the phases still
training (results.parquet where a study writes no parts) — so it works on a running or a finished sweep, from any
machine that can read the workdir, without touching the run. Layout of the log directory:

    LOGDIR/<phase>/<cell>/events.out.tfevents...   tag: the metric; value: its mean over the cell's members

A cell is one value of every hyperparameter that varies among the phase's members (the seed excepted), e.g.
`prior=low,finetune_lr=large,spurious=0`, so TensorBoard draws a phase's cells as runs over each metric. Only
curves (metrics logged at two steps or more) are written, over the store's `step`: the training step in a
training phase, an evaluation's own index elsewhere (pruning's level, a probe's layer); a mean that is not finite
(every member of the cell frozen or diverged) is left out.
With `--follow S` the command polls every S seconds and appends the steps that arrived.
"""
from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
from etils import epath

from fttrace.errors import UserError
from fttrace.engine.results import BASE_COLUMNS, PARTS_DIR, RESULTS_FILE, RESULTS_REMEDY, ResultsStore, read_parquet, \
    read_stored_part, workdir_path

LOGDIR = "tensorboard"  # default log directory, inside the workdir
MARK = ".fttrace-tensorboard"  # marks a log directory this command wrote (and may therefore rebuild)
NOT_CELLS = {"seed"}


def store_rows(workdir: epath.Path) -> pd.DataFrame:
    """Every row on disk now: finished parts and live curves (or results.parquet for a store without parts)."""
    frames = [read_stored_part(f) for f in sorted((workdir / PARTS_DIR).glob("*.parquet"))]
    if not frames and (workdir / RESULTS_FILE).exists():
        frames = [read_parquet(workdir / RESULTS_FILE, RESULTS_REMEDY)]
    live = ResultsStore(workdir).read_live()
    frames += [] if live is None else [live]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(BASE_COLUMNS))


def cell_columns(rows: pd.DataFrame) -> list[str]:
    """The hyperparameters that vary among one phase's members (a `<name>_name` column in place of `<name>`)."""
    hyper = [c for c in rows.columns if c not in BASE_COLUMNS and c not in NOT_CELLS]
    varying = [c for c in hyper if rows[c].nunique(dropna=True) > 1]
    return [c for c in varying if f"{c}_name" not in varying]


def label(values: dict) -> str:
    text = ",".join(f"{k.removesuffix('_name')}={v:g}" if isinstance(v, (float, np.floating)) else
                    f"{k.removesuffix('_name')}={v}" for k, v in values.items())
    return re.sub(r"[^\w.=,+-]", "_", text)


def cell_means(rows: pd.DataFrame) -> pd.DataFrame:
    """Columns phase, cell, metric, step, value (the mean over the cell's members) of every curve in `rows`."""
    out = []
    for phase, in_phase in rows.groupby("phase", sort=False):
        steps = in_phase.groupby("metric")["step"].nunique()
        curves = in_phase[in_phase.metric.isin(steps.index[steps > 1])]
        if curves.empty:
            continue
        columns = cell_columns(in_phase)
        if columns:
            cells = curves[columns].drop_duplicates()
            cells = cells.assign(cell=[label(dict(zip(columns, v))) for v in cells.itertuples(index=False, name=None)])
            curves = curves.merge(cells, on=columns, how="left")
        else:
            curves = curves.assign(cell="all")
        means = curves.groupby(["cell", "metric", "step"], sort=True)["value"].mean().reset_index()
        out.append(means[np.isfinite(means.value)].assign(phase=phase))
    columns = ["phase", "cell", "metric", "step", "value"]
    return pd.concat(out, ignore_index=True)[columns] if out else pd.DataFrame(columns=columns)


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

    def write(self, means: pd.DataFrame) -> int:
        """Append the steps not written yet; returns how many scalars were written."""
        written = 0
        for (phase, cell, metric), curve in means.groupby(["phase", "cell", "metric"], sort=False):
            new = curve[curve.step > self.last.get((phase, cell, metric), -1)]
            if new.empty:
                continue
            writer = self.writers.get((phase, cell))
            if writer is None:
                writer = self.writers[(phase, cell)] = self._writer_class(str(self.logdir / phase / cell))
            for step, value in zip(new.step, new.value):
                writer.add_scalar(metric, float(value), int(step))
            self.last[(phase, cell, metric)] = int(new.step.max())
            written += len(new)
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
            written = log.write(cell_means(store_rows(workdir)))
            if follow is None:
                say(f"{written} scalars in {len(log.writers)} runs: tensorboard --logdir {logdir}")
                return logdir
            if written:
                say(f"{time.strftime('%H:%M:%S')} {written} new scalars")
            time.sleep(follow)
    except KeyboardInterrupt:
        return logdir
    finally:
        log.close()
