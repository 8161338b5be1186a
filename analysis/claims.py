"""The reference study's claims, each as a paired test over seeds.

Each claim reduces to one number per seed (the mean over that seed's members in the claim's subset), tested with a
one-sided Wilcoxon signed-rank test for > 0; the effect is the mean over seeds with a bootstrap interval. p-values
are Holm-adjusted across the claims tested, and a claim is *supported* when its adjusted p is below alpha and its
effect is positive. Members count when their pretrained parent had C_PT and no member of their lineage diverged.
  1  small/medium-LR fine-tuning: pruning a small set of units revives C_PT. Per member that lost C_PT: the mean
     C_PT accuracy over the pruning levels within the budget of units (wrapper.Thresholds) minus the unpruned
     accuracy.
  2  probes read the pretraining target from fine-tuned models about as well as from pretrained ones (small/medium
     LR). Non-inferiority with margin probe_ratio: fine-tuned probe accuracy - probe_ratio x pretrained.
  3  reFT recovers C_PT in fewer steps than the control (small/medium LR). Per member that lost C_PT:
     log(control steps / reFT steps), censored as in `measures`.
  4a-c  with a large LR these effects weaken: per seed, the measure of claim 1 / the probe accuracy ratio /
     the log speed-up at small/medium LR minus at large LR.
A claim whose data is missing is "not tested" with the reason.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from analysis.measures import LARGE, SMALL_MEDIUM
from analysis.stats import CONFIDENCE, PairedTest, holm, paired_test, seed_means
from analysis.wrapper import Thresholds

ALPHA = 0.05
MIN_SEEDS = 2


@dataclasses.dataclass
class ClaimResult:
    id: str
    claim: str
    measure: str  # what one seed's number is
    test: PairedTest | None
    effect_text: str  # the effect with its interval, in the measure's natural units
    detail: str  # supporting numbers (rates, controls)
    reason: str = ""  # why it was not tested
    p_holm: float = np.nan
    verdict: str = ""


def _eligible(evidence: pd.DataFrame, regime: str, need: str, lost_only: bool) -> pd.DataFrame:
    rows = evidence[(evidence.has_capability == 1) & ~evidence.diverged & (evidence.lr_regime == regime)]
    if lost_only:
        rows = rows[rows.lost == 1]
    return rows.dropna(subset=[need])


def _untested(evidence: pd.DataFrame, regime: str, need: str, lost_only: bool, evaluation: str) -> str:
    """Why a claim on `need` in `regime` cannot be tested ('' if it can)."""
    in_regime = evidence[evidence.lr_regime == regime]
    if in_regime.empty:
        return f"no fine-tuned members at {regime} LR"
    if in_regime[need].isna().all():
        return f"no {evaluation} results for {regime}-LR members"
    usable = in_regime[(in_regime.has_capability == 1) & ~in_regime.diverged]
    if usable.empty:
        return f"no {regime}-LR member whose parent had C_PT and whose lineage did not diverge"
    if lost_only and not (usable.lost == 1).any():
        return f"fine-tuning at {regime} LR removed C_PT in no member: nothing to revive"
    seeds = _eligible(evidence, regime, need, lost_only).seed.nunique()
    if seeds < MIN_SEEDS:
        return f"{seeds} seed(s) with data; at least {MIN_SEEDS} needed"
    return ""


def _per_seed(rows: pd.DataFrame, value: str) -> pd.Series:
    return seed_means(rows, value).set_index("seed")[value]


def _formatter(pattern: str, transform=lambda x: x):
    return lambda x: pattern.format(transform(x)) if np.isfinite(x) else "n/a"


ACCURACY = _formatter("{:+.3f}")
RATIO, SIGNED_RATIO = _formatter("{:.2f}"), _formatter("{:+.2f}")
TIMES = _formatter("x{:.2f}", np.exp)  # log speed-ups shown as speed-ups


@dataclasses.dataclass(frozen=True)
class Measure:
    """A per-member number that a claim averages per seed."""
    column: str  # column of the evidence (after _derived)
    lost_only: bool  # only members whose C_PT fine-tuning removed
    evaluation: str  # the evaluation that produces it (for "not tested" reasons)
    effect: object  # formats a difference of per-seed means
    level: object  # formats a per-seed mean


PRUNE_GAIN = Measure("prune_gain", True, "prune", ACCURACY, ACCURACY)
PROBE_MARGIN = Measure("probe_margin", False, "probe", ACCURACY, ACCURACY)
PROBE_RATIO = Measure("probe_ratio", False, "probe", SIGNED_RATIO, RATIO)
LOG_SPEEDUP = Measure("log_speedup", True, "reft", TIMES, TIMES)


def _derived(evidence: pd.DataFrame, t: Thresholds) -> pd.DataFrame:
    return evidence.assign(probe_margin=evidence.probe_pt_finetuned - t.probe_ratio * evidence.probe_pt_pretrained,
                           log_speedup=np.log(evidence.reft_speedup))


def _detail(claim_id: str, rows: pd.DataFrame) -> str:
    if claim_id == "1":
        return f"pruning revives C_PT within the budget in {int(rows.revived_by_pruning.sum())} of {len(rows)} " \
               "members"
    if claim_id == "2":
        ratio = (rows.probe_pt_finetuned / rows.probe_pt_pretrained).mean()
        init = (rows.probe_pt_init / rows.probe_pt_pretrained).mean()
        return f"mean ratio fine-tuned / pretrained {ratio:.2f}; randomly initialised control {init:.2f}"
    reached = rows.reft_reached.mean(), rows.control_reached.mean()
    return f"threshold reached by {reached[0]:.0%} of reFT runs and {reached[1]:.0%} of controls"


def _one_regime(evidence, t: Thresholds, confidence) -> list[ClaimResult]:
    specs = [
        ("1", "Small/medium-LR fine-tuning: pruning a small fraction of units revives C_PT",
         f"mean C_PT accuracy after pruning 1..max({t.prune_units}, {t.prune_fraction:g} x units) "
         f"{t.prune_method} minus before, members that lost C_PT", PRUNE_GAIN),
        ("2", "Probes read the pretraining target from fine-tuned models about as well as from pretrained ones",
         f"best-layer probe accuracy: fine-tuned - {t.probe_ratio:g} x pretrained (non-inferiority)", PROBE_MARGIN),
        ("3", "reFT recovers C_PT in fewer steps than the control that never had it",
         "log(control steps / reFT steps) to the C_PT threshold, members that lost C_PT; effect shown as the "
         "geometric-mean speed-up", LOG_SPEEDUP),
    ]
    out = []
    for claim_id, claim, description, m in specs:
        reason = _untested(evidence, SMALL_MEDIUM, m.column, m.lost_only, m.evaluation)
        if reason:
            out.append(ClaimResult(claim_id, claim, description, None, "", "", reason))
            continue
        rows = _eligible(evidence, SMALL_MEDIUM, m.column, m.lost_only)
        test = paired_test(_per_seed(rows, m.column), confidence)
        out.append(ClaimResult(claim_id, claim, description, test, _interval(test, m.effect), _detail(claim_id, rows)))
    return out


def _interval(test: PairedTest, form) -> str:
    if not np.isfinite(test.effect_lo):
        return form(test.effect)
    return f"{form(test.effect)} [{form(test.effect_lo)}, {form(test.effect_hi)}]"


def _weakening(evidence, confidence) -> list[ClaimResult]:
    specs = [("4a", "pruning revival (claim 1)", "C_PT gain from pruning", PRUNE_GAIN),
             ("4b", "probe readout (claim 2)", "probe accuracy ratio fine-tuned / pretrained", PROBE_RATIO),
             ("4c", "reFT speed-up (claim 3)", "log speed-up (effect shown as the ratio of geometric means)",
              LOG_SPEEDUP)]
    out = []
    for claim_id, what, description, m in specs:
        claim = f"With a large LR the effect weakens: {what}"
        description = f"{description}: small/medium LR minus large LR, per seed"
        reason = _untested(evidence, SMALL_MEDIUM, m.column, m.lost_only, m.evaluation) or \
            _untested(evidence, LARGE, m.column, m.lost_only, m.evaluation)
        if not reason:
            small = _per_seed(_eligible(evidence, SMALL_MEDIUM, m.column, m.lost_only), m.column)
            large = _per_seed(_eligible(evidence, LARGE, m.column, m.lost_only), m.column)
            difference = (small - large).dropna()
            if len(difference) < MIN_SEEDS:
                reason = f"{len(difference)} seed(s) with data at both small/medium and large LR"
        if reason:
            out.append(ClaimResult(claim_id, claim, description, None, "", "", reason))
            continue
        test = paired_test(difference, confidence)
        detail = f"mean over seeds {m.level(small.mean())} at small/medium vs {m.level(large.mean())} at large LR"
        out.append(ClaimResult(claim_id, claim, description, test, _interval(test, m.effect), detail))
    return out


def evaluate_claims(evidence: pd.DataFrame, thresholds: Thresholds = Thresholds(), alpha: float = ALPHA,
                    confidence: float = CONFIDENCE) -> list[ClaimResult]:
    """Claims 1-4 on the wrapper evidence (wrapper.wrapper_evidence), Holm-adjusted, with verdicts."""
    evidence = _derived(evidence, thresholds)
    results = _one_regime(evidence, thresholds, confidence) + _weakening(evidence, confidence)
    adjusted = holm([r.test.p if r.test else np.nan for r in results])
    for result, p in zip(results, adjusted):
        result.p_holm = p
        if result.test is None:
            result.verdict = f"not tested ({result.reason})"
        elif p < alpha and result.test.effect > 0:
            result.verdict = "supported"
        elif result.test.min_p >= alpha:
            t = result.test
            result.verdict = (f"inconclusive: {t.nonzero} of {t.n} seeds differ from 0, so the smallest "
                              f"attainable p is {t.min_p:.3g}")
        else:
            result.verdict = "not supported"
    return results
