"""A workdir's training curves as TensorBoard event files: one run per member, grouped by cell, and each cell's
mean and quantiles (`fttrace tensorboard WORKDIR`).

Read from the store as it is on disk — the parts of finished phases and the live curves of the phases still
training (results.parquet where a study writes no parts) — so it works on a running or a finished sweep, from any
machine that can read the workdir, without touching the run. Layout of the log directory:

    LOGDIR/<phase>/<cell>/<member>/events...   tag: the metric; the member's curve, and its hyperparameters
    LOGDIR/<phase>/<cell>/cell/events...       tags: the metric (the cell's mean) and metric/q10, /q50, /q90

A cell is one value of every hyperparameter that varies among the phase's members (the seed excepted), e.g.
`prior=low,finetune_lr=large`, so TensorBoard draws a cell's members beside its mean on each metric's chart (a
regex on the run name picks cells or members), and its HPARAMS tab lists every member with its settings (the
hparams plugin's summaries, written into the member's run). Only curves (metrics logged at two steps or more) are
written, over the store's `step`: the training step in a training phase, an evaluation's own index elsewhere
(pruning's level, a probe's layer); a value that is not finite (a frozen or diverged member; a cell whose members
all are) is left out. With `--follow S` the command polls every S seconds and appends the steps that arrived.
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


def _missing(value) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and not np.isfinite(value)) or value == "nan"


def label(values: dict) -> str:
    """A cell's run name: `name=value` of each setting it has (a setting a member does not have is left out)."""
    text = ",".join(f"{k.removesuffix('_name')}={v:g}" if isinstance(v, (float, np.floating)) else
                    f"{k.removesuffix('_name')}={v}" for k, v in values.items() if not _missing(v))
    return re.sub(r"[^\w.=,+-]", "_", text) or "all"


QUANTILES = (0.1, 0.5, 0.9)
SUMMARY = "cell"  # the run of a cell's mean and quantiles, beside its members' runs


def member_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """The curves in `rows` (metrics logged at two steps or more in their phase), each row with its `cell`."""
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
        out.append(curves.assign(member=curves.member.astype(str)))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=list(BASE_COLUMNS) + ["cell"])


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


def member_settings(curves: pd.DataFrame) -> dict:
    """{(phase, member): its hyperparameters} for the hparams plugin: the cell, the parent and every setting the
    member has (numbers as numbers, the rest as text)."""
    hyper = [c for c in curves.columns if c not in BASE_COLUMNS]
    out = {}
    for _, row in curves.drop_duplicates(["phase", "member"]).iterrows():
        settings = {"parent": str(row.parent)} if not _missing(row.parent) else {}
        for c in hyper:
            value = row[c]
            if _missing(value):
                continue
            settings[c] = value.item() if isinstance(value, np.generic) else (
                value if isinstance(value, (bool, int, float, str)) else str(value))
        out[(row.phase, row.member)] = settings
    return out


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
