"""What the run found, in a few lines, before anything else: the class shares with their seed-level intervals, each
claim's verdict in one line, and the flags that limit what the verdicts mean (seeds outside the regime, flagged
cells, claims the seeds cannot test, verdicts close to the level). The summary and the report open with it."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from analysis.claims import ClaimResult
from analysis.regime import Regime

FRAGILE = 2.0  # a verdict whose deciding p(Holm) is within this factor below alpha is flagged as fragile


@dataclasses.dataclass
class Answer:
    overall: str  # the study's sentence (emergence.overall_sentence)
    shares: pd.DataFrame  # class, members (k/n), share [lo, hi] text: the classes with members
    claims: pd.DataFrame  # id, verdict, effect [CI], claim
    flags: list[str]


def _share_text(share, lo, hi) -> str:
    if not np.isfinite(share):
        return "-"
    return f"{share:.0%} [{lo:.0%}, {hi:.0%}]" if np.isfinite(lo) else f"{share:.0%} (one seed: no interval)"


def _needed(level: float) -> int:
    """The fewest non-zero per-seed values with which the exact signed-rank test can get below `level`."""
    return math.floor(-math.log2(level)) + 1


def _claim_flags(claims: list[ClaimResult], alpha: float) -> list[str]:
    flags = []
    untestable = [c for c in claims if c.verdict.startswith("untestable")]
    if untestable:
        need = max(_needed(c.level) for c in untestable)
        flags.append(f"claims {', '.join(c.id for c in untestable)}: untestable with these seeds; the exact test "
                     f"needs up to {need} seeds with a non-zero value to reach its Holm level")
    for c in claims:
        if c.verdict.startswith("not tested"):
            flags.append(f"claim {c.id}: not tested ({c.reason})")
            continue
        deciding = {"supported": c.p_holm, "refuted": c.p_equivalence_holm}.get(c.verdict, np.nan)
        if np.isfinite(deciding) and deciding * FRAGILE >= alpha:
            flags.append(f"claim {c.id}: {c.verdict}, but fragile: p(Holm) {deciding:.3g} is within a factor "
                         f"{FRAGILE:g} of alpha {alpha:g}")
        elif c.verdict == "inconclusive" and np.isfinite(c.power) and c.power < 0.8:
            flags.append(f"claim {c.id}: inconclusive at power {c.power:.2f}: more seeds could decide it")
    return flags


def _regime_flags(regime: Regime) -> list[str]:
    flags = [regime.note] if regime.note else []
    flags += [check.removeprefix("FAILS: ") for check in regime.checks if check.startswith("FAILS")]
    if not regime.cells.empty and len(regime.flagged):
        flags.append(f"{len(regime.flagged)} of {len(regime.cells)} fine-tuning cells flagged (see the regime): "
                     "their verdicts do not mean what they say")
    return flags


def answer(overall: str, shares: pd.DataFrame, claims: list[ClaimResult], regime: Regime, alpha: float,
           confidence: float) -> Answer:
    """The answer block from the taxonomy's headline (`shares`: emergence.class_shares), the claims and the
    regime."""
    present = shares[shares.k > 0] if not shares.empty else shares
    table = pd.DataFrame({"class": present["class"], "members": [f"{r.k}/{r.n}" for r in present.itertuples()],
                          f"share [{confidence:.0%} CI]": [_share_text(r.share, r.lo, r.hi) for r in present.itertuples()]})
    verdicts = pd.DataFrame([{"claim": c.id, "verdict": c.verdict.split(" (")[0], "effect [CI]":
                              c.effect_text or "-", "what it says": c.claim} for c in claims],
                            columns=["claim", "verdict", "effect [CI]", "what it says"])
    return Answer(overall, table.reset_index(drop=True), verdicts,
                  _regime_flags(regime) + _claim_flags(claims, alpha))
