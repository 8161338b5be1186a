"""How fast does reFT revive C_PT? Survival analysis of steps to the revival threshold, reFT against the control.

The runs: the reFT children of the members whose C_PT fine-tuning suppressed (the ones with something to revive;
counted as the claims count them, analysis.taxonomy.counted), censored at the reFT budget, and their matched
controls (models that never had C_PT, trained on it at the lineage's reFT LR x each control LR factor, each control
once per cell). Per fine-tuning LR, and per fine-tuning LR x prior:
  Kaplan-Meier curves (analysis.survival) per arm, their median and restricted mean to the budget
  the log-rank test reFT against the control at factor 1, per fine-tuning LR
  a Cox regression of the reFT children's revival on log10 fine-tuning LR, log10 prior, C_Tr and every varying
  scale column (hazard ratio > 1: faster revival)
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from analysis.load import Study
from analysis.measures import censored_steps, matched_controls
from analysis.settings import in_setting_order, predictors
from analysis.survival import CoxFit, cox_regression, kaplan_meier, logrank, median_time, restricted_mean
from analysis.taxonomy import counted

CELLS = ["finetune_lr_label", "prior_label"]
REFT_ARM = "reFT"


def control_arm(factor: float) -> str:
    return f"control x{factor:g}"


def control_factors(study: Study) -> list[float]:
    return sorted(study.members.control_lr_factor.dropna().unique().tolist())


def revival_runs(study: Study, evidence: pd.DataFrame, scales=()) -> pd.DataFrame:
    """One row per run: arm, the cell (fine-tuning LR, prior), run id, steps (the budget where not reached),
    reached, budget; the reFT rows also carry the lineage's settings (and `scales` columns) for the Cox fit."""
    rows = counted(evidence) if not evidence.empty else evidence
    columns = ["arm", *CELLS, "run", "steps", "reached", "budget", "finetune_lr", "prior", "spurious", *scales]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows[(rows.suppressed == 1) & rows.reft_reached.notna()]
    reft = rows.assign(arm=REFT_ARM, run=rows.reft, steps=rows.reft_steps.fillna(rows.reft_budget),
                       reached=rows.reft_reached, budget=rows.reft_budget)
    frames = [reft[columns]]
    steps = censored_steps(study, "control_reft")
    for factor in control_factors(study):
        ids = matched_controls(study, rows, factor)
        control = rows[CELLS].assign(arm=control_arm(factor), run=ids).dropna(subset=["run"])
        control = control.drop_duplicates([*CELLS, "run"]).join(steps, on="run")
        frames.append(control.assign(steps=control.steps.fillna(control.budget)).reindex(columns=columns))
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def curve_table(runs: pd.DataFrame, cells) -> pd.DataFrame:
    """Per cell and arm: runs, revived, the median steps to revival and the restricted mean to the budget (a control
    matched to several lineages of a cell counts once)."""
    cells = list(cells)
    rows = []
    runs = runs.drop_duplicates([*cells, "arm", "run"])
    for key, group in runs.groupby([*cells, "arm"], sort=False):
        km = kaplan_meier(group.steps, group.reached)
        budget = float(group.budget.max())
        rows.append({**dict(zip([*cells, "arm"], key)), "runs": len(group), "revived": int(group.reached.sum()),
                     "median steps": median_time(km), "restricted mean steps": restricted_mean(km, budget),
                     "budget": budget})
    return pd.DataFrame(rows, columns=[*cells, "arm", "runs", "revived", "median steps", "restricted mean steps",
                                       "budget"])


def logrank_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per fine-tuning LR: the log-rank test reFT against the control at LR factor 1."""
    rows = []
    runs = runs.drop_duplicates(["finetune_lr_label", "arm", "run"])
    for lr, group in runs.groupby("finetune_lr_label", sort=False):
        pair = group[group.arm.isin([REFT_ARM, control_arm(1.0)])]
        test = logrank(pair.steps, pair.reached, pair.arm)
        rows.append({"finetune_lr_label": lr, "runs": test.n, "revivals": test.events, "chi2": test.statistic,
                     "p": test.p, "note": test.reason})
    return pd.DataFrame(rows, columns=["finetune_lr_label", "runs", "revivals", "chi2", "p", "note"])


def reft_cox(runs: pd.DataFrame, scales=()) -> CoxFit:
    reft = runs[runs.arm == REFT_ARM].reset_index(drop=True)
    return cox_regression(reft.steps.to_numpy(float), reft.reached.to_numpy(float), predictors(reft, scales))


@dataclasses.dataclass
class Revival:
    runs: pd.DataFrame
    by_lr: pd.DataFrame  # curve_table per fine-tuning LR
    by_prior: pd.DataFrame  # curve_table per fine-tuning LR x prior
    logrank: pd.DataFrame
    cox: CoxFit


def revival(study: Study, evidence: pd.DataFrame, scales=()) -> Revival:
    runs = revival_runs(study, evidence, scales)
    order = evidence if not evidence.empty else None

    def ordered(table, cells):
        return in_setting_order(table, order, cells) if order is not None and not table.empty else table
    by_lr = ordered(curve_table(runs, ["finetune_lr_label"]), ["finetune_lr_label"])
    by_prior = ordered(curve_table(runs, CELLS), CELLS)
    tests = ordered(logrank_table(runs), ["finetune_lr_label"])
    cox = reft_cox(runs, scales) if not runs.empty else CoxFit("no suppressed member with a reFT child", 0, 0)
    return Revival(runs, by_lr, by_prior, tests, cox)


def km_steps(runs: pd.DataFrame) -> dict:
    """{(LR label, arm): Kaplan-Meier frame} for the figure."""
    runs = runs.drop_duplicates(["finetune_lr_label", "arm", "run"])
    return {key: kaplan_meier(group.steps, group.reached)
            for key, group in runs.groupby(["finetune_lr_label", "arm"], sort=False)}


def _number(column: str, value) -> str:
    if not np.isfinite(value):
        return "not reached" if column == "median steps" else "n/a"
    return f"{value:.3g}" if column == "p" else f"{value:g}" if column == "median steps" else f"{value:.1f}"


def display(table: pd.DataFrame) -> pd.DataFrame:
    """Readable column names and numbers (a median never reached within the budget says so)."""
    out = table.rename(columns={"finetune_lr_label": "fine-tuning LR", "prior_label": "prior"})
    for column in ("median steps", "restricted mean steps", "chi2", "p"):
        if column in out:
            out[column] = [_number(column, v) for v in out[column].astype(float)]
    return out
