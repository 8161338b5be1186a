"""The instruments against their nulls, per setting: mean over seeds [95% bootstrap CI] of each member measure
(analysis.measures), over the fine-tuned members of healthy lineages whose parent had C_PT.

  pruning    the targeted C_PT gain over the pruning budget, beside the random-neuron gain over the same levels
             (the null) and the targeted gain of the seed's control that never had C_PT; the C_FT change under the
             same units (negative: removing them takes C_FT away)
  attention  the change of attention against the parent over the seed-to-seed null (1 = as different as another
             seed's pretrained model), mean over heads and the largest head; the same for the reFT child
  patching   the site whose patch with the parent's contribution raises C_PT most above the unpatched child (the
             gain, and the most frequent site), and the largest C_FT drop under a patch
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.settings import in_setting_order, readable, setting_columns
from analysis.stats import CONFIDENCE, cell_intervals

PRUNING = {"prune_gain": "C_PT gain, targeted", "prune_random_gain": "C_PT gain, random neurons (null)",
           "prune_control_gain": "C_PT gain, targeted on the control (null)",
           "prune_ft_change": "C_FT change, targeted"}
ATTENTION = {"attn_change": "attention change / seed null (mean over heads)",
             "attn_change_max": "largest head's change / seed null", "attn_change_reft": "reFT child: change / null"}
PATCHING = {"patch_pt_gain": "C_PT gain of the best patch", "patch_ft_drop": "largest C_FT drop under a patch"}
MODES = {"patch_site": "most frequent C_PT site", "patch_ft_site": "most frequent C_FT site"}


def _text(value, low, high, ratio: bool = False) -> str:
    """'mean [lo, hi]': accuracy changes signed to 3 decimals, ratios to 2."""
    if not np.isfinite(value):
        return "n/a"
    def form(x):  # rounding first, so that float noise around 0 prints as +0.000, not -0.000
        return ("{:.2f}" if ratio else "{:+.3f}").format(round(float(x), 6) + 0.0)
    return form(value) + (f" [{form(low)}, {form(high)}]" if np.isfinite(low) else "")


def _mode(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "n/a"
    counts = values.value_counts()
    return f"{counts.index[0]} ({counts.iloc[0]}/{len(values)})"


def instrument_table(evidence: pd.DataFrame, measures: dict, by=(), confidence: float = CONFIDENCE,
                     ratio: bool = False, modes: dict | None = None) -> pd.DataFrame:
    """One row per setting: seeds and 'mean [lo, hi]' per measure (empty when no measure has a value)."""
    columns = setting_columns(by)
    present = [c for c in measures if c in evidence and evidence[c].notna().any()]
    if evidence.empty or not present:
        return pd.DataFrame()
    rows = evidence[~evidence.diverged & (evidence.has_capability == 1)]
    if rows.empty:
        return pd.DataFrame()
    table = None
    for column in present:
        part = cell_intervals(rows, column, columns, confidence)
        part[measures[column]] = [_text(v, lo, hi, ratio) for v, lo, hi in
                                  zip(part[column], part[f"{column}_lo"], part[f"{column}_hi"])]
        part = part[[*columns, "seeds", measures[column]]]
        table = part if table is None else table.merge(part.drop(columns="seeds"), on=columns, how="outer")
    for column, name in (modes or {}).items():
        found = rows.groupby(columns, sort=False, dropna=False)[column].agg(_mode).rename(name).reset_index()
        table = table.merge(found, on=columns, how="left")
    table = in_setting_order(table, evidence, columns)
    return pd.concat([readable(table, columns), table.drop(columns=columns)], axis=1)


MEASURES = {"pruning": PRUNING, "attention": ATTENTION, "patching": PATCHING}


def missing_note(evidence: pd.DataFrame, name: str) -> str:
    """Why the table of instrument `name` is empty."""
    measures = [c for c in MEASURES[name] if c in evidence]
    if evidence.empty or not any(evidence[c].notna().any() for c in measures):
        if name == "attention" and "attn_tv" in evidence and evidence.attn_tv.notna().any():
            tv = evidence.attn_tv.dropna()
            return (f"the seed-to-seed null is 0 (every pretrained member is the same model): the change against "
                    f"the parent, total variation {tv.mean():.3f} on average over heads (range {tv.min():.3f}-"
                    f"{tv.max():.3f}, {len(tv)} members), has no null to be read against")
        return "no data in the store"
    return "no member of a healthy lineage whose parent had C_PT"


def instrument_tables(evidence: pd.DataFrame, by=(), confidence: float = CONFIDENCE) -> dict[str, pd.DataFrame]:
    """{'pruning', 'attention', 'patching'}: each instrument's table (empty without its data)."""
    return {"pruning": instrument_table(evidence, PRUNING, by, confidence),
            "attention": instrument_table(evidence, ATTENTION, by, confidence, ratio=True),
            "patching": instrument_table(evidence, PATCHING, by, confidence, modes=MODES)}
