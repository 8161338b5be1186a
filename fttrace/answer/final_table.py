"""The final table of a results store: final C_PT / C_FT accuracy per phase and cell, mean over seeds (what
`fttrace run` prints at the end of an answer-position study).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from fttrace.engine.results import read_parquet

CELL_COLUMNS = ("prior_name", "prior", "finetune_lr_name", "finetune_lr", "spurious")


def final_values(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows at each (member, phase)'s last step."""
    last = frame.groupby(["member", "phase"])["step"].transform("max")
    return frame[frame["step"] == last]


def final_table(frame: pd.DataFrame, metrics=("pt_acc", "ft_acc")) -> pd.DataFrame:
    rows = final_values(frame[frame["metric"].isin(metrics) & frame["phase"].isin(["pretrain", "finetune"])])
    cells = ["phase"] + [c for c in CELL_COLUMNS if c in rows and rows[c].notna().any()]
    table = rows.pivot_table(index=cells + ["member"], columns="metric", values="value", dropna=False)
    table = table.dropna(how="all").reset_index().drop(columns="member")
    grouped = table.groupby([c for c in cells], dropna=False)
    out = grouped[list(metrics)].mean().round(3)
    out["members"] = grouped.size()
    return out


def final_lines(results_path: Path) -> str:
    frame = read_parquet(results_path)
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        return "Final accuracy (mean over members) per phase and cell:\n" + final_table(frame).to_string()
