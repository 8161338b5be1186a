"""A store's rows as members and their curves: what `fttrace tensorboard` and `fttrace wandb` show.

Read from the store as it is on disk — the parts of finished phases and the live curves of the phases still
training (results.parquet where a study writes no parts) — so both work on a running or a finished sweep, from any
machine that can read the workdir, without touching the run. A cell is one value of every hyperparameter that varies
among a phase's members (the seed excepted), named `prior=low,finetune_lr=large`; a curve is a metric logged at two
steps or more in its phase, over the store's `step` (the training step in a training phase, an evaluation's own
index elsewhere: pruning's level, a probe's layer).
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
from etils import epath

from fttrace.engine.results import BASE_COLUMNS, PARTS_DIR, RESULTS_FILE, RESULTS_REMEDY, ResultsStore, read_parquet, \
    read_stored_part

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


def missing(value) -> bool:
    """Whether a setting is absent from a member's row (None, NaN, or the text "nan" of a string column)."""
    return value is None or (isinstance(value, (float, np.floating)) and not np.isfinite(value)) or value == "nan"


def label(values: dict) -> str:
    """A cell's run name: `name=value` of each setting it has (a setting a member does not have is left out)."""
    text = ",".join(f"{k.removesuffix('_name')}={v:g}" if isinstance(v, (float, np.floating)) else
                    f"{k.removesuffix('_name')}={v}" for k, v in values.items() if not missing(v))
    return re.sub(r"[^\w.=,+-]", "_", text) or "all"


def with_cells(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` with the `cell` of each row's member in its phase, and `member` as text."""
    out = []
    for _, in_phase in rows.groupby("phase", sort=False):
        columns = cell_columns(in_phase)
        if columns:
            cells = in_phase[columns].drop_duplicates()
            cells = cells.assign(cell=[label(dict(zip(columns, v))) for v in cells.itertuples(index=False, name=None)])
            in_phase = in_phase.merge(cells, on=columns, how="left")
        else:
            in_phase = in_phase.assign(cell="all")
        out.append(in_phase.assign(member=in_phase.member.astype(str)))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=list(BASE_COLUMNS) + ["cell"])


def is_curve(rows: pd.DataFrame) -> pd.Series:
    """Which of `rows` belong to a curve: a metric logged at two steps or more in its phase."""
    steps = rows.groupby(["phase", "metric"], sort=False)["step"].transform("nunique")
    return steps > 1


def member_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """The curves in `rows`, each row with its `cell`."""
    cells = with_cells(rows)
    return cells[is_curve(cells)].reset_index(drop=True) if len(cells) else cells


def member_settings(rows: pd.DataFrame) -> dict:
    """{(phase, member): its settings} of the members of `rows`: the parent and every hyperparameter the member has
    (its cell too, where `rows` carry one; numbers as numbers, the rest as text; absent settings left out)."""
    hyper = [c for c in rows.columns if c not in BASE_COLUMNS]
    out = {}
    for _, row in rows.drop_duplicates(["phase", "member"]).iterrows():
        settings = {"parent": str(row.parent)} if not missing(row.parent) else {}
        for c in hyper:
            value = row[c]
            if missing(value):
                continue
            settings[c] = value.item() if isinstance(value, np.generic) else (
                value if isinstance(value, (bool, int, float, str)) else str(value))
        out[(row.phase, row.member)] = settings
    return out
