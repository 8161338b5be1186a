"""Per-member measurements: one row per fine-tuned member with every number that the taxonomy, the claims and the
instrument tables read. No thresholds here except the pruning budget and the choice of the control's LR factor.

Columns (besides the lineage ids and settings of `Study.lineage`, and `reft_lr`, the reFT child's LR):
  diverged              the fine-tuned member, its parent or its reFT child diverged
  lr_regime             "small/medium" or "large" (by LR name; unnamed LRs by their ratio to the pretraining LR)
  pt_acc_pretrained     the parent's C_PT on the fresh test set (ft_acc_pretrained: its C_FT at C_Te = 0)
  pt_acc, ft_acc, ft_shortcut_acc
                        the member's test C_PT, C_FT at C_Te = 0 and C_FT at C_Te = 1; own_acc = (1 - C_Tr) x ft_acc
                        + C_Tr x ft_shortcut_acc, the accuracy on its own fine-tuning distribution. accuracy_source:
                        "test" (phase regime) or "training eval" (the phase's last evaluation, for stores without
                        regime diagnostics)
  ft_query_<f>_share    output function on O_FT queries (f: ft, pt, majority, other; phase regime)
  stop_step             the step where fine-tuning met its criterion (-1: never; NaN: not in the store)
  null_pt_acc           C_PT of a model that never had it: the mean of the seed's control_pretrain members (same
                        group and pretraining LR), else of all of them, else the parent's untrained model; its
                        source in null_source
  prune_budget          max(prune_units, prune_fraction x the method's units)
  prune_gain            mean over the pruning levels 0 < k <= budget of C_PT(k) - C_PT(0), targeted method; a mean,
                        not the best level, so that noise alone gives no gain
  prune_random_gain     the same for k random MLP neurons (the null; NaN for methods that do not remove neurons);
                        prune_excess = prune_gain - prune_random_gain
  prune_ft_change       mean over the same levels of C_FT(k) - C_FT(0): does removing the units swap C_FT back?
  prune_control_gain    prune_gain of the seed's control_pretrain member (the targeted null)
  sel_{pretrained,finetuned,reft,init}
                        probe selectivity: the best residual layer's probe accuracy for the pretraining target minus
                        that for the control target at the same layer (probe_pt_*: the pretraining target alone), of
                        the parent, the member, its reFT child and the parent's untrained model; sel_control: of
                        the seed's control_pretrain member
  reft_steps, reft_reached, reft_budget
                        the reFT child's steps to the C_PT threshold (NaN: not within the budget, right-censored)
  control_steps, control_reached, control_budget
                        the same for the matched control (same group, seed and pretraining LR, trained at this
                        lineage's reFT LR x control_lr_factor)
  reft_time, control_time
                        restricted steps: steps if reached else the budget (the restricted mean time of one run),
                        at least the first logged step after 0 (the measurement's resolution), so that the log ratio
                        log_speedup = log(control_time / reft_time) is finite; reft_speedup = its exp
  attn_change           mean over heads of the change of attention against the parent (tv_parent) over the mean
                        seed-to-seed null (tv_seed of the pretrained models of the same group and prior): 1 = as
                        different as another seed's model; attn_change_max: the largest per-head ratio;
                        attn_change_reft: attn_change of the reFT child; attn_tv: the mean change itself (tv_parent
                        over heads), which stands where the null is 0 (every pretrained member the same model, as
                        in a Tracr study) and attn_change is NaN
  patch_site, patch_pt_gain
                        the site whose patch (the parent's contribution) raises C_PT most above the unpatched child,
                        and by how much; patch_ft_site, patch_ft_drop: the site whose patch lowers C_FT most
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.load import Study
from analysis.settings import pretrain_axes

# Pruning methods that remove whole units; `weights` prunes individual weights and has no unit budget.
UNIT_METHODS = {"neurons": "neurons", "neurons_remove_ft": "neurons", "mask": "neurons", "heads": "heads"}
RANDOM_METHOD = "neurons_random"  # k random MLP neurons: the null of every method that removes neurons
SMALL_MEDIUM, LARGE = "small/medium", "large"
# Unnamed fine-tuning LRs at or above this fraction of the pretraining LR count as large: the geometric midpoint
# between the study's medium (/100) and large (/10) scales.
LARGE_LR_RATIO = 10 ** -1.5
PROBE_SITE = "resid"
ACCURACIES = ("pt_acc", "ft_acc", "ft_shortcut_acc")
FUNCTIONS = ("ft", "pt", "majority", "other")
TRAINING_PHASE = {"pretrained": "pretrain", "finetuned": "finetune", "reft": "reft",
                  "control_pretrained": "control_pretrain", "control_reft": "control_reft",
                  "null_finetuned": "null_finetune", "null_reft": "null_reft", "planted_wrapper": "planted_wrapper",
                  "wrapper_reft": "wrapper_reft"}


PLANTED_REFT = {"null_finetuned": "null_reft", "planted_wrapper": "wrapper_reft"}  # their reFT children's phase


def final_values(results: pd.DataFrame, phase: str, metrics) -> pd.DataFrame:
    """member x metric table of each member's values at its last step of `phase`."""
    rows = results[(results.phase == phase) & results.metric.isin(list(metrics))]
    rows = rows[rows.step == rows.groupby("member").step.transform("max")]
    table = rows.pivot_table(index="member", columns="metric", values="value", aggfunc="first")
    return table.reindex(columns=list(metrics))


def regime_values(study: Study) -> pd.DataFrame:
    """member x metric table of the regime phase (step 0); empty without one."""
    rows = study.results[study.results.phase == "regime"]
    return rows.pivot_table(index="member", columns="metric", values="value", aggfunc="first")


def has_regime(study: Study) -> bool:
    return bool((study.results.phase == "regime").any())


def fine_tuning_target(study: Study) -> float:
    """The run's fine-tuning criterion, finetune.target (0: none, every member trains its whole budget)."""
    return float(study.config.get("finetune", {}).get("target", 0.0) or 0.0)


def accuracies(study: Study) -> pd.DataFrame:
    """Per member: pt_acc, ft_acc, ft_shortcut_acc on the fresh test sets (phase regime), or where a member has
    none there, its training phase's last evaluation; `source` says which; init_pt_acc: the untrained model's."""
    test = regime_values(study).reindex(columns=[f"test.{a}" for a in ACCURACIES] + ["init_test.pt_acc"])
    test.columns = [*ACCURACIES, "init_pt_acc"]
    frames = []
    for kind, phase in TRAINING_PHASE.items():
        ids = study.members.member[study.members.kind == kind]
        frames.append(final_values(study.results[study.results.member.isin(ids)], phase, ACCURACIES))
    training = pd.concat(frames) if frames else pd.DataFrame(columns=list(ACCURACIES))
    index = study.members.member
    test, training = test.reindex(index), training.reindex(index)
    from_test = test.pt_acc.notna()
    out = training.copy()
    out.loc[from_test, list(ACCURACIES)] = test.loc[from_test, list(ACCURACIES)]
    out["init_pt_acc"] = test.init_pt_acc
    out["source"] = np.where(from_test, "test", np.where(training.pt_acc.notna(), "training eval", ""))
    return out


def stop_steps(study: Study) -> pd.Series:
    """Per member: stop_step of its training phase (-1: never met the criterion)."""
    results = study.results
    rows = results[(results.metric == "stop_step") & results.phase.isin(list(TRAINING_PHASE.values()))]
    return rows.groupby("member").value.last()


def lr_regime(lineage: pd.DataFrame) -> pd.Series:
    named = lineage.finetune_lr_name.isin(["small", "medium", "large"])
    large = np.where(named, lineage.finetune_lr_name == "large",
                     lineage.finetune_lr / lineage.pretrain_lr >= LARGE_LR_RATIO)
    return pd.Series(np.where(large, LARGE, SMALL_MEDIUM), index=lineage.index)


def unit_counts(members: pd.DataFrame, model: dict, method: str) -> pd.Series:
    """Units `method` can remove per member: the config's model, with any swept model field the member carries."""
    if method not in UNIT_METHODS:
        raise AnalysisError(f"pruning method {method!r} has no unit count; choose one of {', '.join(UNIT_METHODS)}")

    def field(name):
        if name in members and members[name].notna().all():
            return members[name].astype(float)
        value = model.get(name, np.nan)
        return pd.Series(float(value) if isinstance(value, (int, float)) else np.nan, index=members.index)
    layers = field("n_layers")
    if UNIT_METHODS[method] == "heads":
        return layers * field("n_heads")
    mlp = field("d_mlp")
    return layers * mlp.where(mlp > 0, 4 * field("d_model"))  # d_mlp 0 means 4 x d_model


def _mean_change(rows: pd.DataFrame, metric: str, budget: pd.Series) -> pd.Series:
    """Per member (budget's index): mean over the levels 0 < k <= budget of value(k) - value(0)."""
    curve = rows[rows.metric == metric]
    at_zero = curve[curve.step == 0].groupby("member").value.first()
    within = curve[(curve.step > 0) & (curve.step <= curve.member.map(budget).astype(float))]
    return (within.groupby("member").value.mean() - at_zero).reindex(budget.index)


def prune_gains(study: Study, members: pd.DataFrame, method: str = "neurons", units: int = 15,
                fraction: float = 0.05) -> pd.DataFrame:
    """Per member of `members` (indexed by id): units, budget, k0 (C_PT unpruned), gain, random_gain, ft_change,
    k_revive (module docstring)."""
    index = pd.Index(members.member, name="member")
    rows = study.results[(study.results.phase == "prune") & study.results.member.isin(index)]
    out = pd.DataFrame(index=index)
    out["units"] = unit_counts(members, study.config.get("model", {}), method).to_numpy()
    out["budget"] = np.fmax(units, fraction * out.units)
    curve = rows[rows.metric == f"{method}.pt_acc"]
    out["k0"] = curve[curve.step == 0].groupby("member").value.first().reindex(index)
    out["gain"] = _mean_change(rows, f"{method}.pt_acc", out.budget)
    random = UNIT_METHODS[method] == "neurons"
    out["random_gain"] = _mean_change(rows, f"{RANDOM_METHOD}.pt_acc", out.budget) if random else np.nan
    out["ft_change"] = _mean_change(rows, f"{method}.ft_acc", out.budget)
    revive = rows[(rows.step == 0) & (rows.metric == f"{method}.k_revive")]
    out["k_revive"] = revive.groupby("member").value.first().reindex(index)
    return out


def selectivity(study: Study, prefix: str = "") -> pd.DataFrame:
    """Per member: the best residual layer's probe accuracy for each target at that layer (the layer chosen by the
    pretraining target's accuracy on the validation set, where the store has one) and the selectivity pt - control
    there (NaN without a control target)."""
    results = study.results
    stem = f"{prefix}{PROBE_SITE}."
    rows = results[(results.phase == "probe") & results.metric.str.startswith(stem)]
    columns = ["probe_pt", "probe_control", "selectivity"]
    if rows.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="member"))
    rows = rows.assign(target=rows.metric.str.slice(len(stem)).str.removesuffix("_acc"))
    table = rows.pivot_table(index=["member", "step"], columns="target", values="value", aggfunc="first")
    table = table.reset_index().dropna(subset=["pt"])
    chooser = "pt_val" if "pt_val" in table and table.pt_val.notna().all() else "pt"  # older stores: no validation
    best = table.loc[table.groupby("member")[chooser].idxmax()].set_index("member")
    control = best["control"] if "control" in best else pd.Series(np.nan, index=best.index)
    return pd.DataFrame({"probe_pt": best.pt, "probe_control": control, "selectivity": best.pt - control})


def censored_steps(study: Study, phase: str) -> pd.DataFrame:
    """Per member of a reFT-like phase: steps to the threshold (NaN: not reached), reached 0/1, the budget (its
    last logged step, else reft.steps) and the resolution (its first logged step after 0)."""
    rows = study.results[study.results.phase == phase]
    curve = rows[rows.metric == "pt_acc"]
    summary = rows[rows.step == 0].pivot_table(index="member", columns="metric", values="value", aggfunc="first")
    summary = summary.reindex(columns=["steps_to_threshold", "reached"])
    configured = float(study.config.get("reft", {}).get("steps", np.nan) or np.nan)
    budget = curve.groupby("member").step.max().reindex(summary.index).astype(float).fillna(configured)
    resolution = curve[curve.step > 0].groupby("member").step.min().reindex(summary.index).astype(float)
    steps = summary.steps_to_threshold
    return pd.DataFrame({"steps": steps, "reached": steps.notna().astype(float), "budget": budget,
                         "resolution": resolution.fillna(1.0)})


def restricted_time(steps: pd.Series, budget: pd.Series, resolution: pd.Series) -> pd.Series:
    """Steps if reached, else the budget; at least the resolution."""
    return steps.fillna(budget).clip(lower=resolution)


def lr_key(values) -> pd.Series:
    """LRs as join keys: equal up to float noise."""
    values = pd.Series(values, dtype=float)
    return np.round(np.log10(values.where(values > 0)), 6)


def matched_controls(study: Study, lineage: pd.DataFrame, factor: float = 1.0) -> pd.Series:
    """Per lineage: the id of its control trained on C_PT at its reFT LR x `factor` (NaN where none is healthy)."""
    members = study.members
    controls = members[(members.kind == "control_reft") & (members.status == "ok") &
                       np.isclose(members.control_lr_factor.astype(float), factor)]
    lineage_keys = ["group", "seed", "pretrain_lr", *pretrain_axes(members)]
    keys = [*lineage_keys, "_lr"]
    controls = controls.assign(_lr=lr_key(controls.reft_lr_base).to_numpy()).drop_duplicates(keys)
    mine = lineage[lineage_keys].assign(_lr=lr_key(lineage.reft_lr).to_numpy())
    matched = mine.merge(controls[[*keys, "member"]], on=keys, how="left")
    return pd.Series(matched.member.to_numpy(), index=lineage.index)


def control_pretrained(study: Study, frame: pd.DataFrame) -> pd.Series:
    """Per row of `frame` (group, seed, pretrain_lr and the swept pretraining optimiser setting): its seed's
    control_pretrain member (NaN where none)."""
    members = study.members
    keys = ["group", "seed", "pretrain_lr", *pretrain_axes(members)]
    controls = members[members.kind == "control_pretrained"].drop_duplicates(keys)
    matched = frame[keys].merge(controls[[*keys, "member"]], on=keys, how="left")
    return pd.Series(matched.member.to_numpy(), index=frame.index)


def _never_had(study: Study, lineage: pd.DataFrame, acc: pd.DataFrame) -> pd.DataFrame:
    """null_pt_acc and null_source per lineage (module docstring)."""
    control = control_pretrained(study, lineage).map(acc.pt_acc).astype(float)
    controls = study.members.member[study.members.kind == "control_pretrained"]
    everyone = acc.pt_acc.reindex(controls).mean()
    untrained = lineage.pretrained.map(acc.init_pt_acc).astype(float)
    value = control.fillna(everyone).fillna(untrained)
    source = np.where(control.notna(), "control of the seed", np.where(
        np.isfinite(everyone), "all controls", np.where(untrained.notna(), "untrained model", "")))
    return pd.DataFrame({"null_pt_acc": value, "null_source": source}, index=lineage.index)


def attention_change(study: Study) -> pd.DataFrame:
    """Per member with tv_parent rows: attn_change, attn_change_max and attn_tv (module docstring)."""
    rows = study.results[study.results.phase == "attention"]
    columns = ["attn_change", "attn_change_max", "attn_tv"]
    tv = rows[rows.metric.str.endswith(".tv_parent")]
    null = rows[rows.metric.str.endswith(".tv_seed")]
    if tv.empty or null.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="member"))
    # The rows carry their member's group and prior: the null of a head is its mean over the pretrained models of
    # the same group and prior.
    null = null.assign(head=null.metric.str.removesuffix(".tv_seed"))
    null = null.groupby(["group", "prior", "step", "head"]).value.mean().rename("null")
    tv = tv.assign(head=tv.metric.str.removesuffix(".tv_parent"))
    tv = tv.join(null, on=["group", "prior", "step", "head"]).dropna(subset=["value", "null"])
    raw = tv.groupby("member").value.mean()
    tv = tv[tv.null > 0]
    grouped = tv.assign(ratio=tv.value / tv.null).groupby("member")
    out = pd.DataFrame({"attn_change": grouped.value.mean() / grouped.null.mean(),
                        "attn_change_max": grouped.ratio.max()})
    return out.reindex(raw.index).assign(attn_tv=raw)


def patch_effects(study: Study) -> pd.DataFrame:
    """Per patched member: patch_site, patch_pt_gain, patch_ft_site, patch_ft_drop (module docstring)."""
    rows = study.results[(study.results.phase == "patch") & (study.results.step == 0)]
    columns = ["patch_site", "patch_pt_gain", "patch_ft_site", "patch_ft_drop"]
    if rows.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="member"))
    parts = rows.metric.str.rpartition(".")
    table = rows.assign(site=parts[0], target=parts[2]).pivot_table(index=["member", "site"], columns="target",
                                                              values="value", aggfunc="first").reset_index()
    none = table[table.site == "none"].set_index("member")
    sites = table[table.site != "none"].copy()
    if sites.empty or none.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="member"))
    sites["pt_gain"] = sites.pt_acc - sites.member.map(none.pt_acc)
    sites["ft_drop"] = sites.member.map(none.ft_acc) - sites.ft_acc
    best_pt = sites.loc[sites.dropna(subset=["pt_gain"]).groupby("member").pt_gain.idxmax()].set_index("member")
    best_ft = sites.loc[sites.dropna(subset=["ft_drop"]).groupby("member").ft_drop.idxmax()].set_index("member")
    # A member whose best patch changes nothing has no site: "none".
    out = pd.DataFrame({"patch_site": best_pt.site.where(best_pt.pt_gain > 0, "none"),
                        "patch_pt_gain": best_pt.pt_gain})
    return out.join(pd.DataFrame({"patch_ft_site": best_ft.site.where(best_ft.ft_drop > 0, "none"),
                                  "patch_ft_drop": best_ft.ft_drop}), how="outer")


def _lookup(ids: pd.Series, values: pd.Series) -> pd.Series:
    """values[id] per id as floats (NaN for ids without a value, or no id)."""
    return ids.map(values).astype(float)


def _reft(study: Study, lineage: pd.DataFrame, factor: float, reft_phase: str = "reft") -> pd.DataFrame:
    out = pd.DataFrame({"control": matched_controls(study, lineage, factor)}, index=lineage.index)
    for name, ids, phase in (("reft", lineage.reft, reft_phase), ("control", out.control, "control_reft")):
        steps = censored_steps(study, phase)
        for column in ("steps", "reached", "budget"):
            out[f"{name}_{column}"] = _lookup(ids, steps[column])
        out[f"{name}_time"] = restricted_time(out[f"{name}_steps"], out[f"{name}_budget"],
                                              _lookup(ids, steps.resolution))
    out["log_speedup"] = np.log(out.control_time / out.reft_time)
    out["reft_speedup"] = np.exp(out.log_speedup)
    return out


def _pruning(study: Study, lineage: pd.DataFrame, method: str, fraction: float, units: int) -> pd.DataFrame:
    members = lineage.rename(columns={"finetuned": "member"})
    gains = prune_gains(study, members, method, units, fraction)
    out = pd.DataFrame(index=lineage.index)
    for column in ("units", "budget", "k_revive", "k0", "gain", "random_gain", "ft_change"):
        out[f"prune_{column}"] = gains[column].to_numpy()
    out = out.rename(columns={"prune_k0": "prune_pt_acc_k0"})
    out["prune_excess"] = out.prune_gain - out.prune_random_gain
    controls = control_pretrained(study, lineage)
    known = study.members[study.members.member.isin(controls.dropna())]
    control_gains = prune_gains(study, known, method, units, fraction).gain if len(known) else pd.Series(dtype=float)
    out["prune_control_gain"] = _lookup(controls, control_gains)
    return out


def lineage_measures(study: Study, prune_method: str = "neurons", prune_fraction: float = 0.05,
                     prune_units: int = 15, control_lr_factor: float = 1.0, planted: str = "") -> pd.DataFrame:
    """One row per fine-tuned member with the measurements listed in the module docstring; `planted`: of the
    members of known answer of that kind instead (Study.planted_lineage), their reFT children in its reFT phase."""
    lineage = study.planted_lineage(planted) if planted else study.lineage
    members = study.members.set_index("member")
    status = members.status
    involved = [lineage[c].map(status).eq("diverged") for c in ("finetuned", "pretrained", "reft")]
    lineage["diverged"] = np.logical_or.reduce(involved)
    lineage["lr_regime"] = lr_regime(lineage)
    lineage["reft_lr"] = _lookup(lineage.reft, members.reft_lr)
    acc = accuracies(study)
    lineage["pt_acc_pretrained"] = _lookup(lineage.pretrained, acc.pt_acc)
    lineage["ft_acc_pretrained"] = _lookup(lineage.pretrained, acc.ft_acc)
    for column in ACCURACIES:
        lineage[column] = _lookup(lineage.finetuned, acc[column])
    spurious = lineage.spurious.astype(float)
    lineage["own_acc"] = (1 - spurious) * lineage.ft_acc + spurious * lineage.ft_shortcut_acc
    lineage.loc[spurious == 0, "own_acc"] = lineage.ft_acc  # no shortcut accuracy needed at C_Tr = 0
    lineage["accuracy_source"] = lineage.finetuned.map(acc.source).fillna("")
    lineage["init_pt_acc"] = _lookup(lineage.pretrained, acc.init_pt_acc)
    shares = regime_values(study)
    for f in FUNCTIONS:
        column = f"ft_query.{f}_share"
        lineage[f"ft_query_{f}_share"] = _lookup(lineage.finetuned, shares[column]) if column in shares else np.nan
    lineage["stop_step"] = _lookup(lineage.finetuned, stop_steps(study))
    lineage = pd.concat([lineage, _never_had(study, lineage, acc)], axis=1)
    probe, init = selectivity(study), selectivity(study, "init_")
    for column, ids, source in (("pretrained", lineage.pretrained, probe), ("finetuned", lineage.finetuned, probe),
                                ("reft", lineage.reft, probe), ("init", lineage.pretrained, init)):
        lineage[f"sel_{column}"] = _lookup(ids, source.selectivity)
        lineage[f"probe_pt_{column}"] = _lookup(ids, source.probe_pt)
    lineage["sel_control"] = _lookup(control_pretrained(study, lineage), probe.selectivity)
    attention, patch = attention_change(study), patch_effects(study)
    lineage["attn_change"] = _lookup(lineage.finetuned, attention.attn_change)
    lineage["attn_change_max"] = _lookup(lineage.finetuned, attention.attn_change_max)
    lineage["attn_change_reft"] = _lookup(lineage.reft, attention.attn_change)
    lineage["attn_tv"] = _lookup(lineage.finetuned, attention.attn_tv)
    for column in patch.columns:
        lineage[column] = lineage.finetuned.map(patch[column])
    return pd.concat([lineage, _pruning(study, lineage, prune_method, prune_fraction, prune_units),
                      _reft(study, lineage, control_lr_factor, PLANTED_REFT.get(planted, "reft"))], axis=1)
