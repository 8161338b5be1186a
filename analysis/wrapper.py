"""The per-member wrapper indicator: did fine-tuning hide the pretraining capability behind a thin wrapper?

A fine-tuned member is a *wrapper* when all four hold (`Thresholds` holds every number, the report prints them):
  lost                fine-tuning hid C_PT: its C_PT accuracy fell below `lost_below` x the parent's pretrained
                      C_PT
  revived_by_pruning  removing a small set of units revives C_PT: the store's k_revive (C_PT back within the run's
                      prune.tolerance of the pretrained accuracy) is at most max(`prune_units`,
                      `prune_fraction` x units)
  probe_reads         the pretraining target stays linearly readable: the best layer's probe accuracy is at
                      least `probe_ratio` x that of the pretrained parent
  reft_faster         reverse fine-tuning revives C_PT at least `reft_speedup` times faster than the control that
                      never had the capability (the fastest control LR unless `control_lr_factor` picks one)
Members whose parent never had the capability (pretrained C_PT below `min_pretrained_acc`) and members of a
diverged lineage are left out (indicator NaN, with the reason). A member that kept C_PT is no wrapper (0). When
the store lacks an evaluation, no member gets an indicator and `missing_evidence` says which is missing.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.load import Study
from analysis.measures import UNIT_METHODS, lineage_measures

CRITERIA = ("lost", "revived_by_pruning", "probe_reads", "reft_faster")
CRITERION_NAMES = {"lost": "C_PT lost", "revived_by_pruning": "revived by pruning", "probe_reads": "probe reads",
                   "reft_faster": "reFT faster"}
EVIDENCE_PHASES = ("prune", "probe", "reft")  # the evaluations the indicator reads


@dataclasses.dataclass(frozen=True)
class Thresholds:
    min_pretrained_acc: float = 0.5  # the parent has C_PT at all
    lost_below: float = 0.5  # C_PT lost: fine-tuned C_PT < lost_below x pretrained C_PT
    prune_method: str = "neurons"  # a unit method: neurons, heads, mask, neurons_remove_ft
    prune_units: int = 15  # the study revives C_PT by pruning 5-15 neurons ...
    prune_fraction: float = 0.05  # ... or this fraction of the method's units, whichever is larger
    probe_ratio: float = 0.9  # fine-tuned probe accuracy >= probe_ratio x pretrained probe accuracy
    reft_speedup: float = 2.0  # control steps / reFT steps to the C_PT threshold
    control_lr_factor: float | None = None  # None: the fastest control over its LR factors

    def __post_init__(self):
        if self.prune_method not in UNIT_METHODS:
            raise AnalysisError(f"threshold prune_method={self.prune_method!r}: choose one of "
                                f"{', '.join(UNIT_METHODS)}")
        for name in ("min_pretrained_acc", "lost_below", "prune_fraction", "probe_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise AnalysisError(f"threshold {name}={getattr(self, name)} is outside [0, 1]")
        if self.prune_units < 0 or self.reft_speedup <= 0:
            raise AnalysisError("thresholds prune_units must be >= 0 and reft_speedup > 0")

    @classmethod
    def from_strings(cls, assignments) -> "Thresholds":
        """Thresholds with `name=value` overrides (command-line form)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for assignment in assignments:
            name, sep, text = assignment.partition("=")
            if not sep or name not in fields:
                raise AnalysisError(f"threshold {assignment!r}: expected NAME=VALUE with NAME one of "
                                    f"{', '.join(fields)}")
            if name == "prune_method":
                values[name] = text
            elif name == "control_lr_factor" and text.lower() in ("", "none", "fastest"):
                values[name] = None
            else:
                try:
                    values[name] = int(text) if name == "prune_units" else float(text)
                except ValueError:
                    raise AnalysisError(f"threshold {assignment!r}: {text!r} is not a number") from None
        return cls(**values)

    def describe(self) -> list[tuple[str, str]]:
        """(criterion, rule) rows for the report."""
        control = "the fastest control LR" if self.control_lr_factor is None else \
            f"the control at {self.control_lr_factor:g} x the reFT LR"
        return [
            ("has C_PT", f"pretrained C_PT accuracy >= {self.min_pretrained_acc:g} (else the member is left out)"),
            ("lost", f"fine-tuned C_PT accuracy < {self.lost_below:g} x pretrained C_PT accuracy"),
            ("revived_by_pruning", f"{self.prune_method}.k_revive <= max({self.prune_units}, "
                                   f"{self.prune_fraction:g} x {self.prune_method} units)"),
            ("probe_reads", f"best-layer probe accuracy (pretraining target) >= {self.probe_ratio:g} x the "
                            "pretrained parent's"),
            ("reft_faster", f"control steps / reFT steps to the C_PT threshold >= {self.reft_speedup:g}, "
                            f"against {control}"),
            ("wrapper", "lost AND revived_by_pruning AND probe_reads AND reft_faster"),
        ]


def _all_of(criteria: pd.DataFrame) -> pd.Series:
    """Three-valued AND over columns holding 1, 0 or NaN: 0 if any is 0, else NaN if any is NaN, else 1."""
    values = criteria.to_numpy(float)
    out = np.where(np.isnan(values).any(axis=1), np.nan, 1.0)
    return pd.Series(np.where((values == 0).any(axis=1), 0.0, out), index=criteria.index)


def _criterion(condition: pd.Series, *inputs: pd.Series) -> pd.Series:
    """1/0 from a comparison, NaN where any of its inputs is missing."""
    missing = np.logical_or.reduce([x.isna().to_numpy() for x in inputs])
    return pd.Series(np.where(missing, np.nan, condition.astype(float)), index=condition.index)


def missing_evidence(study: Study) -> list[str]:
    """The evaluations (phases) that the wrapper indicator needs and the store lacks."""
    phases = set(study.results.phase.unique())
    return [phase for phase in EVIDENCE_PHASES if phase not in phases]


def wrapper_evidence(study: Study, thresholds: Thresholds = Thresholds()) -> pd.DataFrame:
    """`lineage_measures` plus one 1/0/NaN column per criterion, `wrapper`, and `left_out` (why NaN)."""
    t = thresholds
    m = lineage_measures(study, t.prune_method, t.prune_fraction, t.prune_units, t.control_lr_factor)
    m["probe_ratio"] = m.probe_pt_finetuned / m.probe_pt_pretrained
    m["has_capability"] = _criterion(m.pt_acc_pretrained >= t.min_pretrained_acc, m.pt_acc_pretrained)
    m["lost"] = _criterion(m.pt_acc_finetuned < t.lost_below * m.pt_acc_pretrained, m.pt_acc_finetuned,
                           m.pt_acc_pretrained)
    m["revived_by_pruning"] = _criterion(m.prune_k_revive <= m.prune_budget, m.prune_budget, m.prune_pt_acc_k0)
    m["probe_reads"] = _criterion(m.probe_ratio >= t.probe_ratio, m.probe_ratio)
    m["reft_faster"] = _criterion(m.reft_speedup >= t.reft_speedup, m.reft_speedup)
    m["wrapper"] = _all_of(m[list(CRITERIA)])
    reasons = pd.Series("", index=m.index)
    if missing := missing_evidence(study):
        reasons[:] = f"no {', '.join(missing)} results"
    reasons = reasons.mask(reasons.eq("") & m.wrapper.isna(), "incomplete evidence")
    reasons = reasons.mask(m.has_capability.ne(1), "parent without C_PT")
    reasons = reasons.mask(m.diverged, "diverged")
    m["left_out"] = reasons
    m.loc[reasons != "", "wrapper"] = np.nan
    return m
