"""Where did a wrapper emerge? The headline of a study.

Per setting (fine-tuning LR x sampling prior x spurious strength, plus any columns the user groups by): how many
fine-tuned members could be judged, the wrapper rate with its Wilson interval, the rate of each criterion, C_PT
before and after fine-tuning, the reFT speed-up of the members that lost C_PT (geometric mean over seeds,
bootstrap interval), and a verdict:
  yes           the interval lies above 1/2: most members of this setting form a wrapper
  no            the interval lies below 1/2
  inconclusive  the interval contains 1/2 (more seeds would decide)
  not judged    no member could be judged (the reason is given)
And the logistic regression of the indicator on log fine-tuning LR, log sampling prior and spurious strength.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from analysis.stats import CONFIDENCE, LogisticFit, cell_intervals, logistic_regression, rate_intervals
from analysis.wrapper import CRITERIA, CRITERION_NAMES

SETTING = ("finetune_lr_label", "prior_label", "spurious")
COLUMN_NAMES = {"finetune_lr_label": "fine-tuning LR", "prior_label": "prior", "spurious": "C_Tr"}
# Sort keys of the label columns: LRs small -> large, priors high -> low.
SORT_KEYS = {"finetune_lr_label": ("finetune_lr", 1), "prior_label": ("prior", -1)}


def setting_columns(by=()) -> list[str]:
    return [*SETTING, *(c for c in by if c not in SETTING)]


def in_setting_order(table: pd.DataFrame, source: pd.DataFrame, columns) -> pd.DataFrame:
    """Rows sorted by each setting column's meaning (LR value, prior value descending), not alphabetically."""
    keys = {}
    for column in columns:
        if column in SORT_KEYS:
            value, sign = SORT_KEYS[column]
            order = source.groupby(column)[value].first() * sign
            keys[column] = table[column].map(order)
        else:
            keys[column] = table[column]
    order = pd.DataFrame(keys).sort_values(list(columns), kind="stable").index
    return table.loc[order].reset_index(drop=True)


def describe_setting(row, columns) -> str:
    parts = []
    for column in columns:
        value = row[column]
        value = f"{value:g}" if isinstance(value, float) else value
        parts.append(f"{COLUMN_NAMES.get(column, column)} {value}")
    return ", ".join(parts)


def verdict(n: int, low: float, high: float) -> str:
    if n == 0:
        return "not judged"
    if low > 0.5:
        return "yes"
    if high < 0.5:
        return "no"
    return "inconclusive"


TABLE_COLUMNS = ["k", "n", "rate", "rate_lo", "rate_hi", "members", "left_out", *(f"{c}_rate" for c in CRITERIA),
                 "pt_acc_pretrained", "pt_acc_finetuned", "ft_acc_finetuned", "reft_speedup", "reft_speedup_lo",
                 "reft_speedup_hi", "verdict"]


def _reasons(left_out: pd.Series) -> str:
    """'parent without C_PT (2); diverged (1)' from the members' left_out column."""
    counts = left_out[left_out != ""].value_counts()
    return "; ".join(f"{reason} ({count})" for reason, count in counts.items())


def setting_table(evidence: pd.DataFrame, by=(), confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per setting: counts, wrapper rate and interval, criteria rates, C_PT, speed-up, verdict."""
    columns = setting_columns(by)
    if evidence.empty:
        return pd.DataFrame(columns=[*columns, *TABLE_COLUMNS])
    table = rate_intervals(evidence, "wrapper", columns, confidence)
    judged = evidence[evidence.left_out == ""]
    grouped = evidence.groupby(columns, sort=False, dropna=False)
    extra = pd.DataFrame({"members": grouped.size()})
    extra["left_out"] = grouped.left_out.agg(_reasons)
    for criterion in CRITERIA:
        extra[f"{criterion}_rate"] = judged.groupby(columns, dropna=False)[criterion].mean()
    for value in ("pt_acc_pretrained", "pt_acc_finetuned", "ft_acc_finetuned"):
        extra[value] = grouped[value].mean()
    table = table.join(extra, on=columns)
    # Only a member that lost C_PT has something to revive; one that kept it would show the control's budget.
    speedup = cell_intervals(judged[judged.lost == 1], "reft_speedup", columns, confidence,
                             log=True).drop(columns="seeds")
    table = table.merge(speedup, on=columns, how="left")
    table["verdict"] = [verdict(r.n, r.rate_lo, r.rate_hi) for r in table.itertuples()]
    return in_setting_order(table, evidence, columns)


def verdict_sentences(table: pd.DataFrame, by=(), confidence: float = CONFIDENCE) -> list[str]:
    """One sentence per setting: 'fine-tuning LR medium, prior high, C_Tr 0: YES — 8/8 (100%, 95% CI 68%-100%)',
    wrappers among the judged members."""
    columns = setting_columns(by)
    out = []
    for _, row in table.iterrows():
        where = describe_setting(row, columns)
        if row.verdict == "not judged":
            out.append(f"{where}: NOT JUDGED — {row.left_out or 'no members'}")
            continue
        out.append(f"{where}: {row.verdict.upper()} — {row.k}/{row.n} ({row.rate:.0%}, {confidence:.0%} CI "
                   f"{row.rate_lo:.0%}-{row.rate_hi:.0%})")
    return out


def overall_sentence(evidence: pd.DataFrame, table: pd.DataFrame, by=(), confidence: float = CONFIDENCE) -> str:
    """The study's answer in one sentence."""
    judged = evidence.wrapper.dropna()
    if judged.empty:
        return f"No fine-tuned member could be judged ({_reasons(evidence.left_out) or 'no fine-tuned members'})."
    o = rate_intervals(evidence.assign(all=""), "wrapper", ["all"], confidence).iloc[0]
    interval = f"{confidence:.0%} CI {o.rate_lo:.0%}-{o.rate_hi:.0%}"
    if o.k == 0:
        answer = f"No wrapper emerged: none of {o.n} judged fine-tuned members meets every criterion ({interval})"
    else:
        answer = f"A wrapper emerged in {o.k} of {o.n} judged fine-tuned members ({o.rate:.0%}, {interval})"
    yes = table[table.verdict == "yes"]
    columns = setting_columns(by)
    if yes.empty:
        where = "no setting shows one in most of its members at this confidence"
    else:
        where = "in most members under " + "; ".join(describe_setting(r, columns) for _, r in yes.iterrows())
    judged = evidence[evidence.left_out == ""]
    met = {c: judged[c].mean() for c in CRITERIA if judged[c].notna().any()}
    rarest = min(met, key=met.get) if met else None
    limit = f" The criterion met least often: {CRITERION_NAMES[rarest]} ({met[rarest]:.0%} of judged members)." \
        if rarest is not None and o.k < o.n else ""
    return f"{answer}; {where}.{limit}"


PREDICTORS = {"log10 fine-tuning LR": "finetune_lr", "log10 sampling prior": "prior", "spurious C_Tr": "spurious"}


def emergence_regression(evidence: pd.DataFrame) -> LogisticFit:
    """Logit of the wrapper indicator on log10 fine-tuning LR, log10 sampling prior and spurious strength."""
    x = pd.DataFrame(index=evidence.index)
    for name, column in PREDICTORS.items():
        values = evidence[column].astype(float)
        x[name] = np.log10(values.where(values > 0)) if name.startswith("log10") else values
    # A predictor with no value at all (a prior of 0 everywhere: a compiled model, never pretrained on data) is left
    # out rather than emptying the fit.
    return logistic_regression(evidence.wrapper, x.loc[:, x.notna().any()])


@dataclasses.dataclass
class Headline:
    overall: str
    sentences: list[str]
    table: pd.DataFrame
    regression: LogisticFit


def headline(evidence: pd.DataFrame, by=(), confidence: float = CONFIDENCE) -> Headline:
    table = setting_table(evidence, by, confidence)
    return Headline(overall_sentence(evidence, table, by, confidence), verdict_sentences(table, by, confidence),
                    table, emergence_regression(evidence))
