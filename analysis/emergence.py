"""What did fine-tuning do to C_PT, and where? The taxonomy's headline for a study.

Per setting (fine-tuning LR x sampling prior x spurious strength, plus any columns the user groups by): how many
fine-tuned members were judged, the count and share of each class (analysis.taxonomy) with its interval, why the
others were not judged, and one sentence naming the dominant class. One sentence for the whole study. And per
class a one-vs-rest logistic regression on log10 fine-tuning LR, log10 sampling prior, C_Tr and every swept scale
column that varies.

The pretraining seed is the unit: the children of one parent, and the parents of one seed, are not independent
draws. Shares get a two-stage cluster-bootstrap interval (seeds, then members within them: stats.
cluster_bootstrap_share) and the regressions seed-clustered standard errors.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from analysis.settings import describe_setting, in_setting_order, predictors, setting_columns
from analysis.stats import CONFIDENCE, LogisticFit, cluster_rate_intervals, clustered_logistic_regression
from analysis.taxonomy import CLASSES, NOT_JUDGED


def _reasons(reasons: pd.Series) -> str:
    """'parent without C_PT (2); diverged lineage (1)' from the members' reason column."""
    counts = reasons[reasons != ""].value_counts()
    return "; ".join(f"{reason} ({count})" for reason, count in counts.items())


def _indicators(evidence: pd.DataFrame) -> pd.DataFrame:
    """The judged members with one 0/1 column per class."""
    judged = evidence[evidence.taxon != NOT_JUDGED]
    return judged.assign(**{c: (judged.taxon == c).astype(float) for c in CLASSES})


def dominant(row) -> list[str]:
    """The classes with the largest count in a setting-table row (several on a tie; none without judged
    members)."""
    if not row.judged:
        return []
    top = max(row[f"{c} k"] for c in CLASSES)
    return [c for c in CLASSES if row[f"{c} k"] == top]


def tie_name(classes) -> str:
    """One name for the dominant class(es) of a setting, everywhere: 'hidden wrapper', or 'tie: reuse / hidden
    wrapper'."""
    return classes[0] if len(classes) == 1 else "tie: " + " / ".join(classes)


def setting_table(evidence: pd.DataFrame, by=(), confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per setting: members, judged, per class `<class> k`, `<class> share`, `_lo`, `_hi`, not_judged
    (reasons) and dominant (the dominant class(es), `tie_name`)."""
    columns = setting_columns(by)
    per_class = [f"{c} {part}" for c in CLASSES for part in ("k", "share", "lo", "hi")]
    if evidence.empty:
        return pd.DataFrame(columns=[*columns, "members", "judged", *per_class, "not_judged", "dominant"])
    grouped = evidence.groupby(columns, sort=False, dropna=False)
    table = pd.DataFrame({"members": grouped.size(), "not_judged": grouped.reason.agg(_reasons)})
    judged = _indicators(evidence)
    table["judged"] = judged.groupby(columns, dropna=False).size().reindex(table.index).fillna(0).astype(int)
    for c in CLASSES:
        rates = cluster_rate_intervals(judged, c, columns, "seed", confidence).set_index(columns) if len(judged) \
            else None
        for part, source in (("k", "k"), ("share", "rate"), ("lo", "rate_lo"), ("hi", "rate_hi")):
            values = rates[source].reindex(table.index) if rates is not None else pd.Series(index=table.index)
            table[f"{c} {part}"] = values.fillna(0).astype(int) if part == "k" else values
    table = table.reset_index()
    table["dominant"] = [tie_name(dominant(r)) if r.judged else "" for _, r in table.iterrows()]
    return in_setting_order(table[[*columns, "members", "judged", *per_class, "not_judged", "dominant"]], evidence,
                            columns)


def _share(k: int, n: int, low: float, high: float, confidence: float) -> str:
    """'3/8 (38%, 95% CI 10%-70%)' (without bounds where there are none: a single seed)."""
    bounds = f", {confidence:.0%} CI {low:.0%}-{high:.0%}" if np.isfinite(low) else ", one seed: no interval"
    return f"{k}/{n} ({k / n:.0%}{bounds})"


def setting_sentences(table: pd.DataFrame, by=(), confidence: float = CONFIDENCE) -> list[str]:
    """One sentence per setting: 'fine-tuning LR medium, prior high, C_Tr 0: HIDDEN WRAPPER — 8/8 (100%, 95% CI
    68%-100%) of the judged members'."""
    columns = setting_columns(by)
    out = []
    for _, row in table.iterrows():
        where = describe_setting(row, columns)
        if not row.judged:
            out.append(f"{where}: NOT JUDGED — {row.not_judged or 'no members'}")
            continue
        top = dominant(row)
        word = tie_name(top).upper()
        others = [f"{c} {row[f'{c} k']}" for c in CLASSES if c not in top and row[f"{c} k"]]
        tail = f"; also {', '.join(others)}" if others else ""
        skipped = f"; {row.members - row.judged} not judged: {row.not_judged}" if row.members > row.judged else ""
        share = _share(row[f"{top[0]} k"], row.judged, row[f"{top[0]} lo"], row[f"{top[0]} hi"], confidence)
        out.append(f"{where}: {word} — {share} of the judged members"
                   f"{' each' if len(top) > 1 else ''}{tail}{skipped}")
    return out


def overall_sentence(evidence: pd.DataFrame, table: pd.DataFrame, shares: pd.DataFrame,
                     confidence: float = CONFIDENCE) -> str:
    """The study's answer in one sentence (`shares`: class_shares)."""
    judged = evidence[evidence.taxon != NOT_JUDGED] if not evidence.empty else evidence
    if judged.empty:
        reasons = _reasons(evidence.reason) if not evidence.empty else ""
        return f"No fine-tuned member could be judged ({reasons or 'no fine-tuned members'})."
    n = len(judged)
    parts = "; ".join(f"{r['class']} {_share(r.k, n, r.lo, r.hi, confidence)}" for _, r in shares.iterrows() if r.k)
    skipped = len(evidence) - n
    skipped = f" ({skipped} not judged: {_reasons(evidence.reason)})" if skipped else ""
    leaders = table.dominant[table.dominant != ""]
    wins = leaders.value_counts()
    where = "; ".join(f"{c} dominates in {wins[c]} of {len(leaders)} settings" for c in wins.index
                      if not c.startswith("tie: "))
    return f"Of {n} judged fine-tuned members{skipped}: {parts}." + (f" By setting, {where}." if where else "")


def class_shares(evidence: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """The whole study's share of each class among the judged members: class, k, n, share, lo, hi (the seed-level
    interval)."""
    judged = _indicators(evidence) if not evidence.empty else pd.DataFrame()
    rows = []
    for c in CLASSES:
        rates = cluster_rate_intervals(judged, c, (), "seed", confidence).iloc[0] if len(judged) else None
        rows.append({"class": c, "k": int(rates.k) if rates is not None else 0, "n": len(judged),
                     **{part: rates[source] if rates is not None else np.nan
                        for part, source in (("share", "rate"), ("lo", "rate_lo"), ("hi", "rate_hi"))}})
    return pd.DataFrame(rows, columns=["class", "k", "n", "share", "lo", "hi"])


def class_regressions(evidence: pd.DataFrame, scales=()) -> dict[str, LogisticFit]:
    """Per class, the one-vs-rest logit over the judged members on the settings (analysis.settings.predictors),
    with standard errors clustered by pretraining seed."""
    judged = _indicators(evidence)
    x = predictors(judged, scales) if len(judged) else pd.DataFrame(index=judged.index)
    seeds = judged.seed if len(judged) else pd.Series(dtype=float)
    return {c: clustered_logistic_regression(judged[c], x, seeds) for c in CLASSES}


@dataclasses.dataclass
class Headline:
    overall: str
    sentences: list[str]
    table: pd.DataFrame
    regressions: dict[str, LogisticFit]
    shares: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # class_shares: the whole study


def headline(evidence: pd.DataFrame, by=(), confidence: float = CONFIDENCE, scales=()) -> Headline:
    table, shares = setting_table(evidence, by, confidence), class_shares(evidence, confidence)
    return Headline(overall_sentence(evidence, table, shares, confidence), setting_sentences(table, by, confidence),
                    table, class_regressions(evidence, scales), shares)
