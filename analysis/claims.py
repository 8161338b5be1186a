"""The reference study's claims, each tested over seeds with a definite verdict and the power of its test.

Seeds are the unit of replication: a claim reduces to one number per seed (the mean of a member measure over that
seed's counted members, or over its pairs of siblings), tested with an exact one-sided Wilcoxon signed-rank test for
> 0 (`stats.signed_rank_p`: the sign-flip distribution over the observed |values|, exact with ties and zeros),
Holm-adjusted across the claims tested. Members counted: the lineage did not diverge, the parent had C_PT,
fine-tuning learnt its task (not a no-op) and the taxonomy could tell whether C_PT was kept or suppressed (whatever
it found with the instruments). Claims 1-3 read only suppressed members: where C_PT was kept there is nothing to
revive and it is readable trivially, so over every learnt member a verdict would follow the grid's share of kept
members.
  1   small/medium LR: pruning revives C_PT beyond the random null: prune_gain - random-neuron gain over the same
      levels. Smallest effect of interest (SESOI) +0.05 accuracy.
  2   small/medium LR: probes read C_PT beyond the input: selectivity(fine-tuned) - the larger of the selectivities
      of the two models that read only the input, the control that never had C_PT (same seed) and the untrained
      model (same initialisation) (selectivity: the best residual layer's pretraining-target accuracy minus the
      control target's there). SESOI +0.05. The parent's selectivity is shown beside it.
  3   small/medium LR: reFT revives C_PT faster than the matched control (LR factor 1) learns it:
      log(control restricted steps / reFT restricted steps), restricted steps = steps if reached, else the budget;
      SESOI log 2.
  4a-c  the same three measures weaken at large LR, sibling against sibling: every small/medium-LR child minus the
      large-LR child of the same pretrained parent with the same C_Tr (and swept fine-tuning hyperparameters), both
      counted and suppressed; the pairs' differences averaged per seed; the same SESOIs.
Verdicts, each family-wise error rate held at alpha by Holm over the claims tested:
  untestable at this n (k non-zero of n)  the exact test cannot get below the level of the Holm step it gets (tied
                p-values share the strictest step of their tie): with k non-zero per-seed values its smallest p is
                2^-k (the signed-rank test drops zeros)
  supported     p(Holm) < alpha and the mean per-seed effect > 0 (where the equivalence test rejects too, the detail
                says the effect is positive but below the SESOI)
  refuted       an equivalence test: the one-sided signed-rank test that SESOI - per-seed value > 0 has p(Holm) <
                alpha (Holm over the claims' equivalence tests, as over their tests for > 0)
  inconclusive  otherwise, among them an equivalence test with too few seeds to reject
  not tested    with the reason (no data; fine-tuning did not learn at that LR; too few seeds)
Power (`stats.signed_rank_power`): exact, no simulation: the probability that the test actually run (the observed
|values|, their zeros and ties) gets below the level of its Holm step when the per-seed values are normal around the
SESOI with their observed spread.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from analysis.measures import LARGE, SMALL_MEDIUM
from analysis.settings import swept_axes
from analysis.stats import CONFIDENCE, PairedTest, holm, paired_test, seed_series, signed_rank_power
from analysis.survival import logrank
from analysis.taxonomy import counted

ALPHA = 0.05
MIN_SEEDS = 2


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
PROBE = Measure("probe_excess", True, "probe selectivity (fine-tuned, control and untrained)", 0.05,
                "+0.05 selectivity", ACCURACY)
REFT = Measure("log_speedup", True, "reft and control_reft", float(np.log(2)), "x2 (log 2)", TIMES)


@dataclasses.dataclass
class ClaimResult:
    id: str
    claim: str
    measure: str  # what one seed's number is
    sesoi: float
    sesoi_text: str
    test: PairedTest | None  # the test for > 0
    values: pd.Series  # the per-seed numbers tested
    equivalence: PairedTest | None = None  # the test of SESOI - value > 0
    effect_text: str = ""  # the effect with its interval, in the measure's natural units
    detail: str = ""  # supporting numbers (counts, nulls)
    reason: str = ""  # why it was not tested
    power: float = np.nan
    power_text: str = ""
    p_holm: float = np.nan
    level: float = np.nan  # the level of the Holm step its test gets: alpha / the tests not yet passed
    p_equivalence_holm: float = np.nan
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
    """The probe measure: selectivity beyond the larger of the input-only nulls (NaN where either is missing)."""
    return evidence.assign(probe_excess=evidence.sel_finetuned - np.maximum(evidence.sel_control, evidence.sel_init))


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
        return (f"{len(rows)} suppressed members; mean selectivity fine-tuned {_mean(rows.sel_finetuned)}; the "
                f"input-only nulls: control (never had C_PT) {_mean(rows.sel_control)}, untrained "
                f"{_mean(rows.sel_init)}; the pretrained parent {_mean(rows.sel_pretrained)}")
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
     "probe selectivity: fine-tuned - max(control that never had C_PT, untrained model), members with C_PT "
     "suppressed", PROBE),
    ("3", "reFT revives the suppressed C_PT faster than the control that never had it learns it",
     "log(control / reFT restricted steps to the C_PT threshold), members with C_PT suppressed; effect shown as "
     "the ratio", REFT),
]
WEAKENING = [("4a", "pruning revival (claim 1)", PRUNE), ("4b", "probe selectivity (claim 2)", PROBE),
             ("4c", "reFT speed-up (claim 3)", REFT)]


def _tested(result: ClaimResult, values: pd.Series, form, confidence: float) -> None:
    """The test for > 0 and the equivalence test (SESOI - value > 0) of the per-seed values."""
    result.values = values
    result.test = paired_test(values, confidence)
    result.equivalence = paired_test(result.sesoi - values, confidence)
    result.effect_text = _interval(result.test, form)


def _one_regime(evidence: pd.DataFrame, confidence: float) -> list[ClaimResult]:
    out = []
    for claim_id, claim, description, m in SPECS:
        result = ClaimResult(claim_id, claim, description, m.sesoi, m.sesoi_text, None, pd.Series(dtype=float))
        result.reason = _untested(evidence, SMALL_MEDIUM, m)
        if not result.reason:
            rows = _eligible(evidence, SMALL_MEDIUM, m)
            _tested(result, seed_series(rows, m.column), m.form, confidence)
            result.detail = _detail(claim_id, rows)
        out.append(result)
    return out


def siblings(evidence: pd.DataFrame, m: Measure) -> pd.DataFrame:
    """Pairs of siblings: every small/medium-LR child counted for `m` with every large-LR child counted for it of
    the same pretrained parent, C_Tr and swept fine-tuning hyperparameters; columns seed, small, large and
    difference (small - large), one row per pair."""
    keys = ["pretrained", "spurious", *swept_axes(evidence)]
    small = _eligible(evidence, SMALL_MEDIUM, m)[[*keys, "seed", m.column]]
    large = _eligible(evidence, LARGE, m)[[*keys, m.column]]
    pairs = small.merge(large, on=keys, suffixes=("_small", "_large"))
    pairs = pairs.rename(columns={f"{m.column}_small": "small", f"{m.column}_large": "large"})
    return pairs.assign(difference=pairs.small - pairs.large)[["seed", "small", "large", "difference"]]


def _weakening(evidence: pd.DataFrame, confidence: float) -> list[ClaimResult]:
    out = []
    for claim_id, what, m in WEAKENING:
        description = (f"the measure of {what}: small/medium-LR child minus its large-LR sibling (same parent and "
                       "C_Tr), mean over the seed's pairs")
        result = ClaimResult(claim_id, f"With a large LR the effect weakens: {what}", description, m.sesoi,
                             m.sesoi_text, None, pd.Series(dtype=float))
        result.reason = _untested(evidence, SMALL_MEDIUM, m) or _untested(evidence, LARGE, m)
        if not result.reason:
            pairs = siblings(evidence, m)
            seeds = pairs.seed.nunique()
            if seeds < MIN_SEEDS:
                result.reason = (f"{seeds} seed(s) with a parent whose small/medium- and large-LR children both "
                                 f"count; at least {MIN_SEEDS} needed")
            else:
                _tested(result, seed_series(pairs, "difference"), m.form, confidence)
                result.detail = (f"{len(pairs)} pairs of siblings over {seeds} seeds; mean per pair "
                                 f"{m.form(pairs.small.mean())} at small/medium vs {m.form(pairs.large.mean())} at "
                                 "large LR")
        out.append(result)
    return out


def _step(alpha: float, level: float) -> str:
    """'0.05 / 3 = 0.0167': the level of a Holm step."""
    return f"{alpha:g} / {round(alpha / level)} = {level:.3g}"


def judge(result: ClaimResult, alpha: float) -> None:
    """The verdict and the power of a tested claim (p_holm, level and p_equivalence_holm set)."""
    test, n = result.test, result.test.n
    result.power = signed_rank_power(result.values, result.sesoi, result.level)
    if test.min_p >= result.level:
        result.verdict = f"untestable at this n ({test.nonzero} non-zero of {n})"
        result.power_text = (f"power 0: with {test.nonzero} non-zero of {n} per-seed values the smallest p the "
                             f"exact test can give, {test.min_p:.3g}, is not below the level of its Holm step, "
                             f"{_step(alpha, result.level)}")
        return
    result.power_text = (f"power {result.power:.2f} to detect {result.sesoi_text} at its Holm level "
                         f"{_step(alpha, result.level)} ({n} seeds, {test.nonzero} non-zero; exact, given the "
                         "observed |values|)")
    below = (f"below the SESOI ({result.sesoi_text}): signed-rank test of SESOI - value > 0, p(Holm) "
             f"{result.p_equivalence_holm:.3g}")
    if result.p_holm < alpha and test.effect > 0:
        result.verdict = "supported"
        if result.p_equivalence_holm < alpha:
            result.detail += f"; the effect is positive but {below}"
    elif result.p_equivalence_holm < alpha:
        result.verdict = "refuted"
        result.detail = (result.detail + "; " if result.detail else "") + f"the effect is {below}"
    else:
        result.verdict = "inconclusive"


def evaluate_claims(evidence: pd.DataFrame, alpha: float = ALPHA, confidence: float = CONFIDENCE) -> list[ClaimResult]:
    """Claims 1-4 on the taxonomy's evidence (analysis.taxonomy), Holm-adjusted, with verdicts and power."""
    evidence = _derived(evidence) if not evidence.empty else evidence.assign(probe_excess=np.nan)
    results = _one_regime(evidence, confidence) + _weakening(evidence, confidence)
    adjusted, levels = holm([r.test.p if r.test else np.nan for r in results], alpha)
    equivalent, _ = holm([r.equivalence.p if r.test else np.nan for r in results], alpha)
    for result, p, level, p_equivalence in zip(results, adjusted, levels, equivalent):
        result.p_holm, result.level, result.p_equivalence_holm = p, level, p_equivalence
        if result.test is None:
            result.verdict = f"not tested ({result.reason})"
        else:
            judge(result, alpha)
    return results
