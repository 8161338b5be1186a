"""Per-lineage measurements: one row per fine-tuned member, with the numbers that the wrapper indicator and the
claim tests read. Threshold-free except for the pruning budget and the choice of reFT control.

Columns (besides the lineage ids and settings of `Study.lineage`):
  diverged              the fine-tuned member, its parent or its reFT child diverged
  lr_regime             "small/medium" or "large" (by LR name; unnamed LRs by their ratio to the pretraining LR)
  pt_acc_pretrained     C_PT accuracy of the parent at the end of pretraining (ft_acc_pretrained: its C_FT)
  pt_acc_finetuned      C_PT accuracy at the end of fine-tuning (ft_acc_finetuned: C_FT)
  prune_units           units the pruning method can remove (MLP neurons or heads, all layers)
  prune_budget          the most units a "small" pruning removes: max(units, fraction x prune_units)
  prune_k_revive        smallest k restoring C_PT (from the store; NaN if none); prune_frac_revive as a fraction
  prune_pt_acc_k0       C_PT accuracy of the unpruned member on the pruning evaluation
  prune_pt_acc_within   mean C_PT accuracy over the pruning levels 0 < k <= prune_budget (a mean, not the best
                        level, so that noise alone gives no gain)
  prune_gain            prune_pt_acc_within - prune_pt_acc_k0
  probe_pt_{pretrained,finetuned,reft,init}
                        held-out probe accuracy for the pretraining target, best residual-stream layer, of the
                        parent, the member, its reFT child, and the parent's randomly initialised model
  reft_steps            reFT steps to the C_PT threshold (censored, see below); reft_reached 0/1
  control_steps         the control's steps to the threshold (censored); control_reached 0/1
  reft_speedup          control_steps / reft_steps

Censoring: a run that never reaches the threshold counts as reaching it at the end of its budget (its last logged
step), so a speed-up involving one is a bound and one where neither reaches it is 1 (no difference seen); steps
below the first logged step after 0 count as that step (the resolution of the measurement), so a member that
never lost C_PT gives a finite speed-up.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.load import Study

# Pruning methods that remove whole units; `weights` prunes individual weights and has no unit budget.
UNIT_METHODS = {"neurons": "neurons", "neurons_remove_ft": "neurons", "mask": "neurons", "heads": "heads"}
SMALL_MEDIUM, LARGE = "small/medium", "large"
# Unnamed fine-tuning LRs at or above this fraction of the pretraining LR count as large: the geometric midpoint
# between the study's medium (/100) and large (/10) scales.
LARGE_LR_RATIO = 10 ** -1.5
PROBE_SITE = "resid"


def final_values(results: pd.DataFrame, phase: str, metrics) -> pd.DataFrame:
    """member x metric table of each member's values at its last step of `phase`."""
    rows = results[(results.phase == phase) & results.metric.isin(list(metrics))]
    rows = rows[rows.step == rows.groupby("member").step.transform("max")]
    table = rows.pivot_table(index="member", columns="metric", values="value", aggfunc="first")
    return table.reindex(columns=list(metrics))


def lr_regime(lineage: pd.DataFrame) -> pd.Series:
    named = lineage.finetune_lr_name.isin(["small", "medium", "large"])
    large = np.where(named, lineage.finetune_lr_name == "large",
                     lineage.finetune_lr / lineage.pretrain_lr >= LARGE_LR_RATIO)
    return pd.Series(np.where(large, LARGE, SMALL_MEDIUM), index=lineage.index)


def unit_counts(lineage: pd.DataFrame, model: dict, method: str) -> pd.Series:
    """Units `method` can remove per member: the config's model, with any swept model field the member carries."""
    if method not in UNIT_METHODS:
        raise AnalysisError(f"pruning method {method!r} has no unit count; choose one of {', '.join(UNIT_METHODS)}")

    def field(name):
        return lineage[name] if name in lineage and lineage[name].notna().all() else pd.Series(
            model.get(name, np.nan), index=lineage.index, dtype=float)
    layers = field("n_layers")
    if UNIT_METHODS[method] == "heads":
        return layers * field("n_heads")
    mlp = field("d_mlp")
    return layers * mlp.where(mlp > 0, 4 * field("d_model"))  # d_mlp 0 means 4 x d_model


def _pruning(study: Study, lineage: pd.DataFrame, method: str, fraction: float, units: int) -> pd.DataFrame:
    prune = study.results[(study.results.phase == "prune") & study.results.member.isin(lineage.finetuned)]
    out = pd.DataFrame(index=lineage.index)
    out["prune_units"] = unit_counts(lineage, study.config.get("model", {}), method)
    out["prune_budget"] = np.maximum(units, fraction * out.prune_units)
    summary = prune[prune.step == 0].pivot_table(index="member", columns="metric", values="value", aggfunc="first")
    summary = summary.reindex(index=lineage.finetuned, columns=[f"{method}.k_revive", f"{method}.frac_revive"])
    out["prune_k_revive"] = summary.iloc[:, 0].to_numpy()
    out["prune_frac_revive"] = summary.iloc[:, 1].to_numpy()
    curve = prune[prune.metric == f"{method}.pt_acc"]
    at_zero = curve[curve.step == 0].set_index("member").value
    out["prune_pt_acc_k0"] = at_zero.reindex(lineage.finetuned).to_numpy()
    budget = dict(zip(lineage.finetuned, out.prune_budget))
    within = curve[(curve.step > 0) & (curve.step <= curve.member.map(budget).astype(float))]
    out["prune_pt_acc_within"] = within.groupby("member").value.mean().reindex(lineage.finetuned).to_numpy()
    out["prune_gain"] = out.prune_pt_acc_within - out.prune_pt_acc_k0
    return out


def _best_probe(study: Study, prefix: str = "") -> pd.Series:
    """Per member: the best layer's probe accuracy for the pretraining target."""
    rows = study.results[(study.results.phase == "probe") &
                         (study.results.metric == f"{prefix}{PROBE_SITE}.pt_acc")]
    return rows.groupby("member").value.max()


def _censored_steps(study: Study, phase: str) -> pd.DataFrame:
    """Per member of a reFT-like phase: steps to the threshold with censoring (module docstring), and reached."""
    rows = study.results[study.results.phase == phase]
    curve = rows[rows.metric == "pt_acc"]
    budget = curve.groupby("member").step.max()
    resolution = curve[curve.step > 0].groupby("member").step.min()
    summary = rows[rows.step == 0].pivot_table(index="member", columns="metric", values="value", aggfunc="first")
    summary = summary.reindex(columns=["steps_to_threshold", "reached"])
    steps = summary.steps_to_threshold
    reached = steps.notna()
    censored = steps.clip(lower=resolution.reindex(steps.index)).where(reached, budget.reindex(steps.index))
    return pd.DataFrame({"steps": censored, "reached": reached.astype(float)})


def _reft(study: Study, lineage: pd.DataFrame, control_lr_factor: float | None) -> pd.DataFrame:
    out = pd.DataFrame(index=lineage.index)
    reft = _censored_steps(study, "reft").reindex(lineage.reft)
    out["reft_steps"] = reft.steps.to_numpy()
    out["reft_reached"] = reft.reached.to_numpy()
    members = study.members
    controls = members[members.kind == "control_reft"]
    if control_lr_factor is not None:
        controls = controls[np.isclose(controls.control_lr_factor, control_lr_factor)]
    controls = controls.join(_censored_steps(study, "control_reft"), on="member")
    controls = controls[controls.status == "ok"]
    # The control of a lineage: same group, seed and pretraining LR, trained at the lineage's LR (x factor); the
    # fastest factor unless one is chosen, so that reFT must beat the control at its best.
    fastest = controls.sort_values("steps").groupby(["group", "seed", "pretrain_lr", "finetune_lr"]).first()
    matched = lineage.join(fastest[["steps", "reached"]], on=["group", "seed", "pretrain_lr", "finetune_lr"])
    out["control_steps"] = matched.steps.to_numpy()
    out["control_reached"] = matched.reached.to_numpy()
    out["reft_speedup"] = out.control_steps / out.reft_steps
    return out


def _lookup(ids: pd.Series, values: pd.Series) -> pd.Series:
    """values[id] per id as floats (NaN for ids without a value, or no id)."""
    return ids.map(values).astype(float)


def lineage_measures(study: Study, prune_method: str = "neurons", prune_fraction: float = 0.05,
                     prune_units: int = 15, control_lr_factor: float | None = None) -> pd.DataFrame:
    """One row per fine-tuned member with the measurements listed in the module docstring."""
    lineage = study.lineage
    status = dict(zip(study.members.member, study.members.status))
    involved = [lineage[c].map(status).eq("diverged") for c in ("finetuned", "pretrained", "reft")]
    lineage["diverged"] = np.logical_or.reduce(involved)
    lineage["lr_regime"] = lr_regime(lineage)
    pretrained = final_values(study.results, "pretrain", ["pt_acc", "ft_acc"])
    finetuned = final_values(study.results, "finetune", ["pt_acc", "ft_acc"])
    lineage["pt_acc_pretrained"] = _lookup(lineage.pretrained, pretrained.pt_acc)
    lineage["ft_acc_pretrained"] = _lookup(lineage.pretrained, pretrained.ft_acc)
    lineage["pt_acc_finetuned"] = _lookup(lineage.finetuned, finetuned.pt_acc)
    lineage["ft_acc_finetuned"] = _lookup(lineage.finetuned, finetuned.ft_acc)
    probe, init = _best_probe(study), _best_probe(study, "init_")
    for column, ids, source in (("pretrained", lineage.pretrained, probe), ("finetuned", lineage.finetuned, probe),
                                ("reft", lineage.reft, probe), ("init", lineage.pretrained, init)):
        lineage[f"probe_pt_{column}"] = _lookup(ids, source)
    return pd.concat([lineage, _pruning(study, lineage, prune_method, prune_fraction, prune_units),
                      _reft(study, lineage, control_lr_factor)], axis=1)
