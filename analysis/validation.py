"""The instruments on planted truth: before a verdict is trusted, each instrument is read on members whose answer is
known (fttrace/answer/planted.py).

  true nulls / planted overwrites  the matched nulls fine-tuned (never had C_PT; same query mix, budgets and
                   fine-tuning as the seed's lowest-prior members, the same C_FT reached), judged against their real
                   twin's parent's C_PT
  planted wrappers the lowest-prior members fine-tuned with every parameter frozen but the last layer's output
                   side: C_PT intact up to the last MLP's units, its read-out re-mapped
  untouched        the real members that met the fine-tuning criterion at step 0
Per instrument (pruning, reFT, and "either", the taxonomy's revival by pruning or reFT):
  false-positive rate  the share of true nulls judged revived, out of sample: each seed's nulls against the
                   thresholds (taxonomy.matched_nulls) of the other seeds' nulls (leave one seed out), with its exact
                   (Clopper-Pearson) interval and n; FLAG where n < MIN_NULLS (too few for a 5% quantile) or the
                   exact one-sided binomial test says the rate exceeds 1 - null_quantile (p < 0.05)
  power            the share of planted wrappers whose C_PT fine-tuning suppressed that the instrument revives
                   (against the thresholds of every null), with its interval and n
and the taxonomy's classes of each kind of planted member (the planted overwrites judged out of sample, as above).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy import stats

from analysis.load import Study
from analysis.measures import lineage_measures
from analysis.regime import REQUIREMENTS, Requirements, member_regime
from analysis.taxonomy import CLASSES, NOT_JUDGED, Parameters, Taxonomy, classify, matched_nulls, \
    null_measures

WRAPPER_KIND = "planted_wrapper"
MIN_NULLS = 40  # true nulls needed to estimate a 5% quantile at all
FLAG_P = 0.05  # the one-sided binomial test's level for a false-positive rate above nominal
INSTRUMENTS = {"pruning": ("revived_by_pruning",), "reFT": ("revived_by_reft",),
               "either": ("revived_by_pruning", "revived_by_reft")}


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact binomial interval of k / n (NaN without trials)."""
    if n == 0:
        return np.nan, np.nan
    found = stats.binomtest(int(k), int(n)).proportion_ci(confidence, method="exact")
    return float(found.low), float(found.high)


def revived(judged: pd.DataFrame, instrument: str) -> pd.Series:
    """1/0 per row where every indicator the instrument reads is known (NaN elsewhere)."""
    columns = [judged[c] for c in INSTRUMENTS[instrument]]
    known = np.logical_and.reduce([c.notna() for c in columns])
    hit = np.logical_or.reduce([c == 1 for c in columns])
    return pd.Series(np.where(known, hit.astype(float), np.nan), index=judged.index)


def out_of_sample(nulls: pd.DataFrame, random: np.ndarray, p: Parameters, target: float,
                  parents: pd.DataFrame | None) -> pd.DataFrame:
    """The matched nulls, each seed judged against the nulls of the other seeds (classify's columns)."""
    frames = []
    for seed, mine in nulls.groupby("seed", sort=True):
        others = matched_nulls(nulls[nulls.seed != seed], random, p)
        frames.append(classify(mine, others, p, target, parents))
    return pd.concat(frames) if frames else nulls.iloc[:0]


def _rate(values: pd.Series, confidence: float) -> dict:
    values = values.dropna()
    k, n = int(values.sum()), len(values)
    lo, hi = clopper_pearson(k, n, confidence)
    return dict(k=k, n=n, rate=k / n if n else np.nan, lo=lo, hi=hi)


@dataclasses.dataclass
class Validation:
    instruments: pd.DataFrame  # per instrument: false-positive rate and power, counts, intervals, flag
    classes: pd.DataFrame  # per kind of planted member: members and the count of each class
    nominal: float  # the false-positive rate the thresholds are set for: 1 - null_quantile

    @property
    def empty(self) -> bool:
        return self.instruments.empty

    def display(self) -> pd.DataFrame:
        """Readable rows: 'k/n = rate [lo, hi]' for the false-positive rate and the power."""
        def text(r, name):
            if not r[f"{name}_n"]:
                return "n/a (none)"
            return (f"{r[f'{name}_k']}/{r[f'{name}_n']} = {r[f'{name}_rate']:.0%} "
                    f"[{r[f'{name}_lo']:.0%}, {r[f'{name}_hi']:.0%}]")
        return pd.DataFrame({"instrument": self.instruments.instrument,
                             "false positives on true nulls (out of sample)": [
                                 text(r, "fpr") for _, r in self.instruments.iterrows()],
                             "power on planted wrappers": [text(r, "power") for _, r in self.instruments.iterrows()],
                             "flag": self.instruments.flag})

    def lines(self) -> list[str]:
        if self.empty:
            return ["  no members of known answer in the store (evaluation 'planted' not run)"]
        out = [f"Per instrument: false-positive rate on the matched nulls fine-tuned (each seed against the other "
               f"seeds' thresholds; nominal {self.nominal:.0%}) and power on the planted wrappers whose C_PT was "
               f"suppressed; exact 95% intervals:", self.display().to_string(index=False),
               "Classes of the planted members (the taxonomy, as for the real members):",
               self.classes.to_string(index=False)]
        return out


def flag(fpr: dict, nominal: float) -> str:
    if fpr["n"] < MIN_NULLS:
        return f"FLAG: {fpr['n']} nulls (< {MIN_NULLS})"
    if fpr["n"] and stats.binomtest(fpr["k"], fpr["n"], nominal, alternative="greater").pvalue < FLAG_P:
        return f"FLAG: above {nominal:.0%}"
    return ""


def class_counts(judged: pd.DataFrame, kind: str) -> dict:
    counts = judged.taxon.value_counts()
    row = {"planted": kind, "members": len(judged)}
    row.update({c: int(counts.get(c, 0)) for c in (*CLASSES, NOT_JUDGED)})
    return row


def validate(study: Study, found: Taxonomy, requirements: Requirements = REQUIREMENTS,
             confidence: float = 0.95) -> Validation:
    """Every instrument's false-positive rate and power on the study's planted members (module docstring)."""
    p, target = found.parameters, found.target
    nominal = 1 - p.null_quantile
    nulls = null_measures(study, p)
    if nulls.empty:
        return Validation(pd.DataFrame(), pd.DataFrame(), nominal)
    parents = member_regime(study, requirements)
    random = found.nulls.prune_random
    judged_nulls = out_of_sample(nulls, random, p, target, parents)
    wrappers = lineage_measures(study, p.prune_method, p.prune_fraction, p.prune_units, p.control_lr_factor,
                                planted=WRAPPER_KIND)
    judged_wrappers = classify(wrappers, found.nulls, p, target, parents) if len(wrappers) else wrappers
    healthy_nulls = judged_nulls[~judged_nulls.diverged.astype(bool)]
    suppressed = judged_wrappers[(judged_wrappers.get("taxon", pd.Series(dtype=str)).isin(
        ["hidden wrapper", "overwrite"]))] if len(judged_wrappers) else judged_wrappers
    rows = []
    for instrument in INSTRUMENTS:
        fpr = _rate(revived(healthy_nulls, instrument), confidence)
        power = _rate(revived(suppressed, instrument), confidence) if len(suppressed) else _rate(pd.Series(
            dtype=float), confidence)
        rows.append({"instrument": instrument, **{f"fpr_{k}": v for k, v in fpr.items()},
                     **{f"power_{k}": v for k, v in power.items()}, "flag": flag(fpr, nominal)})
    classes = [class_counts(judged_nulls, "overwrite (matched null fine-tuned)")]
    if len(judged_wrappers):
        classes.append(class_counts(judged_wrappers, "wrapper (output side re-mapped)"))
    untouched = found.evidence[found.evidence.untouched == 1]
    classes.append(class_counts(untouched, "untouched (criterion met at step 0)"))
    return Validation(pd.DataFrame(rows), pd.DataFrame(classes), nominal)
