"""The wrapper taxonomy: what fine-tuning did to the pretraining capability C_PT, one class per fine-tuned member.

  no-op           fine-tuning did not learn its task: the member never met the run's criterion (stop_step < 0);
                  a run without one (finetune.target 0): its accuracy on its own fine-tuning distribution, on the
                  fresh test set, is below `noop_accuracy`
  untouched       the member met the criterion at step 0 (stop_step 0): fine-tuning never changed it, it is its
                  parent; not "kept", which says that C_FT was learnt beside C_PT
  reuse           C_PT kept, C_FT reached with the shortcut (C_Te = 1) and operand-blind without it (O_FT queries
                  answered with the pretraining answer more often than with the fine-tuning one): it answers C_FT by
                  applying C_PT through the shortcut
  kept            C_PT kept and C_FT learnt beside it
  hidden wrapper  C_PT suppressed, and revived beyond the nulls by pruning or by reFT
  overwrite       C_PT suppressed and revived by neither (both instruments measured)
  not judged      with the reason: a diverged lineage, a parent without C_PT (pretrained test C_PT below
                  `min_pretrained_acc`), a parent outside the regime (analysis.regime.member_regime: C_PT, or C_FT at
                  the highest or lowest prior, short of the study's requirements), or incomplete evidence
C_PT is *kept* when the member's test C_PT is at least the midpoint between its parent's and that of a model that
never had it (`measures.null_pt_acc`): the nearest of the two centroids; else *suppressed*.

The nulls (`Nulls`, from the study itself) are the matched nulls fine-tuned (phase null_finetune,
fttrace/answer/planted.py): models that differ from the members only in never having had C_PT (same query
mix with O_PT's queries asked about the control terminal, same budgets), fine-tuned like the seed's lowest-prior
members to the same C_FT, and measured like them:
  pruning  T_prune, the `null_quantile` quantile of their targeted pruning gains (the mean C_PT gain over the
           budget). Revived by pruning: prune_gain > T_prune. The random-neuron gain is shown beside it, as a
           baseline, not pooled in.
  reFT     per reFT LR, T_reft: the (1 - null_quantile) quantile of their reFT children's steps to the threshold
           (at the real twin's reFT LR, to the real parent's C_PT), from their Kaplan-Meier curve with censoring
           (the smallest time where S <= null_quantile); where the curve never gets there, the budget, so that any
           revival within the budget beats the null. Revived by reFT: the reFT child reached the threshold in fewer
           steps.
A store without matched nulls (a Tracr study, or written before them) falls back on the reFT control: T_prune from
the pooled random-neuron and control_pretrain gains, T_reft from the control_reft members at `control_lr_factor`.
analysis/validation.py measures each instrument's false-positive rate on the matched nulls (out of sample) and its
power on the planted wrappers; there a planted overwrite (a null twin judged against its real twin's parent) is
classed "overwrite" unless an instrument errs.
`Parameters` holds every number (`--threshold NAME=VALUE` on the command line); the report prints them and the
nulls.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.load import Study
from analysis.measures import (UNIT_METHODS, censored_steps, fine_tuning_target, lineage_measures, lr_key,
                               prune_gains)

NULL_KIND = "null_finetuned"  # the members whose instruments' readings make the nulls
from analysis.regime import OUTSIDE, REQUIREMENTS, Requirements, member_regime
from analysis.survival import kaplan_meier

CLASSES = ("no-op", "untouched", "reuse", "kept", "hidden wrapper", "overwrite")
NOT_JUDGED = "not judged"
CLASS_MEANINGS = {
    "no-op": "fine-tuning did not learn its task",
    "untouched": "met the fine-tuning criterion at step 0: identical to its parent",
    "reuse": "C_PT kept; C_FT answered by applying C_PT through the shortcut",
    "kept": "C_FT learnt beside an intact C_PT",
    "hidden wrapper": "C_PT suppressed, revived beyond the nulls by pruning or reFT",
    "overwrite": "C_PT suppressed, revived by neither",
}


@dataclasses.dataclass(frozen=True)
class Parameters:
    """Every number the taxonomy uses (printed with the nulls)."""
    null_quantile: float = 0.95  # the nulls' quantile a revival must beat
    prune_method: str = "neurons"  # a unit method: neurons, heads, mask, neurons_remove_ft
    prune_units: int = 15  # the pruning budget: at most max(prune_units, ...
    prune_fraction: float = 0.05  # ... prune_fraction x the method's units) units
    min_pretrained_acc: float = 0.5  # the parent has C_PT at all (test accuracy)
    noop_accuracy: float = 0.9  # without a fine-tuning criterion: own-distribution accuracy that counts as learnt
    control_lr_factor: float = 1.0  # the control matched to a lineage: its reFT LR x this factor

    def __post_init__(self):
        if self.prune_method not in UNIT_METHODS:
            raise AnalysisError(f"parameter prune_method={self.prune_method!r}: choose one of "
                                f"{', '.join(UNIT_METHODS)}")
        if not 0.5 <= self.null_quantile < 1:
            raise AnalysisError(f"parameter null_quantile={self.null_quantile:g} is outside [0.5, 1)")
        for name in ("prune_fraction", "min_pretrained_acc", "noop_accuracy"):
            if not 0 <= getattr(self, name) <= 1:
                raise AnalysisError(f"parameter {name}={getattr(self, name):g} is outside [0, 1]")
        if self.prune_units < 1:
            raise AnalysisError(f"parameter prune_units={self.prune_units} must be >= 1")
        if not self.control_lr_factor > 0:
            raise AnalysisError(f"parameter control_lr_factor={self.control_lr_factor:g} must be > 0")

    @classmethod
    def from_strings(cls, assignments) -> "Parameters":
        """Parameters with `name=value` overrides (command-line form)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for assignment in assignments:
            name, sep, text = assignment.partition("=")
            if not sep or name not in fields:
                raise AnalysisError(f"threshold {assignment!r}: expected NAME=VALUE with NAME one of "
                                    f"{', '.join(fields)}")
            if name == "prune_method":
                values[name] = text
                continue
            try:
                values[name] = int(text) if name == "prune_units" else float(text)
            except ValueError:
                kind = "an integer" if name == "prune_units" else "a number"
                raise AnalysisError(f"threshold {assignment!r}: {text!r} is not {kind}") from None
            if not np.isfinite(values[name]):
                raise AnalysisError(f"threshold {assignment!r}: {text!r} is not a finite number")
        return cls(**values)

    def describe(self, target: float) -> list[tuple[str, str, str]]:
        """(parameter, value, what it decides) rows."""
        learnt = (f"the run's criterion (finetune.target {target:g}): stop_step >= 0" if target else
                  f"no criterion in the run: own-distribution test accuracy >= {self.noop_accuracy:g}")
        return [
            ("min_pretrained_acc", f"{self.min_pretrained_acc:g}", "parent's test C_PT below it: not judged"),
            ("regime", "per parent", "parent outside the regime (see the regime's requirements): not judged"),
            ("noop_accuracy", f"{self.noop_accuracy:g}", f"learnt (else no-op): {learnt}"),
            ("untouched", "stop_step 0", "learnt at step 0, before any update: untouched (a run with a criterion)"),
            ("reuse", f"{reuse_target(target, self):g}", "reuse: kept, C_FT at C_Te = 1 at least this (the target, "
                                                         "else noop_accuracy), and operand-blind at C_Te = 0"),
            ("kept", "midpoint", "kept: member's test C_PT >= (parent's + never-had-it null's) / 2"),
            ("prune_method", self.prune_method, "the targeted pruning read (its random null: neurons_random)"),
            ("prune_units, prune_fraction", f"{self.prune_units}, {self.prune_fraction:g}",
             "budget: levels 0 < k <= max(prune_units, prune_fraction x units)"),
            ("null_quantile", f"{self.null_quantile:g}", "T_prune: this quantile of the matched nulls' gains; T_reft: "
                                                         "the 1 - this quantile of their reFT steps"),
            ("control_lr_factor", f"{self.control_lr_factor:g}", "the matched control's LR: the reFT LR x this"),
        ]


def reuse_target(target: float, p: Parameters) -> float:
    return target if target > 0 else p.noop_accuracy


# ---------------------------------------------------------------- the nulls


def reft_threshold(durations, observed, quantile: float, budget: float) -> tuple[float, bool]:
    """(T, from_curve): the smallest time where the Kaplan-Meier S <= quantile, or (budget, False) where the curve
    never gets there (or there is no run)."""
    km = kaplan_meier(durations, observed)
    reached = km.time[km.survival <= quantile] if not km.empty else pd.Series(dtype=float)
    if len(reached):
        return float(reached.iloc[0]), True
    return float(budget), False


@dataclasses.dataclass
class Nulls:
    """The nulls a revival must beat, with what they are computed from."""
    quantile: float
    prune_threshold: float  # T_prune (NaN without null curves)
    prune_random: np.ndarray  # the fine-tuned members' random-neuron gains (pooled in only without matched nulls)
    prune_control: np.ndarray  # the targeted gains of the nulls: the matched nulls fine-tuned, else the controls
    reft: pd.DataFrame  # per group and reFT LR: controls, revived, budget, threshold, from_curve, earliest
    matched: bool = False  # from the matched nulls (else the fallback on the reFT control)

    def prune_text(self) -> str:
        if not np.isfinite(self.prune_threshold):
            return "T_prune: no null gains in the store (no random-neuron or control pruning curves)"
        if self.matched:
            return (f"T_prune = {self.prune_threshold:+.4f}: the {self.quantile:g} quantile of the targeted gains of "
                    f"{len(self.prune_control)} matched nulls fine-tuned (never had C_PT; mean "
                    f"{_mean(self.prune_control)}); random-neuron gains of fine-tuned members, a baseline not pooled "
                    f"in: mean {_mean(self.prune_random)} ({len(self.prune_random)})")
        pooled = np.r_[self.prune_random, self.prune_control]
        return (f"T_prune = {self.prune_threshold:+.4f}: the {self.quantile:g} quantile of {len(pooled)} null gains "
                f"({len(self.prune_random)} random-neuron curves of fine-tuned members, mean "
                f"{_mean(self.prune_random)}; {len(self.prune_control)} targeted curves of controls without C_PT, "
                f"mean {_mean(self.prune_control)})")

    def reft_texts(self) -> list[str]:
        if self.reft.empty:
            return ["T_reft: no matched controls in the store"]
        out = []
        groups = self.reft.group.nunique() > 1
        for r in self.reft.itertuples():
            where = f"reFT LR {r.reft_lr:g}" + (f", group {r.group}" if groups else "")
            few = " (here the earliest control revival)" if r.earliest else ""
            how = (f"the first step by which >= {1 - self.quantile:.0%} of them are revived, Kaplan-Meier with "
                   f"censoring{few}" if r.from_curve else
                   f"the controls' curve never drops to {self.quantile:g}: the control budget, so any revival within "
                   "the budget beats the null")
            whose = "matched nulls fine-tuned" if self.matched else "controls"
            out.append(f"T_reft = {r.threshold:g} steps at {where} ({r.controls} {whose}, {r.revived} revived "
                       f"within {r.budget:g} steps; {how})")
        return out


def _mean(values) -> str:
    return f"{np.mean(values):+.4f}" if len(values) else "n/a"


def prune_null(study: Study, evidence: pd.DataFrame, p: Parameters) -> tuple[float, np.ndarray, np.ndarray]:
    """(T_prune, random gains, control gains)."""
    random = evidence.prune_random_gain[~evidence.diverged].dropna().to_numpy(float)
    members = study.members
    controls = members[(members.kind == "control_pretrained") & (members.status == "ok")]
    gains = prune_gains(study, controls, p.prune_method, p.prune_units, p.prune_fraction).gain if len(controls) \
        else pd.Series(dtype=float)
    control = gains.dropna().to_numpy(float)
    pooled = np.r_[random, control]
    threshold = float(np.quantile(pooled, p.null_quantile)) if len(pooled) else np.nan
    return threshold, random, control


def reft_null(study: Study, p: Parameters) -> pd.DataFrame:
    """Per group and reFT LR: the matched controls' count, revivals, budget and T_reft."""
    members = study.members
    controls = members[(members.kind == "control_reft") & (members.status == "ok") &
                       np.isclose(members.control_lr_factor.astype(float), p.control_lr_factor)]
    if controls.empty:
        return reft_table(pd.DataFrame(columns=["group", "key", "reft_lr", "steps", "reached", "budget"]),
                          p.null_quantile)
    steps = censored_steps(study, "control_reft")
    controls = controls.join(steps, on="member").assign(key=lr_key(controls.reft_lr_base).to_numpy(),
                                                        reft_lr=controls.reft_lr_base.astype(float))
    return reft_table(controls, p.null_quantile)


def reft_table(runs: pd.DataFrame, quantile: float) -> pd.DataFrame:
    """Per group and reFT LR key of `runs` (group, key, reft_lr, steps, reached, budget): T_reft and its counts."""
    columns = ["group", "reft_lr", "key", "controls", "revived", "budget", "threshold", "from_curve", "earliest"]
    rows = []
    for (group, key), cell in runs.groupby(["group", "key"], sort=True):
        budget = float(cell.budget.max())
        threshold, from_curve = reft_threshold(cell.steps.fillna(cell.budget), cell.reached, quantile, budget)
        earliest = from_curve and threshold == cell.steps[cell.reached == 1].min()
        rows.append(dict(group=group, reft_lr=float(cell.reft_lr.iloc[0]), key=key, controls=len(cell),
                         revived=int(cell.reached.sum()), budget=budget, threshold=threshold, from_curve=from_curve,
                         earliest=bool(earliest)))
    return pd.DataFrame(rows, columns=columns)


def matched_nulls(null_measures: pd.DataFrame, random: np.ndarray, p: Parameters) -> Nulls:
    """The nulls from the lineage measures of matched nulls (lineage_measures(planted=NULL_KIND), or a subset of
    them: analysis/validation.py leaves one seed out)."""
    healthy = null_measures[~null_measures.diverged.astype(bool)]
    gains = healthy.prune_gain.dropna().to_numpy(float)
    threshold = float(np.quantile(gains, p.null_quantile)) if len(gains) else np.nan
    runs = healthy.dropna(subset=["reft_reached"])
    runs = pd.DataFrame({"group": runs.group, "key": lr_key(runs.reft_lr).to_numpy(), "reft_lr": runs.reft_lr,
                         "steps": runs.reft_steps, "reached": runs.reft_reached, "budget": runs.reft_budget})
    return Nulls(p.null_quantile, threshold, random, gains, reft_table(runs, p.null_quantile), matched=True)


def null_measures(study: Study, p: Parameters) -> pd.DataFrame:
    """The matched nulls' lineage measures (empty in a store without them)."""
    return lineage_measures(study, p.prune_method, p.prune_fraction, p.prune_units, p.control_lr_factor,
                            planted=NULL_KIND)


def compute_nulls(study: Study, evidence: pd.DataFrame, p: Parameters) -> Nulls:
    nulls = null_measures(study, p)
    if len(nulls):
        random = evidence.prune_random_gain[~evidence.diverged].dropna().to_numpy(float)
        return matched_nulls(nulls, random, p)
    threshold, random, control = prune_null(study, evidence, p)
    return Nulls(p.null_quantile, threshold, random, control, reft_null(study, p))


# ---------------------------------------------------------------- the classes


def _indicator(condition, *inputs) -> pd.Series:
    """1/0 from a comparison, NaN where any of its inputs is missing."""
    missing = np.logical_or.reduce([pd.Series(x).isna().to_numpy() for x in inputs])
    return pd.Series(np.where(missing, np.nan, np.asarray(condition, float)), index=inputs[0].index)


def _revived_by_reft(m: pd.DataFrame, nulls: Nulls) -> pd.DataFrame:
    """T_reft per lineage and whether its reFT child beat it (NaN without a child or a null)."""
    table = nulls.reft.set_index(["group", "key"])
    keys = pd.MultiIndex.from_arrays([m.group, lr_key(m.reft_lr).to_numpy()])
    threshold = pd.Series(table.threshold.reindex(keys).to_numpy(float), index=m.index)
    budget_null = pd.Series(~table.from_curve.reindex(keys).fillna(True).to_numpy(bool), index=m.index)
    beats = (m.reft_steps < threshold) | (budget_null & (m.reft_steps <= threshold))
    revived = np.where(m.reft_reached == 0, 0.0, beats.astype(float))
    missing = m.reft_reached.isna() | threshold.isna()
    return pd.DataFrame({"reft_threshold": threshold, "revived_by_reft": np.where(missing, np.nan, revived)},
                        index=m.index)


def _judge(m, p: Parameters) -> tuple[str, str]:
    """(class, reason) of one member with the indicator columns of `classify`."""
    if m.diverged:
        return NOT_JUDGED, "diverged lineage"
    if np.isnan(m.pt_acc_pretrained):
        return NOT_JUDGED, "incomplete evidence (no C_PT of the parent)"
    if m.pt_acc_pretrained < p.min_pretrained_acc:
        return NOT_JUDGED, "parent without C_PT"
    if m.parent_in_regime == 0:
        return NOT_JUDGED, OUTSIDE
    if np.isnan(m.learnt):
        return NOT_JUDGED, "incomplete evidence (no fine-tuning outcome)"
    if m.learnt == 0:
        return "no-op", ""
    if m.untouched == 1:
        return "untouched", ""
    if np.isnan(m.suppressed):
        return NOT_JUDGED, "incomplete evidence (no C_PT after fine-tuning, or no never-had-it null)"
    if m.suppressed == 0:
        if np.isnan(m.reuse):
            return NOT_JUDGED, "incomplete evidence (no shortcut accuracy or output-function shares)"
        return ("reuse" if m.reuse == 1 else "kept"), ""
    if m.revived_by_pruning == 1 or m.revived_by_reft == 1:
        return "hidden wrapper", ""
    if m.revived_by_pruning == 0 and m.revived_by_reft == 0:
        return "overwrite", ""
    missing = " and ".join(n for n, v in (("pruning", m.revived_by_pruning), ("reFT", m.revived_by_reft))
                           if np.isnan(v))
    return NOT_JUDGED, f"incomplete evidence (no {missing} result or null)"


def classify(m: pd.DataFrame, nulls: Nulls, p: Parameters, target: float,
             parents: pd.DataFrame | None = None) -> pd.DataFrame:
    """`m` (lineage measures) with the taxonomy's indicators (1/0/NaN), `taxon` and `reason` ('' when judged).

    parents: analysis.regime.member_regime; a lineage whose parent is outside the regime has parent_in_regime 0
    and has_capability 0, so that nothing that counts members with the capability (the claims, the instruments,
    the survival curves) counts it. Without it (or where the parent's regime is unknown) no lineage is left out.
    """
    m = m.copy()
    in_regime = parents.in_regime if parents is not None and "in_regime" in parents else pd.Series(dtype=float)
    m["parent_in_regime"] = m.pretrained.map(in_regime).astype(float)
    m["has_capability"] = _indicator((m.pt_acc_pretrained >= p.min_pretrained_acc) & (m.parent_in_regime != 0),
                                     m.pt_acc_pretrained)
    if target > 0:
        m["learnt"] = _indicator(m.stop_step >= 0, m.stop_step)
        m["untouched"] = _indicator(m.stop_step == 0, m.stop_step)
    else:
        m["learnt"] = _indicator(m.own_acc >= p.noop_accuracy, m.own_acc)
        m["untouched"] = 0.0  # without a criterion every member trains its whole budget
    m["kept_level"] = (m.pt_acc_pretrained + m.null_pt_acc) / 2
    m["suppressed"] = _indicator(m.pt_acc < m.kept_level, m.pt_acc, m.kept_level)
    m["reuse"] = _indicator((m.ft_shortcut_acc >= reuse_target(target, p)) &
                            (m.ft_query_pt_share > m.ft_query_ft_share),
                            m.ft_shortcut_acc, m.ft_query_pt_share, m.ft_query_ft_share)
    m["prune_threshold"] = nulls.prune_threshold
    m["revived_by_pruning"] = _indicator(m.prune_gain > nulls.prune_threshold, m.prune_gain, m.prune_threshold)
    m = pd.concat([m, _revived_by_reft(m, nulls)], axis=1)
    judged = [_judge(row, p) for row in m.itertuples(index=False)]
    m["taxon"] = [taxon for taxon, _ in judged]
    m["reason"] = [reason for _, reason in judged]
    by = np.where(m.revived_by_pruning == 1, "pruning", "")
    by = np.where(m.revived_by_reft == 1, np.where(by == "", "reFT", "pruning and reFT"), by)
    m["revived_by"] = np.where(m.taxon == "hidden wrapper", by, "")
    return m


def counted(evidence: pd.DataFrame) -> pd.DataFrame:
    """The members that claims and survival curves count: the lineage did not diverge, the parent had C_PT and
    was in the regime, fine-tuning learnt its task by changing the model (not a no-op, not untouched) and C_PT is
    known to be kept or suppressed (whatever the instruments found)."""
    return evidence[~evidence.diverged & (evidence.has_capability == 1) & (evidence.learnt == 1) &
                    (evidence.untouched != 1) & evidence.suppressed.notna()]


@dataclasses.dataclass
class Taxonomy:
    evidence: pd.DataFrame  # one row per fine-tuned member: every measure, indicator and its class
    nulls: Nulls
    parameters: Parameters
    target: float  # the run's fine-tuning criterion (0: none)


def taxonomy(study: Study, p: Parameters = Parameters(), requirements: Requirements = REQUIREMENTS) -> Taxonomy:
    """Every fine-tuned member's measures, the nulls and its class; lineages whose parent is outside the regime
    (`requirements`) are not judged."""
    m = lineage_measures(study, p.prune_method, p.prune_fraction, p.prune_units, p.control_lr_factor)
    nulls = compute_nulls(study, m, p)
    target = fine_tuning_target(study)
    return Taxonomy(classify(m, nulls, p, target, member_regime(study, requirements)), nulls, p, target)
