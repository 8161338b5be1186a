"""The reference study's claims, each tested over seeds with a definite verdict and the power of its test.

Seeds are the unit of replication: a claim reduces to one number per seed (the mean of a member measure over that
seed's counted members), tested with a one-sided Wilcoxon signed-rank test for > 0, Holm-adjusted across the
claims tested. Members counted: the lineage did not diverge, the parent had C_PT, fine-tuning learnt its task (not
a no-op) and the taxonomy could tell whether C_PT was kept or suppressed (whatever it found with the instruments).
  1   small/medium LR, members whose C_PT is suppressed: pruning revives C_PT beyond the random null:
      prune_gain - random-neuron gain over the same levels. Smallest effect of interest (SESOI) +0.05 accuracy.
  2   small/medium LR, members whose C_PT is suppressed: probes still read C_PT beyond the input:
      selectivity(fine-tuned) - 0.9 x selectivity(parent) (selectivity: the best residual layer's
      pretraining-target accuracy minus the control target's there); SESOI 0 (the margin is in the measure).
      Like claims 1 and 3 it reads only suppressed members: a member that kept C_PT in use keeps it readable
      trivially, so over every learnt member the verdict would follow the grid's share of kept members.
  3   small/medium LR, suppressed members: reFT revives C_PT faster than the matched control (LR factor 1) learns
      it: log(control restricted steps / reFT restricted steps), restricted steps = steps if reached, else the
      budget; SESOI log 2.
  4a-c  the same three measures weaken at large LR: per seed, small/medium minus large; the same SESOIs.
Verdicts:
  supported     p(Holm) < alpha and the mean per-seed effect > 0
  refuted       the one-sided upper (1 - alpha) bootstrap bound of the mean per-seed effect is below the SESOI:
                the effect is below the SESOI with 95% confidence
  inconclusive  otherwise
  not tested    with the reason (no data; fine-tuning did not learn at that LR; too few seeds)
Power: the share of simulated replications whose one-sided Wilcoxon p < alpha / (number of claims tested) when the
per-seed values are the observed ones shifted to mean = SESOI (resampled with replacement, as many as the seeds).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from analysis.measures import LARGE, SMALL_MEDIUM
from analysis.stats import CONFIDENCE, PairedTest, bootstrap_upper, holm, paired_test, power, seed_series
from analysis.survival import logrank
from analysis.taxonomy import counted

ALPHA = 0.05
MIN_SEEDS = 2
PROBE_RATIO = 0.9


def _formatter(pattern: str, transform=lambda x: x):
    return lambda x: pattern.format(transform(x)) if np.isfinite(x) else "n/a"


ACCURACY = _formatter("{:+.3f}")
TIMES = _formatter("x{:.2f}", np.exp)  # log ratios shown as ratios


@dataclasses.dataclass(frozen=True)
class Measure:
    """A per-member number that a claim averages per seed."""
    column: str  # column of the evidence (after _derived)
    suppressed_only: bool  # only members whose C_PT fine-tuning suppressed
    evaluation: str  # the evaluation that produces it (for "not tested" reasons)
    sesoi: float  # the smallest effect of interest
    sesoi_text: str
    form: object  # formats an effect


PRUNE = Measure("prune_excess", True, "prune", 0.05, "+0.05 accuracy", ACCURACY)
PROBE = Measure("probe_margin", True, "probe selectivity", 0.0, "0", ACCURACY)
REFT = Measure("log_speedup", True, "reft and control_reft", float(np.log(2)), "x2 (log 2)", TIMES)


@dataclasses.dataclass
class ClaimResult:
    id: str
    claim: str
    measure: str  # what one seed's number is
    sesoi: float
    sesoi_text: str
    test: PairedTest | None
    values: pd.Series  # the per-seed numbers tested
    effect_text: str = ""  # the effect with its interval, in the measure's natural units
    upper: float = np.nan  # the one-sided upper (1 - alpha) bootstrap bound of the effect
    detail: str = ""  # supporting numbers (counts, nulls)
    reason: str = ""  # why it was not tested
    power: float = np.nan
    power_text: str = ""
    p_holm: float = np.nan
    verdict: str = ""


def _eligible(evidence: pd.DataFrame, regime: str, m: Measure) -> pd.DataFrame:
    rows = counted(evidence)
    rows = rows[rows.lr_regime == regime]
    if m.suppressed_only:
        rows = rows[rows.suppressed == 1]
    return rows.dropna(subset=[m.column])


def _untested(evidence: pd.DataFrame, regime: str, m: Measure) -> str:
    """Why a claim on `m` in `regime` cannot be tested ('' if it can)."""
    mine = evidence[evidence.lr_regime == regime]
    if mine.empty:
        return f"no fine-tuned members at {regime} LR"
    healthy = mine[~mine.diverged & (mine.has_capability == 1)]
    if healthy.empty:
        return f"no {regime}-LR member whose parent had C_PT and whose lineage did not diverge"
    if healthy.learnt.isna().all():
        return f"no {regime}-LR member with a known fine-tuning outcome"
    if not (healthy.learnt == 1).any():
        return f"fine-tuning did not learn C_FT at {regime} LR: no member to test"
    rows = counted(mine)
    if rows[m.column].isna().all():
        return f"no {m.evaluation} results for {regime}-LR members"
    if m.suppressed_only and not (rows.suppressed == 1).any():
        return f"fine-tuning at {regime} LR suppressed C_PT in no member: nothing to revive"
    seeds = _eligible(evidence, regime, m).seed.nunique()
    if seeds < MIN_SEEDS:
        return f"{seeds} seed(s) with data at {regime} LR; at least {MIN_SEEDS} needed"
    return ""


def _derived(evidence: pd.DataFrame) -> pd.DataFrame:
    return evidence.assign(probe_margin=evidence.sel_finetuned - PROBE_RATIO * evidence.sel_pretrained)


def _mean(values) -> str:
    values = pd.Series(values, dtype=float).dropna()
    return f"{values.mean():+.3f}" if len(values) else "n/a"


def _reft_logrank(rows: pd.DataFrame) -> str:
    """'log-rank reFT vs control: chi2 4.1, p 0.04' over the rows' reFT children and their (distinct) controls."""
    reft = rows[["reft_steps", "reft_reached", "reft_budget"]].set_axis(["steps", "reached", "budget"], axis=1)
    control = rows.drop_duplicates("control")[["control_steps", "control_reached", "control_budget"]]
    control = control.set_axis(["steps", "reached", "budget"], axis=1)
    runs = pd.concat([reft.assign(arm="reFT"), control.assign(arm="control")], ignore_index=True).dropna(
        subset=["reached"])
    test = logrank(runs.steps.fillna(runs.budget), runs.reached, runs.arm)
    if test.reason:
        return f"log-rank reFT vs control: {test.reason}"
    return f"log-rank reFT vs control ({test.n} runs): chi2 {test.statistic:.2f}, p {test.p:.3g}"


def _detail(claim_id: str, rows: pd.DataFrame) -> str:
    if claim_id == "1":
        revived = int((rows.revived_by_pruning == 1).sum())
        return (f"{len(rows)} suppressed members; mean C_PT gain targeted {_mean(rows.prune_gain)}, random neurons "
                f"{_mean(rows.prune_random_gain)}, targeted on the control {_mean(rows.prune_control_gain)}; beyond "
                f"T_prune in {revived}")
    if claim_id == "2":
        return (f"{len(rows)} suppressed members; mean selectivity fine-tuned {_mean(rows.sel_finetuned)}, parent "
                f"{_mean(rows.sel_pretrained)}; nulls: untrained {_mean(rows.sel_init)}, control (never had C_PT) "
                f"{_mean(rows.sel_control)}")
    reached = rows.reft_reached.mean(), rows.control_reached.mean()
    return (f"{len(rows)} suppressed members; threshold reached by {reached[0]:.0%} of reFT runs and "
            f"{reached[1]:.0%} of matched controls; {_reft_logrank(rows)}")


def _interval(test: PairedTest, form) -> str:
    if not np.isfinite(test.effect_lo):
        return form(test.effect)
    return f"{form(test.effect)} [{form(test.effect_lo)}, {form(test.effect_hi)}]"


SPECS = [
    ("1", "Small/medium-LR fine-tuning: pruning a few units revives the suppressed C_PT beyond the random null",
     "mean C_PT gain over the pruning budget, targeted minus random neurons, members with C_PT suppressed", PRUNE),
    ("2", "Probes still read the suppressed C_PT's target beyond the input after small/medium-LR fine-tuning",
     f"probe selectivity: fine-tuned - {PROBE_RATIO:g} x pretrained parent, members with C_PT suppressed", PROBE),
    ("3", "reFT revives the suppressed C_PT faster than the control that never had it learns it",
     "log(control / reFT restricted steps to the C_PT threshold), members with C_PT suppressed; effect shown as "
     "the ratio", REFT),
]
WEAKENING = [("4a", "pruning revival (claim 1)", PRUNE), ("4b", "probe selectivity (claim 2)", PROBE),
             ("4c", "reFT speed-up (claim 3)", REFT)]


def _one_regime(evidence: pd.DataFrame, confidence: float) -> list[ClaimResult]:
    out = []
    for claim_id, claim, description, m in SPECS:
        result = ClaimResult(claim_id, claim, description, m.sesoi, m.sesoi_text, None, pd.Series(dtype=float))
        result.reason = _untested(evidence, SMALL_MEDIUM, m)
        if not result.reason:
            rows = _eligible(evidence, SMALL_MEDIUM, m)
            result.values = seed_series(rows, m.column)
            result.test = paired_test(result.values, confidence)
            result.effect_text = _interval(result.test, m.form)
            result.detail = _detail(claim_id, rows)
        out.append(result)
    return out


def _weakening(evidence: pd.DataFrame, confidence: float) -> list[ClaimResult]:
    out = []
    for claim_id, what, m in WEAKENING:
        description = f"the measure of {what}: small/medium LR minus large LR, per seed"
        result = ClaimResult(claim_id, f"With a large LR the effect weakens: {what}", description, m.sesoi,
                             m.sesoi_text, None, pd.Series(dtype=float))
        result.reason = _untested(evidence, SMALL_MEDIUM, m) or _untested(evidence, LARGE, m)
        if not result.reason:
            small = seed_series(_eligible(evidence, SMALL_MEDIUM, m), m.column)
            large = seed_series(_eligible(evidence, LARGE, m), m.column)
            difference = (small - large).dropna()
            if len(difference) < MIN_SEEDS:
                result.reason = f"{len(difference)} seed(s) with data at both small/medium and large LR"
            else:
                result.values = difference
                result.test = paired_test(difference, confidence)
                result.effect_text = _interval(result.test, m.form)
                result.detail = (f"mean over seeds {m.form(small.mean())} at small/medium vs {m.form(large.mean())} "
                                 "at large LR")
        out.append(result)
    return out


def judge(result: ClaimResult, alpha: float, tested: int, form=ACCURACY) -> None:
    """The verdict, the upper bound and the power of a tested claim (p_holm set)."""
    test, values = result.test, result.values
    level = alpha / max(tested, 1)
    result.upper = bootstrap_upper(values, 1 - alpha)
    result.power = power(values, result.sesoi, level)
    n = len(values.dropna())
    result.power_text = f"power {result.power:.2f} to detect {result.sesoi_text} with {n} seeds"
    if result.sesoi == 0:
        result.power_text += " (SESOI 0: the margin is in the measure, so this is the test's rate at the margin)"
    if 0.5 ** n >= level:
        result.power_text += (f"; with {n} seeds the smallest attainable p, {0.5 ** n:.3g}, is not below "
                              f"alpha / {max(tested, 1)} = {level:.3g}")
    if result.p_holm < alpha and test.effect > 0:
        result.verdict = "supported"
        if result.upper < result.sesoi:
            result.detail += (f"; the effect is positive but below the SESOI ({result.sesoi_text}) with "
                              f"{1 - alpha:.0%} confidence")
    elif result.upper < result.sesoi:
        result.verdict = "refuted"
        result.detail = (result.detail + "; " if result.detail else "") + (
            f"the effect is below the SESOI ({result.sesoi_text}) with {1 - alpha:.0%} confidence (upper bound "
            f"{form(result.upper)})")
    else:
        result.verdict = "inconclusive"


def evaluate_claims(evidence: pd.DataFrame, alpha: float = ALPHA, confidence: float = CONFIDENCE) -> list[ClaimResult]:
    """Claims 1-4 on the taxonomy's evidence (analysis.taxonomy), Holm-adjusted, with verdicts and power."""
    evidence = _derived(evidence) if not evidence.empty else evidence.assign(probe_margin=np.nan)
    results = _one_regime(evidence, confidence) + _weakening(evidence, confidence)
    adjusted = holm([r.test.p if r.test else np.nan for r in results])
    tested = sum(r.test is not None for r in results)
    forms = {spec[0]: spec[3].form for spec in SPECS} | {w[0]: w[2].form for w in WEAKENING}
    for result, p in zip(results, adjusted):
        result.p_holm = p
        if result.test is None:
            result.verdict = f"not tested ({result.reason})"
        else:
            judge(result, alpha, tested, forms[result.id])
    return results
