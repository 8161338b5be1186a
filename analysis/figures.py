"""The study's figures (matplotlib, Agg backend). Each function returns a Figure, or None when the store lacks
its data; `save` writes one as PNG and SVG.

Curves are means over seeds (each seed first averaged over the members it contributes to the line) with shaded
bootstrap 95% intervals over seeds. Panels are laid out with fine-tuning LRs as rows (small to large) and sampling
priors as columns (high to low); colour tells what a line is, line style only the spurious strength (C_Tr); lines
without a C_Tr (nulls, controls) and reference lines (budget, threshold, 0) are solid. Every instrument is drawn
with its null: the pruning gain over k = 0 beside k random neurons and the control pruned the same way, probes
beside the untrained model and the control target, reFT beside the control that never had C_PT (as curves and as
Kaplan-Meier curves of steps to revival); attention as the change from the pretrained parent. `class_shares` draws
the taxonomy's headline.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator, ScalarFormatter  # noqa: E402

from analysis.load import Study  # noqa: E402
from analysis.measures import RANDOM_METHOD, UNIT_METHODS, lr_key  # noqa: E402
from analysis.settings import describe_setting  # noqa: E402
from analysis.stats import bootstrap_mean  # noqa: E402

N_BOOT = 500  # per plotted point; enough for a band
PANEL = (3.3, 2.5)  # inches per panel
STYLES = ["-", "--", ":", "-."]
COLORS = {"pt": "tab:blue", "ft": "tab:orange", "pretrained": "black", "finetuned": "tab:blue", "reft": "tab:green",
          "init": "tab:gray", "control_target": "tab:red", "control": "tab:gray", "random": "0.35",
          "control_null": "tab:brown", "budget": "tab:purple", "threshold": "tab:purple"}
CLASS_COLORS = {"no-op": "0.75", "untouched": "0.45", "reuse": "tab:purple", "kept": "tab:blue", "hidden wrapper": "tab:green",
                "overwrite": "tab:red"}
plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8,
                     "svg.fonttype": "none"})


def _ordered_labels(members: pd.DataFrame, label: str, value: str, descending: bool = False) -> list[str]:
    rows = members[members[label].astype(str) != ""].dropna(subset=[value])
    order = rows.groupby(label)[value].first().sort_values(ascending=not descending)
    return list(order.index)


def _spurious_levels(members: pd.DataFrame) -> list[float]:
    return sorted(members.spurious.dropna().unique())


def _style(spurious, levels) -> str:
    return STYLES[levels.index(spurious) % len(STYLES)] if spurious in levels else "-"


def _band(ax, frame: pd.DataFrame, x: str, color: str, style: str = "-", label: str | None = None,
          value: str = "value", marker: str | None = None) -> None:
    """Mean over seeds of `value` at each x, with its bootstrap interval shaded."""
    if frame.empty:
        return
    per_seed = frame.groupby([x, "seed"])[value].mean().reset_index()
    points = [(x_value, *bootstrap_mean(group[value], n_boot=N_BOOT))
              for x_value, group in per_seed.groupby(x, sort=True)]
    xs, mean, low, high = (np.array(v, float) for v in zip(*points))
    ax.plot(xs, mean, style, color=color, label=label, marker=marker, markersize=3, linewidth=1.4)
    if np.isfinite(low).any():
        ax.fill_between(xs, low, high, color=color, alpha=0.15, linewidth=0)


def _grid(rows: list[str], cols: list[str], row_name: str, col_name: str, ylabel: str, xlabel: str,
          ylim=(-0.02, 1.02)):
    """Panels rows x cols; titles name the column setting, y labels of the first column name the row setting;
    `ylim` None: scaled to the data (an effect near 0 stays visible)."""
    fig, axes = plt.subplots(len(rows), len(cols), sharex=True, sharey=True, squeeze=False, layout="constrained",
                             figsize=(PANEL[0] * len(cols) + 0.8, PANEL[1] * len(rows) + 0.9))
    for j, col in enumerate(cols):
        axes[0, j].set_title(f"{col_name} {col}")
        axes[-1, j].set_xlabel(xlabel)
    for i, row in enumerate(rows):
        axes[i, 0].set_ylabel(f"{row_name} {row}\n{ylabel}")
    for ax in axes.flat:
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
    return fig, axes


def _settings_grid(study: Study, kinds=("finetuned",)):
    members = study.members[study.members.kind.isin(list(kinds))]
    lrs = _ordered_labels(members, "finetune_lr_label", "finetune_lr")
    priors = _ordered_labels(study.members[study.members.kind == "pretrained"], "prior_label", "prior",
                             descending=True)
    return lrs, priors


def _with_members(rows: pd.DataFrame, study: Study) -> pd.DataFrame:
    """Rows joined to their member's kind and settings (label columns)."""
    info = study.members[["member", "kind", "finetune_lr_label", "prior_label"]]
    return rows.merge(info, on="member", how="left")


def _grid_rows(rows: pd.DataFrame, study: Study, levels_of=None):
    """(rows with member settings, LR labels, prior labels, C_Tr levels), or None when there is nothing to draw.

    `levels_of` picks the rows whose C_Tr values form the levels (default: all of them)."""
    if rows.empty:
        return None
    rows = _with_members(rows, study)
    lrs, priors = _settings_grid(study)
    if not lrs:
        return None
    levels = _spurious_levels(rows if levels_of is None else rows[levels_of(rows)])
    return rows, lrs, priors, levels


def _spurious_legend(fig, levels, entries, whose: str = ""):
    """One legend for the figure: colour entries [(label, colour, style)], then the C_Tr line styles (`whose`: the
    lines they apply to, where other lines are solid whatever C_Tr)."""
    handles = [Line2D([], [], color=c, linestyle=s, label=lab) for lab, c, s in entries]
    if len(levels) > 1:
        handles += [Line2D([], [], color="black", linestyle=_style(v, levels),
                           label=f"C_Tr = {v:g}" + (f" ({whose})" if whose else "")) for v in levels]
    widest = max(len(h.get_label()) for h in handles) * 0.075 + 0.7  # inches at legend.fontsize 8, with the line
    per_row = max(1, int(fig.get_figwidth() // widest))  # legend entries that fit side by side
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), per_row), frameon=False)


def _gain(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of `metric` with `value` replaced by its change from k = 0 of the same member (members without a
    k = 0 row dropped): the gain that pruning brings, the effect claim 1 tests."""
    mine = rows[rows.metric == metric]
    unpruned = mine[mine.step == 0].groupby("member").value.first()
    return mine.assign(value=mine.value - mine.member.map(unpruned).astype(float)).dropna(subset=["value"])


def _reference(ax, y=None, x=None, color="black") -> None:
    """A thin reference line (a level or a budget), drawn solid so that line styles keep meaning C_Tr."""
    line = ax.axhline if y is not None else ax.axvline
    line(y if y is not None else x, color=color, linewidth=0.8, linestyle="-", zorder=1, alpha=0.8)


def pruning_curves(study: Study, method: str = "neurons", budget: float | None = None):
    """C_PT gain over k = 0 of fine-tuned members against units pruned (per member, then over seeds), beside the
    nulls, drawn solid: the same members with k random neurons removed (methods that remove neurons), and the control
    that never had C_PT pruned the same way."""
    results = study.results
    random = UNIT_METHODS.get(method) == "neurons"
    metrics = [f"{method}.pt_acc"] + ([f"{RANDOM_METHOD}.pt_acc"] if random else [])
    rows = results[(results.phase == "prune") & results.metric.isin(metrics)]
    if (grid := _grid_rows(rows, study)) is None:
        return None
    rows, lrs, priors, levels = grid
    targeted, null = _gain(rows, f"{method}.pt_acc"), _gain(rows, f"{RANDOM_METHOD}.pt_acc")
    random = random and not null.empty
    control = targeted[targeted.kind == "control_pretrained"]
    fig, axes = _grid(lrs, priors, "fine-tuning LR", "prior", "C_PT gain over k = 0", f"{method} removed (k)",
                      ylim=None)
    for i, lr in enumerate(lrs):
        for j, prior in enumerate(priors):
            ax = axes[i, j]
            _reference(ax, y=0.0)
            if budget is not None:
                _reference(ax, x=budget, color=COLORS["budget"])
            cell = (rows.kind == "finetuned") & (rows.finetune_lr_label == lr) & (rows.prior_label == prior)
            members = set(rows.member[cell])
            _band(ax, control, "step", COLORS["control_null"], "-")
            if random:  # every C_Tr together: removing random neurons is the same null at any C_Tr
                _band(ax, null[null.member.isin(members)], "step", COLORS["random"], "-")
            mine = targeted[targeted.member.isin(members)]
            for spurious in levels:
                _band(ax, mine[mine.spurious == spurious], "step", COLORS["pt"], _style(spurious, levels),
                      marker="o")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    entries = [(f"C_PT gain, fine-tuned members ({method} ranked)", COLORS["pt"], "-")]
    if random:
        entries.append(("null: the same members, k random neurons removed", COLORS["random"], "-"))
    if not control.empty:
        entries.append(("null: the control that never had C_PT, pruned the same way", COLORS["control_null"], "-"))
    if budget is not None:
        entries.append(("pruning budget", COLORS["budget"], "-"))
    _spurious_legend(fig, levels, entries, "of the fine-tuned members")
    fig.suptitle(f"Pruning {method}: does removing a few units bring C_PT back, beyond the nulls?")
    return fig


def probe_layers(study: Study, site: str = "resid"):
    """Probe accuracy for the pretraining target by layer: pretrained, fine-tuned, reFT, and the nulls (the untrained
    model; the control target, an answer about a terminal no query asks about)."""
    results = study.results
    rows = results[(results.phase == "probe") &
                   results.metric.isin([f"{site}.pt_acc", f"init_{site}.pt_acc", f"{site}.control_acc"])]
    if (grid := _grid_rows(rows, study)) is None:
        return None
    # reFT members carry their own LR label; pretrained ones appear in every row of their prior's column.
    rows, lrs, priors, levels = grid
    fig, axes = _grid(lrs, priors, "fine-tuning LR", "prior", "probe accuracy (held out)",
                      "layer (0 = embeddings)" if site == "resid" else "block")
    for i, lr in enumerate(lrs):
        for j, prior in enumerate(priors):
            ax = axes[i, j]
            here = rows[rows.prior_label == prior]
            parents = here[here.kind == "pretrained"]
            _band(ax, parents[parents.metric == f"{site}.pt_acc"], "step", COLORS["pretrained"], "-", marker="o")
            _band(ax, parents[parents.metric == f"init_{site}.pt_acc"], "step", COLORS["init"], ":", marker="o")
            children = here[here.finetune_lr_label == lr]
            for spurious in levels:
                style = _style(spurious, levels)
                for kind in ("finetuned", "reft"):
                    line = children[(children.kind == kind) & (children.spurious == spurious) &
                                    (children.metric == f"{site}.pt_acc")]
                    _band(ax, line, "step", COLORS[kind], style, marker="o")
            control = children[(children.kind == "finetuned") & (children.metric == f"{site}.control_acc")]
            _band(ax, control, "step", COLORS["control_target"], "-.")
    steps = sorted(rows.step.unique())
    for ax in axes.flat:
        ax.set_xticks(steps)
    _spurious_legend(fig, levels, [("pretrained", COLORS["pretrained"], "-"), ("fine-tuned", COLORS["finetuned"], "-"),
                                   ("reverse fine-tuned", COLORS["reft"], "-"),
                                   ("randomly initialised (control)", COLORS["init"], ":"),
                                   ("control target, fine-tuned (null)", COLORS["control_target"], "-.")])
    fig.suptitle(f"Linear probes on the {site} stream: is the pretraining target still readable?")
    return fig


MARGIN = 2.0  # the reFT plot's x-axis ends at this many times the 95th percentile of the steps to revival


def revival_horizon(study: Study) -> float | None:
    """Where the reFT plot's x-axis ends: the first logged step at or past MARGIN x the 95th percentile of the steps
    to revival over reFT members and controls (None without a revival: the whole budget)."""
    results = study.results
    phases = results.phase.isin(["reft", "control_reft"])
    steps = results.value[phases & (results.metric == "steps_to_threshold")].dropna()
    logged = np.sort(results.step[phases & (results.metric == "pt_acc")].unique())
    if steps.empty or not len(logged):
        return None
    beyond = logged[logged >= MARGIN * np.percentile(steps, 95)]
    return float(beyond[0] if len(beyond) else logged[-1])


def _step_axis(ax, steps, right: float | None) -> None:
    """Steps up to `right` (None: the last), on a symmetric-log axis where the logged steps are not evenly spaced
    (reFT logged at log-spaced steps early: linear up to the first logged step, so that step 0 shows)."""
    positive = np.array([s for s in steps if s > 0], float)
    if len(positive) > 1 and len(np.unique(np.diff(np.r_[0.0, positive]))) > 1:
        ax.set_xscale("symlog", linthresh=positive[0], linscale=0.4)
        ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlim(0, right if right is not None else max(steps))


def reft_curves(study: Study, evidence: pd.DataFrame | None = None, threshold: float | None = None):
    """C_PT accuracy during reverse fine-tuning against the control that never had C_PT. Colour tells what is
    trained (reFT green, each control LR factor a grey), line style tells the C_Tr of the fine-tuned member (the
    controls have none: solid); the x-axis ends soon after the revivals (`revival_horizon`)."""
    results = study.results
    rows = results[results.phase.isin(["reft", "control_reft"]) & (results.metric == "pt_acc")]
    if (grid := _grid_rows(rows, study, levels_of=lambda r: r.kind == "reft")) is None:
        return None
    rows, lrs, priors, levels = grid
    factors = sorted(study.members.control_lr_factor.dropna().unique())
    greys = {f: str(g) for f, g in zip(factors, np.linspace(0.2, 0.6, max(len(factors), 1)))}
    horizon, steps = revival_horizon(study), sorted(rows.step.unique())
    shown = "" if horizon is None or horizon >= max(steps) else f" (to {horizon:g} of {max(steps):g})"
    fig, axes = _grid(lrs, priors, "fine-tuning LR", "prior", "C_PT accuracy", "reverse fine-tuning step" + shown)
    for i, lr in enumerate(lrs):
        for j, prior in enumerate(priors):
            ax = axes[i, j]
            if threshold is not None and evidence is not None:
                cell = evidence[(evidence.finetune_lr_label == lr) & (evidence.prior_label == prior)]
                if len(cell):
                    _reference(ax, y=threshold * cell.pt_acc_pretrained.mean(), color=COLORS["threshold"])
            keys = set(lr_key(study.members.reft_lr[(study.members.kind == "reft") &
                                                    (study.members.finetune_lr_label == lr)]).dropna())
            bases = lr_key(study.members.reft_lr_base).to_numpy()
            matched = study.members.member[(study.members.kind == "control_reft") & np.isin(bases, list(keys))]
            controls = rows[(rows.kind == "control_reft") & rows.member.isin(matched)]
            for factor in factors:
                ids = study.members.member[study.members.control_lr_factor == factor]
                _band(ax, controls[controls.member.isin(ids)], "step", greys[factor], "-")
            reft = rows[(rows.kind == "reft") & (rows.finetune_lr_label == lr) & (rows.prior_label == prior)]
            for spurious in levels:
                _band(ax, reft[reft.spurious == spurious], "step", COLORS["reft"], _style(spurious, levels))
            _step_axis(ax, steps, horizon)
    entries = [("reFT of the fine-tuned member", COLORS["reft"], "-")]
    entries += [(f"control (never had C_PT), LR x{factor:g}", greys[factor], "-") for factor in factors]
    if threshold is not None:
        entries.append((f"revival threshold ({threshold:g} x pretrained C_PT)", COLORS["threshold"], "-"))
    _spurious_legend(fig, levels, entries, "reFT of the fine-tuned member")
    fig.suptitle("Reverse fine-tuning: how fast does C_PT come back, compared with a model that never had it?")
    return fig


def class_shares(table: pd.DataFrame, columns, classes):
    """Stacked bars: each setting's share of judged members per taxonomy class (the headline table)."""
    table = table[table.judged > 0] if not table.empty else table
    if table.empty:
        return None
    labels = [describe_setting(r, columns) for _, r in table.iterrows()]
    fig, ax = plt.subplots(figsize=(8.5, 0.32 * len(labels) + 1.6), layout="constrained")
    left = np.zeros(len(table))
    for c in classes:
        share = table[f"{c} share"].fillna(0).to_numpy(float)
        ax.barh(range(len(table)), share, left=left, color=CLASS_COLORS.get(c, "0.5"), label=c, height=0.75)
        left += share
    ax.set_yticks(range(len(table)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of judged fine-tuned members")
    fig.legend(loc="outside lower center", ncols=len(classes), frameon=False)
    ax.set_title("What fine-tuning did to C_PT, by setting")
    return fig


def km_curves(curves: dict, budget: float | None = None):
    """Kaplan-Meier curves of steps to revival, one panel per fine-tuning LR: reFT solid, the controls dashed, each
    with its pointwise Greenwood band (log-log); curves: {(LR label, arm): Kaplan-Meier frame} (analysis.revival.km_steps)."""
    if not curves:
        return None
    lrs = list(dict.fromkeys(lr for lr, _ in curves))
    fig, axes = plt.subplots(1, len(lrs), sharey=True, squeeze=False, layout="constrained",
                             figsize=(PANEL[0] * len(lrs) + 0.8, PANEL[1] + 1.0))
    arms = list(dict.fromkeys(arm for _, arm in curves))
    controls = [a for a in arms if a != "reFT"]
    greys = dict(zip(controls, np.linspace(0.2, 0.6, max(len(controls), 1))))
    for ax, lr in zip(axes[0], lrs):
        for arm in arms:
            km = curves.get((lr, arm))
            if km is None or km.empty:
                continue
            times, survival = km.time.to_numpy(float), km.survival.to_numpy(float)
            if budget is not None and times[-1] < budget:
                times, survival = np.r_[times, budget], np.r_[survival, survival[-1]]
            color = COLORS["reft"] if arm == "reFT" else str(greys[arm])
            ax.step(times, survival, where="post", color=color, linestyle="-" if arm == "reFT" else "--",
                    label=arm, linewidth=1.4)
            low, high = km.survival_lo.to_numpy(float), km.survival_hi.to_numpy(float)
            if len(low) < len(times):  # held to the budget like the curve
                low, high = np.r_[low, low[-1]], np.r_[high, high[-1]]
            ax.fill_between(times, low, high, step="post", color=color, alpha=0.15, linewidth=0)
        ax.set_title(f"fine-tuning LR {lr}")
        ax.set_xlabel("steps")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("not yet revived (Kaplan-Meier S)")
    axes[0, -1].legend(loc="upper right")
    fig.suptitle("Steps to revive C_PT: reFT of suppressed members against the control that never had it")
    return fig


def _attention_matrix(rows: pd.DataFrame, layers, heads, columns) -> np.ndarray:
    """(layer, head) x (query, target) matrix of the mean `value` over `rows`' members."""
    means = rows.groupby(["step", "metric"]).value.mean()
    grid = np.full((len(layers) * len(heads), len(columns)), np.nan)
    for li, layer in enumerate(layers):
        for hi, head in enumerate(heads):
            for ci, (query, target) in enumerate(columns):
                grid[li * len(heads) + hi, ci] = means.get((layer, f"{query}.h{head}.{target}"), np.nan)
    return grid


def attention_change(rows: pd.DataFrame) -> pd.DataFrame:
    """Attention rows of fine-tuned and reFT members with `value` minus that of their pretrained parent (the
    ancestor, for reFT: 0 means the pretrained pattern is back) at the same layer, head, query and target."""
    parents = rows[rows.kind == "pretrained"].set_index(["member", "step", "metric"]).value
    children = rows[rows.kind.isin(["finetuned", "reft"])]
    before = parents.reindex(pd.MultiIndex.from_arrays([children.pretrained, children.step, children.metric]))
    return children.assign(value=children.value.to_numpy() - before.to_numpy()).dropna(subset=["value"])


def attention_maps(study: Study):
    """Attention mass from the answer position per head: the pretrained parents' pattern, then the change that
    fine-tuning and reFT made to it (member minus its pretrained parent, on a diverging scale centred at 0)."""
    rows = study.results[study.results.phase == "attention"]
    if rows.empty:
        return None
    rows = rows.merge(study.members[["member", "kind", "pretrained", "finetune_lr_label"]], on="member", how="left")
    parts = rows.metric.str.split(".", expand=True)
    if parts.shape[1] < 3:
        return None
    rows = rows.assign(query=parts[0], head=parts[1].str[1:], target=parts[2])
    queries = [q for q in ("pt_query", "ft_query") if q in set(rows["query"])]
    targets = [t for t in ("operand", "bos", "pt_tokens", "ft_tokens") if t in set(rows.target)]
    rows = rows[rows["query"].isin(queries) & rows.target.isin(targets)].astype({"head": int})
    columns = [(q, t) for q in queries for t in targets]
    layers, heads = sorted(rows.step.unique()), sorted(rows["head"].unique())
    lrs, _ = _settings_grid(study)
    change = attention_change(rows)
    stages = [(kind, lr) for kind in ("finetuned", "reft") for lr in lrs if
              ((change.kind == kind) & (change.finetune_lr_label == lr)).any()]
    parents = rows[rows.kind == "pretrained"]
    if parents.empty:
        return None
    levels = _spurious_levels(study.members[study.members.kind == "finetuned"]) or [np.nan]
    fig, axes = plt.subplots(len(levels), 1 + len(stages), squeeze=False, layout="constrained",
                             figsize=(1.9 * (1 + len(stages)) + 2.6,
                                      0.28 * len(layers) * len(heads) * len(levels) + 2.2))
    names = {"finetuned": "fine-tuned", "reft": "reFT"}
    changes = {}
    for i, spurious in enumerate(levels):
        for j, (kind, lr) in enumerate(stages, start=1):
            mine = change[(change.kind == kind) & (change.finetune_lr_label == lr)]
            if np.isfinite(spurious):
                mine = mine[mine.spurious == spurious]
            changes[i, j] = _attention_matrix(mine, layers, heads, columns)
    pattern = _attention_matrix(parents, layers, heads, columns)
    spread = max([np.nanmax(np.abs(m)) for m in changes.values() if np.isfinite(m).any()], default=0.0) or 1.0
    norm = Normalize(-spread, spread)  # symmetric: no change is the middle of the colour map
    absolute = ax_change = None
    for (i, j), ax in np.ndenumerate(axes):
        bottom = i == len(levels) - 1
        if j == 0 and i > 0:  # the parents have no C_Tr: drawn once
            ax.set_axis_off()
            continue
        if j == 0:
            absolute = ax.imshow(pattern, cmap="magma", vmin=0, vmax=np.nanmax(pattern) or 1.0, aspect="auto")
            ax.set_title("pretrained parents\n(attention mass)")
            bottom = len(levels) == 1
        else:
            (kind, lr), spurious = stages[j - 1], levels[i]
            ax_change = ax.imshow(changes[i, j], cmap="RdBu_r", norm=norm, aspect="auto")
            ax.set_title(f"{names[kind]}, {lr} LR" +
                         (f"\nC_Tr = {spurious:g}" if len(levels) > 1 and np.isfinite(spurious) else ""))
        ax.set_xticks(range(len(columns)), [f"{q.split('_')[0].upper()}q: {t}" for q, t in columns]
                      if bottom or j == 0 else [], rotation=90)
        ax.set_yticks(range(len(layers) * len(heads)),
                      [f"L{layer} h{h}" for layer in layers for h in heads] if j <= 1 else [])
    fig.colorbar(absolute, ax=axes[:, 0].tolist(), label="attention mass (pretrained)", shrink=0.8,
                 location="left")
    if ax_change is not None:
        fig.colorbar(ax_change, ax=axes[:, 1:].ravel().tolist(), shrink=0.8,
                     label="change in attention mass (member - pretrained parent)")
    fig.suptitle("Attention per head from the answer position: the pretrained parents', then each member's minus its "
                 "parent's")
    return fig


TRAINING_PHASES = {"pretrain": "prior_label", "finetune": "finetune_lr_label", "reft": "finetune_lr_label",
                   "control_pretrain": None, "control_reft": "control_lr_factor"}
PHASE_TITLES = {"pretrain": "pretraining", "finetune": "fine-tuning", "reft": "reverse fine-tuning",
                "control_pretrain": "control pretraining (no C_PT)", "control_reft": "control on the C_PT task"}


def training_curves(study: Study):
    """pt_acc, ft_acc and training loss per phase; one line per prior (pretraining) or LR (later phases)."""
    results = study.results
    phases = [p for p in TRAINING_PHASES if (results.phase == p).any()]
    if not phases:
        return None
    metrics = [("pt_acc", "C_PT accuracy"), ("ft_acc", "C_FT accuracy"), ("train_loss", "training loss")]
    rows = results[results.phase.isin(phases) & results.metric.isin([m for m, _ in metrics])]
    rows = rows.merge(study.members[["member", "finetune_lr_label", "prior_label"]], on="member", how="left")
    fig, axes = plt.subplots(len(phases), len(metrics), squeeze=False, layout="constrained",
                             figsize=(PANEL[0] * len(metrics) + 1.5, PANEL[1] * len(phases) + 0.6))
    palette = plt.get_cmap("tab10").colors
    for i, phase in enumerate(phases):
        mine = rows[rows.phase == phase]
        key = TRAINING_PHASES[phase]
        groups = [("all members", mine)] if key is None else [
            (f"x{v:g}" if isinstance(v, float) else str(v), g) for v, g in mine.groupby(key, sort=False)]
        if key in ("finetune_lr_label", "prior_label"):
            order = _ordered_labels(study.members, key, "finetune_lr" if key == "finetune_lr_label" else "prior",
                                    descending=key == "prior_label")
            groups.sort(key=lambda g: order.index(g[0]) if g[0] in order else len(order))
        for j, (metric, name) in enumerate(metrics):
            ax = axes[i, j]
            for n, (label, group) in enumerate(groups):
                _band(ax, group[group.metric == metric], "step", palette[n % 10], label=label)
            ax.grid(alpha=0.3)
            if metric != "train_loss":
                ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{PHASE_TITLES[phase]}: {name}")
            ax.set_xlabel("step")
        if key is not None:
            title = {"prior_label": "prior", "finetune_lr_label": "fine-tuning LR",
                     "control_lr_factor": "control LR"}[key]
            axes[i, -1].legend(title=title, loc="upper right")
    fig.suptitle("Training curves per phase")
    return fig


def save(fig, directory: Path, name: str) -> dict:
    """Write `name`.png and `name`.svg into `directory`; returns {"png": path, "svg": path, "png_base64": str}."""
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    png = directory / f"{name}.png"
    png.write_bytes(buffer.getvalue())
    svg = directory / f"{name}.svg"
    fig.savefig(svg, format="svg")
    plt.close(fig)
    return {"png": png, "svg": svg, "png_base64": base64.b64encode(buffer.getvalue()).decode("ascii")}
