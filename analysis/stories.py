"""Deleting a story feature by fine-tuning and recovering it (the stories study, `fttrace/stories/study.py`): a report
section and its page.

Arms: pretraining on all data (`pretrained`) and the control pretrained without the feature (`control`); deletion
(phase finetune) per deletion (a data variant) x fine-tuning LR; recovery of each deleted arm and of the control
(deletion `control`). The seed is the unit of replication: members with the same seed share initialisation and data
order, so a seed's value averages its members in a cell and intervals are percentile bootstraps over seeds.

  regime          per seed, first: does the pretrained model write the feature when asked? Its rate asked and not
                  asked, their gap with its binomial standard error (over the samples the run counted), and the
                  verdict `has the capability` when the gap exceeds 1.96 standard errors; beside it the control
                  pretrained without the feature and the untrained model. Seeds without it are flagged: the
                  verdicts of their cells describe nothing
  deletion        per deletion x LR: members that reached the deletion criterion (`finetune.stop_below`) and the
                  step they stopped at; the gap at the phase's end; side effects against the seed's pretrained
                  model (held-out loss, the other features' rates)
  phase table     per phase x arm at the phase's last step: feature rate when the header asks for the feature,
                  when it does not, refusal rate, held-out loss (mean [95% CI] over seeds)
  recovery curve  the feature rate at every recovery eval step per arm, then the reference study's curve at its
                  own steps (its numbers, not ours)
  reaching        per recovery arm: members that reach `recovery.threshold` x their seed's pretrained rate (k/n,
                  n: members whose seed's pretrained model shows the feature at all) and the steps it takes them
  survival        steps to regain as survival (never within the budget: censored there): Kaplan-Meier median
                  per recovery arm and the log-rank test of each deleted arm against the control at the same LR
  probes          held-out accuracy of the "the header asks for the feature" probe per layer at each phase's end
                  per arm, under the untrained models (pretraining step 0) as their control
  figures         recovery curves (one panel per deletion LR, the control in each) and probe accuracy by layer per
                  stage
"""
from __future__ import annotations

import functools
import re

import numpy as np
import pandas as pd

from analysis import figures, survival
from analysis.schema import beyond_noise
from analysis.stats import gap_text
from analysis.errors import AnalysisError
from analysis.study_page import (block, captioned_table, figure_block, interval_column, named_intervals, names_study,
                                 read_frames, section_html, unfinished_lines, write_page)

STUDY = "stories_twist"
PHASES = ("pretrain", "finetune", "recovery")
COLUMNS = ("member", "phase", "step", "metric", "value", "seed", "pretrain_data", "deletion", "finetune_lr")
# Stores written before the deletions were called so (their columns named them protocols).
EARLIER_COLUMNS = {"pretrain_protocol": "pretrain_data", "protocol": "deletion"}
RATES = {"feature_rate": "feature rate, asked [95% CI]", "feature_rate_unasked": "feature rate, not asked",
         "feature_gap": "asked - not asked", "refusal_rate": "refusal rate", "val_loss": "val loss"}
CONTROL = "control"  # the recovery arm of the control at recovery.lr (others: `control x10`, ...)
PROBE = re.compile(r"^probe_acc\.layer(\d+)$")
STORY_PROBE = re.compile(r"^probe_story\.layer(\d+)$")
STORY_CONTROL = re.compile(r"^probe_story_control\.layer(\d+)$")
UNTRAINED = "untrained"
# The reference study's share of stories with a twist at its recovery steps (its model, data and budget):
# Jain et al., "Mechanistically analyzing the effects of fine-tuning on procedurally defined tasks", ICLR 2024,
# Table 1.
REFERENCE_SOURCE = "Jain et al., ICLR 2024, Table 1"
REFERENCE_STEPS = (0, 30, 300, 3000)
REFERENCE = {"filter at the medium LR": (0.44, 0.81, 0.81, 0.82),
             "filter + mix & match": (0.31, 0.88, 0.50, 0.75),
             "not-in-pretraining control": (0.12, 0.31, 0.44, 0.81)}


def is_stories_store(path) -> bool:
    """Whether `path` is a workdir whose manifest names the stories study."""
    return names_study(path, STUDY)


def read_store(paths) -> tuple[pd.DataFrame, list[dict]]:
    """The stores' rows and manifests; an error names a store that is not a stories store with measurements."""
    frame, manifests = read_frames(paths)
    if "deletion" not in frame:
        frame = frame.rename(columns=EARLIER_COLUMNS)
    names = ", ".join(map(str, paths))
    if missing := [c for c in COLUMNS if c not in frame]:
        raise AnalysisError(f"{names}: not a stories results store (missing columns: {', '.join(missing)})")
    if not (frame.metric == "feature_rate").any():
        raise AnalysisError(f"{names}: no feature_rate rows (not a stories results store)")
    return frame, manifests


def arms(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the three phases with `arm` (pretrained / control in pretraining, else the deletion, with its
    fine-tuning protocol where a sweep has them) and `lr` (the deletion LR; NaN in pretraining and for the control),
    members in order."""
    rows = frame[frame.phase.isin(PHASES)].sort_values(["member", "step"], kind="stable")
    pretrain = rows.phase == "pretrain"
    arm = np.where(rows.pretrain_data == "none", "pretrained", "control")
    deletion = rows.deletion.astype(str)
    if "protocol" in rows:  # a sweep of fine-tuning protocols: an arm is a deletion with a protocol
        deletion = deletion.where(rows.protocol.isna(), deletion + " (" + rows.protocol.astype(str) + ")")
    return rows.assign(arm=np.where(pretrain, arm, deletion),
                       lr=np.where(pretrain, np.nan, rows.finetune_lr.astype(float)))


def _at_phase_end(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows.step == rows.groupby("phase").step.transform("max")]


def _in_order(table: pd.DataFrame, rows: pd.DataFrame, stages=PHASES) -> pd.DataFrame:
    """Rows of `table` by stage, then arms as their first member appears, then deletion LR (small to large)."""
    first = rows.drop_duplicates(["phase", "arm"]).set_index(["phase", "arm"]).member
    key = pd.DataFrame({"stage": table.phase.map(stages.index),
                        "arm": [first.get((p, a), -1) for p, a in zip(table.phase, table.arm)], "lr": table.lr})
    return table.loc[key.sort_values(["stage", "arm", "lr"], kind="stable").index].reset_index(drop=True)


def _intervals(rows: pd.DataFrame, by: list, metrics) -> pd.DataFrame:
    """Per cell of `by`: seeds (of the first metric) and each metric's mean over seeds with its interval."""
    table = None
    for metric in metrics:
        part = named_intervals(rows[rows.metric == metric], by, metric)
        table = part if table is None else table.merge(part.drop(columns="seeds"), on=by, how="outer")
    return table


def regime_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per seed at pretraining's end: the pretrained model's rates asked / not asked, their gap and its standard
    error, whether it has the capability (gap > 1.96 SE), the control's asked rate, the untrained model's; empty
    for stores without the gap's standard error."""
    pre = frame[(frame.phase == "pretrain") & frame.metric.isin(
        ("feature_rate", "feature_rate_unasked", "feature_gap", "feature_gap_se", "feature_samples"))]
    if not (pre.metric == "feature_gap_se").any():
        return pd.DataFrame()
    wide = pre.pivot_table(index=["seed", "pretrain_data", "step"], columns="metric", values="value")
    last, first = pre.step.max(), pre.step.min()
    rows = []
    for seed in sorted(pre.seed.unique()):
        row = wide.loc[(seed, "none", last)]
        rows.append(dict(seed=seed, asked=row.feature_rate, not_asked=row.feature_rate_unasked, gap=row.feature_gap,
                         gap_se=row.feature_gap_se, samples=row.feature_samples,
                         capability=bool(beyond_noise(row.feature_gap, row.feature_gap_se)),
                         control_asked=wide.feature_rate.get((seed, "filter", last), np.nan),
                         untrained_asked=wide.feature_rate.get((seed, "none", first), np.nan)))
    return pd.DataFrame(rows)


def display_regime_table(frame: pd.DataFrame) -> pd.DataFrame:
    table = regime_table(frame)
    if table.empty:
        return table
    return pd.DataFrame({
        "seed": table.seed, "asked": table.asked.map("{:.2f}".format),
        "not asked": table.not_asked.map("{:.2f}".format),
        "gap [1.96 SE]": list(map(gap_text, table.gap, table.gap_se)),
        "stories a side": table.samples.map("{:.0f}".format),
        "capability": np.where(table.capability, "yes", "NO: its verdicts describe nothing"),
        "control (never had it), asked": table.control_asked.map("{:.2f}".format),
        "untrained, asked": table.untrained_asked.map("{:.2f}".format)})


def regime_flag(frame: pd.DataFrame) -> str:
    """One sentence on the seeds whose pretrained model lacks the capability ("" when none does)."""
    table = regime_table(frame)
    if table.empty or table.capability.all():
        return ""
    lacking = table.seed[~table.capability].tolist()
    return (f"Seeds {', '.join(map(str, lacking))} ({len(lacking)} of {len(table)}): the pretrained model lacks the "
            "capability; every deletion and recovery verdict of these seeds describes a model that never had it.")


def deletion_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per deletion x LR (phase finetune): members, those that reached the deletion criterion and their stop step
    (mean over seeds [95% CI]); at the phase's end the gap (asked - not asked) and the side effects: held-out loss
    (on every validation story, and on those without the feature where the run measured it) and the mean over the
    other features of their rate, each minus the seed's pretrained model's."""
    rows = arms(frame)
    ft = rows[rows.phase == "finetune"]
    if ft.empty:
        return pd.DataFrame()
    keys = ["phase", "arm", "lr"]
    end = _at_phase_end(rows)
    pre = end[end.arm == "pretrained"].pivot_table(index="seed", columns="metric", values="value")
    wide = _at_phase_end(ft).pivot_table(index=["member", "seed", *keys], columns="metric", values="value",
                                         dropna=False).reset_index()

    def change(metric):
        return wide[metric] - wide.seed.map(pre[metric])

    others = [c for c in wide if str(c).startswith("other_rate.") and c in pre]
    measures = {"gap": lambda: wide["feature_gap"], "val_loss_change": lambda: change("val_loss"),
                "val_loss_without_change": lambda: change("val_loss.without_feature"),
                "others_change": lambda: sum(change(c) for c in others) / len(others)}
    present, long = [], []
    for name, measure in measures.items():
        try:
            values = measure().to_numpy(float)
        except (KeyError, ZeroDivisionError):  # a store without that metric (or without other features)
            continue
        present.append(name)
        long.append(wide[["seed", *keys]].assign(metric=name, value=values))
    stops = ft[ft.metric == "stop_step"]
    counts = stops.groupby(keys, sort=False, dropna=False).agg(
        members=("member", "size"), stopped=("value", lambda v: int((v >= 0).sum())))
    table = _intervals(pd.concat(long + [stops[stops.value >= 0].assign(metric="stop_step")]), keys,
                       present + ["stop_step"])
    table = table.merge(counts.reset_index(), on=keys, how="left")
    return _in_order(table, rows)


def display_deletion_table(frame: pd.DataFrame) -> pd.DataFrame:
    table = deletion_table(frame)
    if table.empty:
        return table
    out = _arm_columns(table).drop(columns="phase")
    out["reached the criterion"] = [f"{int(k) if np.isfinite(k) else 0}/{int(n) if np.isfinite(n) else 0}"
                                    for k, n in zip(table.stopped, table.members)]
    out["stop step [95% CI]"] = interval_column(table, "stop_step", digits=0)
    for name, title, digits in (("gap", "asked - not asked", 2), ("val_loss_change", "val loss - pretrained", 3),
                                ("val_loss_without_change", "val loss without the feature - pretrained", 3),
                                ("others_change", "other features - pretrained", 2)):
        if name in table:
            out[title] = interval_column(table, name, digits=digits)
    return out


def regain_steps(frame: pd.DataFrame, metric: str = "feature_gap", threshold: float = 0.9) -> pd.DataFrame:
    """Per recovery member: the first recovery eval step at which `metric` reaches `threshold` x the value of its
    seed's pretrained model at pretraining's end (`duration`; the last step, censored, if never: `observed`
    False); members whose seed's pretrained value is not positive have no target and are left out.

    With `feature_gap` (asked - not asked) this is the regained *capability*: a model that learns to write the
    feature whatever the header asks regains the rate when asked but not the gap."""
    rows = arms(frame)
    end = _at_phase_end(rows[(rows.arm == "pretrained") & (rows.metric == metric)]).set_index("seed").value
    rec = rows[(rows.phase == "recovery") & (rows.metric == metric)]
    if rec.empty or end.empty:
        return pd.DataFrame()
    rec = rec.assign(target=threshold * rec.seed.map(end))
    rec = rec[rec.target > 0]
    budget = float(rows[rows.phase == "recovery"].step.max())
    out = []
    for (member, arm, lr), curve in rec.groupby(["member", "arm", "lr"], sort=False, dropna=False):
        reached = curve[curve.value >= curve.target].step
        out.append(dict(member=member, arm=arm, lr=lr, duration=float(reached.min()) if len(reached) else budget,
                        observed=bool(len(reached))))
    return pd.DataFrame(out)


def survival_table(frame: pd.DataFrame, metric: str = "feature_gap", threshold: float = 0.9) -> pd.DataFrame:
    """Steps to regain the seed's pretrained `metric` (`regain_steps`) as survival, per recovery arm x deletion LR:
    members with a target, those that regain it within the budget, the Kaplan-Meier median (NaN: fewer than half
    regain it), and the log-rank test of a deleted arm against the control at recovery.lr (members that never
    regain it are censored at the budget, not dropped)."""
    wide = regain_steps(frame, metric, threshold)
    if wide.empty:
        return pd.DataFrame()
    control = wide[wide.arm == CONTROL]
    out = []
    for (arm, lr), cell in wide.groupby(["arm", "lr"], sort=False, dropna=False):
        km = survival.kaplan_meier(cell.duration, cell.observed)
        test = None
        if not arm.startswith(CONTROL) and len(control):
            both = pd.concat([cell, control])
            test = survival.logrank(both.duration, both.observed, both.arm)
        out.append(dict(phase="recovery", arm=arm, lr=lr, members=len(cell), regained=int(cell.observed.sum()),
                        median=survival.median_time(km), logrank_p=np.nan if test is None else test.p,
                        reason="" if test is None else test.reason))
    rows = arms(frame)
    return _in_order(pd.DataFrame(out), rows[rows.phase == "recovery"])


def display_survival_table(frame: pd.DataFrame, threshold: float = 0.9) -> pd.DataFrame:
    """Both criteria side by side: regaining the rate when asked, and regaining the gap (the capability)."""
    parts = []
    for metric, name in (("feature_rate", "rate asked"), ("feature_gap", "asked - not asked")):
        table = survival_table(frame, metric, threshold)
        if table.empty:
            continue
        out = _arm_columns(table).drop(columns="phase")
        out[f"{name}: regained"] = [f"{k}/{n}" for k, n in zip(table.regained, table.members)]
        out[f"{name}: median steps"] = [f"{m:g}" if np.isfinite(m) else "not reached" for m in table["median"]]
        out[f"{name}: log-rank p"] = [f"{p:.3g}" if np.isfinite(p) else (r or "-")
                                      for p, r in zip(table.logrank_p, table.reason)]
        parts.append(out)
    if not parts:
        return pd.DataFrame()
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part, on=["arm", "deletion LR"], how="left", sort=False)
    return merged


def phase_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per phase x arm x deletion LR at the phase's last step: each of RATES, mean over seeds and 95% CI."""
    rows = arms(frame)
    return _in_order(_intervals(_at_phase_end(rows), ["phase", "arm", "lr"], RATES), rows)


def recovery_curve(frame: pd.DataFrame) -> pd.DataFrame:
    """Per recovery arm x deletion LR x eval step: the feature rate (asked), mean over seeds and 95% CI."""
    rows = arms(frame)
    rows = rows[rows.phase == "recovery"]
    table = _intervals(rows, ["phase", "arm", "lr", "step"], ["feature_rate"])
    return _in_order(table.sort_values("step", kind="stable"), rows)


def reach_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per recovery arm x deletion LR: members, those with a target (their seed's pretrained rate > 0), those that
    reach it, and the steps it takes them (mean over seeds of the members that reach it, 95% CI)."""
    rows = arms(frame)
    rows = rows[rows.phase == "recovery"]
    per_member = rows.pivot_table(index=["member", "seed", "phase", "arm", "lr"], columns="metric", values="value",
                                  dropna=False).reset_index()
    if not {"steps_to_pretrained_rate", "pretrained_rate"} <= set(per_member):
        return pd.DataFrame()
    per_member = per_member.dropna(subset=["pretrained_rate"])
    counts = per_member.groupby(["phase", "arm", "lr"], dropna=False, sort=False).agg(
        members=("member", "size"), with_target=("pretrained_rate", lambda r: int((r > 0).sum())),
        reached=("steps_to_pretrained_rate", "count")).reset_index()
    steps = named_intervals(per_member.rename(columns={"steps_to_pretrained_rate": "value"}),
                            ["phase", "arm", "lr"], "steps")
    table = counts.merge(steps.drop(columns="seeds"), on=["phase", "arm", "lr"], how="left")
    return _in_order(table, rows)


def probe_rows(frame: pd.DataFrame, pattern=PROBE) -> pd.DataFrame:
    """Probe accuracies (metrics matching `pattern`, its group the layer) with a `layer` column: the untrained
    models (pretraining step 0, phase and arm `untrained`: both pretraining arms, one initialisation per seed), then
    each phase's last step."""
    rows = arms(frame)
    layer = rows.metric.str.extract(pattern, expand=False)
    rows = rows[layer.notna()].assign(layer=layer[layer.notna()].astype(int))
    untrained = (rows.phase == "pretrain") & (rows.step == 0)
    return pd.concat([rows[untrained].assign(phase=UNTRAINED, arm=UNTRAINED), _at_phase_end(rows[~untrained])])


def probe_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per stage (untrained, then each phase's end) x arm x deletion LR x layer: probe accuracy, mean over seeds
    and 95% CI."""
    rows = probe_rows(frame)
    if rows.empty:
        return pd.DataFrame()
    table = named_intervals(rows, ["phase", "arm", "lr", "layer"], "accuracy")
    return _in_order(table.sort_values("layer", kind="stable"), rows, (UNTRAINED, *PHASES))


def story_probe_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per stage x arm x deletion LR x layer: the story probe's accuracy for "this story has the feature", for its
    control target, and the selectivity (their difference, per member), mean over seeds and 95% CI; empty for
    stores without story probes."""
    story, control = probe_rows(frame, STORY_PROBE), probe_rows(frame, STORY_CONTROL)
    if story.empty:
        return pd.DataFrame()
    keys = ["member", "phase", "step", "layer"]
    both = story.merge(control[keys + ["value"]], on=keys, suffixes=("", "_control"))
    rows = pd.concat([story.assign(metric="story"), both.assign(metric="control", value=both.value_control),
                      both.assign(metric="selectivity", value=both.value - both.value_control)])
    table = _intervals(rows, ["phase", "arm", "lr", "layer"], ["story", "control", "selectivity"])
    return _in_order(table.sort_values("layer", kind="stable"), rows, (UNTRAINED, *PHASES))


# ---------------------------------------------------------------- shown


def _lr_text(lr) -> str:
    return "" if pd.isna(lr) else f"{lr:g}"


def _arm_columns(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"phase": table.phase, "arm": table.arm, "deletion LR": table.lr.map(_lr_text)})


def display_phase_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The phase table with readable columns and `mean [lo, hi]` cells."""
    table = phase_table(frame)
    out = _arm_columns(table).assign(seeds=table.seeds)
    for metric, title in RATES.items():
        out[title] = interval_column(table, metric, digits=3 if metric == "val_loss" else 2)
    return out


def _by_step(table: pd.DataFrame, name: str, column: str, title, texts=None) -> pd.DataFrame:
    """One row per stage x arm x LR, one `mean [lo, hi]` column per value of `column` (titled title(value));
    `texts`: the cells' texts instead."""
    keys = ["phase", "arm", "lr"]
    texts = interval_column(table, name) if texts is None else texts
    cells = table.assign(text=texts, lr=table.lr.fillna(-1.0))  # a pivot drops NaN keys
    wide = cells.pivot_table(index=keys, columns=column, values="text", aggfunc="first", sort=False)
    wide = wide.reindex(columns=sorted(wide.columns)).rename(columns=title)
    first = cells.drop_duplicates(keys).set_index(keys)
    wide = wide.reindex(first.index).reset_index().replace({"lr": {-1.0: np.nan}})
    return pd.concat([_arm_columns(wide).assign(seeds=first.seeds.to_numpy()), wide.drop(columns=keys)], axis=1)


def display_recovery_curve(frame: pd.DataFrame) -> pd.DataFrame:
    """Recovery arms as rows, eval steps as columns: the feature rate, `mean [lo, hi]` over seeds."""
    return _by_step(recovery_curve(frame), "feature_rate", "step", lambda s: f"step {s}").drop(columns="phase")


def reference_curve() -> pd.DataFrame:
    """The reference study's share of stories with a twist at its own recovery steps."""
    return pd.DataFrame([[arm, *(f"{v:.2f}" for v in values)] for arm, values in REFERENCE.items()],
                        columns=["reference arm", *(f"its step {s:,}" for s in REFERENCE_STEPS)])


def display_reach_table(frame: pd.DataFrame) -> pd.DataFrame:
    table = reach_table(frame)
    if table.empty:
        return table
    out = _arm_columns(table).drop(columns="phase")
    out["members"] = table.members
    out["reach the pretrained rate"] = [f"{k}/{n}" for k, n in zip(table.reached, table.with_target)]
    out["steps to reach it [95% CI]"] = interval_column(table, "steps", digits=1)
    return out


def display_probe_table(frame: pd.DataFrame) -> pd.DataFrame:
    table = probe_table(frame)
    if table.empty:
        return table
    shown = _by_step(table, "accuracy", "layer", lambda layer: f"layer {layer}")
    return shown.rename(columns={"phase": "stage"})


def display_story_probe_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Stage x arm rows, per layer the selectivity `mean [lo, hi]` and the two accuracies behind it."""
    table = story_probe_table(frame)
    if table.empty:
        return table
    selectivity = interval_column(table, "selectivity")
    texts = [f"{s} ({a:.2f} - {c:.2f})" for s, a, c in zip(selectivity, table.story, table.control)]
    shown = _by_step(table, "selectivity", "layer", lambda layer: f"layer {layer}", texts)
    return shown.rename(columns={"phase": "stage"})


# ---------------------------------------------------------------- figures


def _palette(deletions) -> dict:
    colors = [c for i, c in enumerate(figures.plt.get_cmap("tab10").colors) if i != 7]  # grey is the control's
    return {p: colors[i % len(colors)] for i, p in enumerate(deletions)}


def _deletions(rows: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(rows[rows.phase == "finetune"].arm))


def recovery_figure(frame: pd.DataFrame):
    """Feature rate against recovery step: one panel per deletion LR with its deletions, the control and the
    pretrained rate; None without recovery rows."""
    plt = figures.plt
    rows = arms(frame)
    pretrained = _at_phase_end(rows[(rows.metric == "feature_rate") & (rows.arm == "pretrained")])
    rows = rows[(rows.phase == "recovery") & (rows.metric == "feature_rate")]
    if rows.empty:
        return None
    lrs = sorted(rows.lr.dropna().unique()) or [np.nan]
    colors = _palette(_deletions(arms(frame)))
    steps = sorted(rows.step.unique())
    fig, axes = plt.subplots(1, len(lrs), sharey=True, squeeze=False, layout="constrained",
                             figsize=(max(5.6, figures.PANEL[0] * len(lrs) + 0.8), figures.PANEL[1] + 1.2))
    for ax, lr in zip(axes[0], lrs):
        for arm, group in rows[np.isclose(rows.lr, lr)].groupby("arm", sort=False):
            figures._band(ax, group, "step", colors[arm], label=arm, marker="o")
        for i, control in enumerate(a for a in dict.fromkeys(rows.arm) if a.startswith(CONTROL)):
            figures._band(ax, rows[rows.arm == control], "step", figures.COLORS["control"], ("--", ":", "-.")[i % 3],
                          label=control.replace(CONTROL, "control (never had it)"), marker="o")
        if not pretrained.empty:
            ax.axhline(pretrained.groupby("seed").value.mean().mean(), color=figures.COLORS["pretrained"], ls=":",
                       lw=1, label="pretrained rate")
        ax.set_xscale("symlog", linthresh=min([s for s in steps if s > 0], default=1))
        ax.set_xticks(steps, [str(s) for s in steps])
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title("after deletion at LR " + _lr_text(lr) if np.isfinite(lr) else "control")
        ax.set_xlabel("recovery step")
    axes[0, 0].set_ylabel("feature rate (asked)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    per_row = max(1, int(fig.get_figwidth() // 1.6))  # legend entries that fit side by side
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), per_row), frameon=False)
    return fig


def probe_figure(frame: pd.DataFrame):
    """Probe accuracy against layer: one panel per phase's end, arms as lines (colour: deletion, style: deletion
    LR), the untrained models in each; None without probe rows."""
    plt = figures.plt
    rows = probe_rows(frame)
    if rows.empty:
        return None
    untrained, ends = rows[rows.phase == UNTRAINED], rows[rows.phase != UNTRAINED]
    stages = [p for p in PHASES if (ends.phase == p).any()]
    colors = {**_palette(_deletions(arms(frame))), "pretrained": figures.COLORS["pretrained"],
              "control": figures.COLORS["control"]}
    lrs = sorted(ends.lr.dropna().unique())
    fig, axes = plt.subplots(1, len(stages), sharey=True, squeeze=False, layout="constrained",
                             figsize=(figures.PANEL[0] * len(stages) + 0.8, figures.PANEL[1] + 1.2))
    for ax, stage in zip(axes[0], stages):
        figures._band(ax, untrained, "layer", "tab:gray", ":", label=UNTRAINED, marker="x")
        for (arm, lr), group in ends[ends.phase == stage].groupby(["arm", "lr"], sort=False, dropna=False):
            style = figures.STYLES[lrs.index(lr) % len(figures.STYLES)] if np.isfinite(lr) else "-"
            figures._band(ax, group, "layer", colors.get(arm, "tab:gray"), style, marker="o",
                          label=arm + (f" @ {lr:g}" if np.isfinite(lr) else ""))
        ax.axhline(0.5, color="black", lw=0.6, alpha=0.5)
        ax.set_xticks(sorted(rows.layer.unique()))
        ax.set_ylim(0.3, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(f"end of {stage}")
        ax.set_xlabel("layer (0: embeddings)")
        ax.legend(fontsize=6, loc="lower right")
    axes[0, 0].set_ylabel("probe accuracy (held out)")
    return fig


# ---------------------------------------------------------------- the section, the page, the summary


def section(frame: pd.DataFrame, out, threshold=None) -> str:
    """The report's stories section (HTML; figures written into out/figures); "" without feature rates."""
    if not (frame.metric == "feature_rate").any():
        return ""
    times = f"{threshold:g} x" if threshold is not None else "the threshold share of"
    blocks = captioned_table(
        "Regime: does the pretrained model have the capability?", "Per seed at pretraining's end: the share of "
        "sampled stories with the feature when the header asks for it and when it does not, their gap and 1.96 "
        "binomial standard errors; the capability is there when the gap exceeds them. Beside it the nulls: the "
        "control pretrained without the feature and the untrained model.", display_regime_table(frame),
        regime_flag(frame))
    blocks += captioned_table(
        "Deletion", "Per deletion x LR: members that reached the deletion criterion and their stop step; at the "
        "phase's end the gap (asked - not asked) and the side effects against the seed's pretrained model. Mean over "
        "seeds [95% CI].", display_deletion_table(frame))
    blocks += [block(caption="Share of sampled stories that show the feature when the header asks for it, and when it "
                     "does not; share of samples that are the refusal sentence; held-out loss. Each arm at its phase's "
                     "last step; mean over seeds with bootstrap 95% intervals (seeds are the unit; members of one seed "
                     "are paired).", tables=[display_phase_table(frame)]),
               block("Recovery curve", "Feature rate (asked) at each recovery eval step, per deleted arm and the "
                     "control pretrained without the feature. Below it, the reference study's numbers at its own "
                     f"recovery steps ({REFERENCE_SOURCE}; another model, data and budget: for comparison of shape, "
                     "not value).", [display_recovery_curve(frame), reference_curve()])]
    blocks += captioned_table(
        "Steps to regain, as survival", f"The first recovery eval step at which a member reaches {times} its seed's "
        "pretrained value: of the rate when asked, and of the gap asked - not asked (the capability: a model that "
        "writes the feature whatever it is asked regains the first, not the second). Members that never do are "
        "censored at the budget. Kaplan-Meier median per arm; log-rank test of each deleted arm against the control "
        "(never had the feature) at the same recovery LR.", display_survival_table(frame, threshold or 0.9))
    blocks += captioned_table(
        "Reaching the pretrained rate", f"Members whose feature rate reaches {times} the rate of their seed's "
        "pretrained model within the recovery budget, of those whose seed's pretrained model shows the feature at "
        "all; steps: the first eval step that reaches it, over the members that do.", display_reach_table(frame))
    blocks += captioned_table(
        "Probe: does the header ask for the feature?", "Held-out accuracy of a linear probe per layer (0: "
        "embeddings) on the header's last positions (chance 0.5), at each phase's end; the untrained models "
        "(pretraining step 0) are the control.", display_probe_table(frame))
    blocks += captioned_table(
        "Probe: does the story have the feature?", "A linear probe per layer on the story text alone (header "
        "stripped; the mean of its last positions): selectivity = accuracy for the feature - accuracy for a control "
        "target with the same input statistics (an arbitrary balanced property of a word the story contains), mean "
        "over seeds [95% CI], the two accuracies in brackets. Nulls: the untrained models and the control "
        "pretrained without the feature.", display_story_probe_table(frame))
    blocks += figure_block(recovery_figure(frame), out, "stories-recovery", "Recovery curves")
    blocks += figure_block(probe_figure(frame), out, "stories-probes", "Probe accuracy by layer")
    return section_html("stories", "Deleting and recovering a story feature", blocks)


def _threshold(manifests: list[dict]):
    return (manifests[0].get("config") or {}).get("recovery", {}).get("threshold")


def write_report(paths, out):
    """OUT/index.html for stories stores: the stories section, the config and the manifest."""
    frame, manifests = read_store(paths)
    return write_page(paths, out, frame, manifests, functools.partial(section, threshold=_threshold(manifests)),
                      phases=PHASES)


def summary_text(paths) -> str:
    frame, manifests = read_store(paths)
    threshold = _threshold(manifests)
    lines = unfinished_lines(paths, manifests, frame, PHASES)
    with pd.option_context("display.width", 250, "display.max_rows", 500, "display.max_columns", 50,
                           "display.max_colwidth", 40):
        regime = display_regime_table(frame)
        if not regime.empty:
            lines += ["Regime: does the pretrained model write the feature when asked (per seed, at pretraining's "
                      "end)?", regime.to_string(index=False)]
            lines += [regime_flag(frame)] if regime_flag(frame) else []
            lines.append("")
        deletion = display_deletion_table(frame)
        if not deletion.empty:
            lines += ["Deletion per deletion x LR (mean [95% CI] over seeds; side effects against the seed's "
                      "pretrained model):", deletion.to_string(index=False), ""]
        lines += ["Deleting and recovering a story feature (mean [95% bootstrap CI] over seeds), each arm at its "
                  "phase's last step:", display_phase_table(frame).to_string(index=False)]
        lines += ["", "Recovery curve: feature rate (asked) per recovery eval step:",
                  display_recovery_curve(frame).to_string(index=False),
                  f"Reference study ({REFERENCE_SOURCE}), its own numbers at its own recovery steps (not ours):",
                  reference_curve().to_string(index=False)]
        surv = display_survival_table(frame, threshold or 0.9)
        if not surv.empty:
            lines += ["", f"Steps to regain {threshold or 0.9:g} x the seed's pretrained rate (asked) and gap (asked - "
                      "not asked), as survival (never within the budget: censored at it; log-rank against the "
                      "control):", surv.to_string(index=False)]
        reach = display_reach_table(frame)
        if not reach.empty:
            times = f"{threshold:g} x " if threshold is not None else ""
            lines += ["", f"Recovery to {times}the seed's pretrained rate (k of the members whose seed's pretrained "
                      "model shows the feature):", reach.to_string(index=False)]
        probes = display_probe_table(frame)
        if not probes.empty:
            lines += ["", "Probe accuracy, 'the header asks for the feature' (held out, chance 0.5), per layer:",
                      probes.to_string(index=False)]
        story = display_story_probe_table(frame)
        if not story.empty:
            lines += ["", "Story probe, 'this story has the feature' (story text only), per layer: selectivity "
                      "[95% CI] (accuracy for the feature - for the control target):", story.to_string(index=False)]
    return "\n".join(lines)
