"""The study's figures (matplotlib, Agg backend). Each function returns a Figure, or None when the store lacks
its data; `save` writes one as PNG and SVG.

Curves are means over seeds (each seed first averaged over the members it contributes to the line) with shaded
bootstrap 95% intervals over seeds. Panels are laid out with fine-tuning LRs as rows (small to large) and sampling
priors as columns (high to low); line styles tell spurious strengths (C_Tr) apart.
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
from matplotlib.lines import Line2D  # noqa: E402

from analysis.emergence import SETTING, in_setting_order  # noqa: E402
from analysis.load import Study  # noqa: E402
from analysis.stats import bootstrap_mean, rate_intervals  # noqa: E402

N_BOOT = 500  # per plotted point; enough for a band
PANEL = (3.3, 2.5)  # inches per panel
STYLES = ["-", "--", ":", "-."]
COLORS = {"pt": "tab:blue", "ft": "tab:orange", "pretrained": "black", "finetuned": "tab:blue", "reft": "tab:green",
          "init": "tab:gray", "shuffled": "tab:red", "control": "tab:gray"}
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


def _grid(rows: list[str], cols: list[str], row_name: str, col_name: str, ylabel: str, xlabel: str):
    """Panels rows x cols; titles name the column setting, y labels of the first column name the row setting."""
    fig, axes = plt.subplots(len(rows), len(cols), sharex=True, sharey=True, squeeze=False, layout="constrained",
                             figsize=(PANEL[0] * len(cols) + 0.8, PANEL[1] * len(rows) + 0.9))
    for j, col in enumerate(cols):
        axes[0, j].set_title(f"{col_name} {col}")
        axes[-1, j].set_xlabel(xlabel)
    for i, row in enumerate(rows):
        axes[i, 0].set_ylabel(f"{row_name} {row}\n{ylabel}")
    for ax in axes.flat:
        ax.set_ylim(-0.02, 1.02)
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


def _spurious_legend(fig, levels, entries):
    """One legend for the figure: colour entries [(label, colour, style)], then the C_Tr line styles."""
    handles = [Line2D([], [], color=c, linestyle=s, label=lab) for lab, c, s in entries]
    if len(levels) > 1:
        handles += [Line2D([], [], color="black", linestyle=_style(v, levels), label=f"C_Tr = {v:g}")
                    for v in levels]
    per_row = max(1, int(fig.get_figwidth() // 2.3))  # legend entries that fit side by side
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), per_row), frameon=False)


def pruning_curves(study: Study, method: str = "neurons", budget: float | None = None):
    """C_PT and C_FT accuracy of fine-tuned members against units pruned, pretrained members as a control."""
    results = study.results
    rows = results[(results.phase == "prune") & results.metric.isin([f"{method}.pt_acc", f"{method}.ft_acc"])]
    if (grid := _grid_rows(rows, study)) is None:
        return None
    rows, lrs, priors, levels = grid
    fig, axes = _grid(lrs, priors, "fine-tuning LR", "prior", "accuracy", f"{method} removed (k)")
    for i, lr in enumerate(lrs):
        for j, prior in enumerate(priors):
            ax = axes[i, j]
            control = rows[(rows.kind == "pretrained") & (rows.prior_label == prior) &
                           (rows.metric == f"{method}.pt_acc")]
            _band(ax, control, "step", COLORS["pretrained"], ":")
            mine = rows[(rows.kind == "finetuned") & (rows.finetune_lr_label == lr) & (rows.prior_label == prior)]
            for spurious in levels:
                for target in ("pt", "ft"):
                    line = mine[(mine.spurious == spurious) & (mine.metric == f"{method}.{target}_acc")]
                    _band(ax, line, "step", COLORS[target], _style(spurious, levels), marker="o")
            if budget is not None:
                ax.axvline(budget, color="tab:purple", linewidth=0.8, linestyle="-.")
    entries = [("C_PT, fine-tuned", COLORS["pt"], "-"), ("C_FT, fine-tuned", COLORS["ft"], "-"),
               ("C_PT, pretrained (control)", COLORS["pretrained"], ":")]
    if budget is not None:
        entries.append(("pruning budget", "tab:purple", "-."))
    _spurious_legend(fig, levels, entries)
    fig.suptitle(f"Pruning {method}: does removing a few units bring C_PT back?")
    return fig


def probe_layers(study: Study, site: str = "resid"):
    """Probe accuracy for the pretraining target by layer: pretrained, fine-tuned, reFT, and the init control."""
    results = study.results
    rows = results[(results.phase == "probe") &
                   results.metric.isin([f"{site}.pt_acc", f"init_{site}.pt_acc", f"{site}.shuffled_acc"])]
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
            shuffled = children[(children.kind == "finetuned") & (children.metric == f"{site}.shuffled_acc")]
            _band(ax, shuffled, "step", COLORS["shuffled"], "-.")
    steps = sorted(rows.step.unique())
    for ax in axes.flat:
        ax.set_xticks(steps)
    _spurious_legend(fig, levels, [("pretrained", COLORS["pretrained"], "-"), ("fine-tuned", COLORS["finetuned"], "-"),
                                   ("reverse fine-tuned", COLORS["reft"], "-"),
                                   ("randomly initialised (control)", COLORS["init"], ":"),
                                   ("shuffled labels, fine-tuned (control)", COLORS["shuffled"], "-.")])
    fig.suptitle(f"Linear probes on the {site} stream: is the pretraining target still readable?")
    return fig


def reft_curves(study: Study, evidence: pd.DataFrame | None = None, threshold: float | None = None):
    """C_PT accuracy during reverse fine-tuning against the control that never had C_PT."""
    results = study.results
    rows = results[results.phase.isin(["reft", "control_reft"]) & (results.metric == "pt_acc")]
    if (grid := _grid_rows(rows, study, levels_of=lambda r: r.kind == "reft")) is None:
        return None
    rows, lrs, priors, levels = grid
    factors = sorted(study.members.control_lr_factor.dropna().unique())
    greys = dict(zip(factors, np.linspace(0.25, 0.65, max(len(factors), 1))))
    fig, axes = _grid(lrs, priors, "fine-tuning LR", "prior", "C_PT accuracy", "reverse fine-tuning step")
    for i, lr in enumerate(lrs):
        for j, prior in enumerate(priors):
            ax = axes[i, j]
            reft = rows[(rows.kind == "reft") & (rows.finetune_lr_label == lr) & (rows.prior_label == prior)]
            for spurious in levels:
                _band(ax, reft[reft.spurious == spurious], "step", COLORS["reft"], _style(spurious, levels))
            controls = rows[(rows.kind == "control_reft") & (rows.finetune_lr_label == lr)]
            for factor in factors:
                ids = study.members.member[study.members.control_lr_factor == factor]
                _band(ax, controls[controls.member.isin(ids)], "step", str(greys[factor]), "--")
            if threshold is not None and evidence is not None:
                cell = evidence[(evidence.finetune_lr_label == lr) & (evidence.prior_label == prior)]
                if len(cell):
                    ax.axhline(threshold * cell.pt_acc_pretrained.mean(), color="tab:purple", linewidth=0.8,
                               linestyle="-.")
    entries = [("reFT of the fine-tuned model", COLORS["reft"], "-")]
    entries += [(f"control, LR x{factor:g}", str(greys[factor]), "--") for factor in factors]
    if threshold is not None:
        entries.append((f"threshold ({threshold:g} x pretrained C_PT)", "tab:purple", "-."))
    _spurious_legend(fig, levels, entries)
    fig.suptitle("Reverse fine-tuning: how fast does C_PT come back, compared with a model that never had it?")
    return fig


def wrapper_heatmap(evidence: pd.DataFrame):
    """Wrapper rate per fine-tuning LR x prior, one panel per spurious strength; cells show k/n."""
    if evidence.empty or evidence.wrapper.notna().sum() == 0:
        return None
    rates = in_setting_order(rate_intervals(evidence, "wrapper", SETTING), evidence, SETTING)
    lrs = list(dict.fromkeys(rates.finetune_lr_label))
    priors = list(dict.fromkeys(in_setting_order(rates, evidence, ["prior_label"]).prior_label))
    levels = sorted(rates.spurious.dropna().unique())
    fig, axes = plt.subplots(1, len(levels), figsize=(1.1 * len(priors) * len(levels) + 2.2, 0.8 * len(lrs) + 1.6),
                             squeeze=False, layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
    for ax, spurious in zip(axes[0], levels):
        table = rates[rates.spurious == spurious]
        grid = np.full((len(lrs), len(priors)), np.nan)
        for r in table.itertuples():
            i, j = lrs.index(r.finetune_lr_label), priors.index(r.prior_label)
            grid[i, j] = r.rate
            text = f"{r.k}/{r.n}" if r.n else "n/a"
            ax.text(j, i, text, ha="center", va="center", color="white" if (r.rate or 0) < 0.6 else "black")
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(priors)), priors)
        ax.set_yticks(range(len(lrs)), lrs)
        ax.set_xlabel("sampling prior of O_FT in pretraining")
        ax.set_ylabel("fine-tuning LR")
        ax.set_title(f"C_Tr = {spurious:g}")
    fig.colorbar(image, ax=axes[0].tolist(), label="wrapper rate (members k/n)", shrink=0.9)
    fig.suptitle("Where does a wrapper emerge?")
    return fig


def _attention_matrix(rows: pd.DataFrame, layers, heads, columns) -> np.ndarray:
    """(layer, head) x (query, target) matrix of mean attention mass over `rows`' members."""
    means = rows.groupby(["step", "metric"]).value.mean()
    grid = np.full((len(layers) * len(heads), len(columns)), np.nan)
    for li, layer in enumerate(layers):
        for hi, head in enumerate(heads):
            for ci, (query, target) in enumerate(columns):
                grid[li * len(heads) + hi, ci] = means.get((layer, f"{query}.h{head}.{target}"), np.nan)
    return grid


def attention_maps(study: Study):
    """Attention mass from the answer position per head, before and after fine-tuning and after reFT."""
    rows = study.results[study.results.phase == "attention"]
    if rows.empty:
        return None
    rows = _with_members(rows, study)
    parts = rows.metric.str.split(".", expand=True)
    rows = rows.assign(query=parts[0], head=parts[1].str[1:].astype(int), target=parts[2])
    layers, heads = sorted(rows.step.unique()), sorted(rows["head"].unique())
    queries = [q for q in ("pt_query", "ft_query") if q in set(rows["query"])]
    targets = [t for t in ("operand", "bos", "pt_tokens", "ft_tokens") if t in set(rows.target)]
    columns = [(q, t) for q in queries for t in targets]
    lrs, _ = _settings_grid(study)
    stages = [("pretrained", None)] + [(kind, lr) for kind in ("finetuned", "reft") for lr in lrs]
    stages = [(k, lr) for k, lr in stages if (rows.kind == k).any()]
    if not stages:
        return None
    levels = _spurious_levels(study.members[study.members.kind == "finetuned"]) or [np.nan]
    fig, axes = plt.subplots(len(levels), len(stages), squeeze=False, layout="constrained",
                             figsize=(1.9 * len(stages) + 1.5, 0.28 * len(layers) * len(heads) * len(levels) + 2.2))
    names = {"pretrained": "pretrained", "finetuned": "fine-tuned", "reft": "reFT"}
    matrices = {}
    for i, spurious in enumerate(levels):
        for j, (kind, lr) in enumerate(stages):
            mine = rows[rows.kind == kind]
            if lr is not None:
                mine = mine[(mine.finetune_lr_label == lr) & (mine.spurious == spurious)]
            matrices[i, j] = _attention_matrix(mine, layers, heads, columns)
    top = np.nanmax([np.nanmax(m) if np.isfinite(m).any() else 0.0 for m in matrices.values()]) or 1.0
    for (i, j), matrix in matrices.items():
        (kind, lr), spurious, ax = stages[j], levels[i], axes[i, j]
        image = ax.imshow(matrix, cmap="magma", vmin=0, vmax=top, aspect="auto")
        ax.set_xticks(range(len(columns)), [f"{q.split('_')[0].upper()}q: {t}" for q, t in columns]
                      if i == len(levels) - 1 else [], rotation=90)
        ax.set_yticks(range(len(layers) * len(heads)),
                      [f"L{layer} h{h}" for layer in layers for h in heads] if j == 0 else [])
        title = names[kind] + (f" ({lr} LR)" if lr else "")
        ax.set_title(title + (f"\nC_Tr = {spurious:g}" if len(levels) > 1 and np.isfinite(spurious) else ""))
    fig.colorbar(image, ax=axes.ravel().tolist(), label="attention mass", shrink=0.8)
    fig.suptitle("Attention per head from the answer position")
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
