"""Fine-tuning protocols compared (a study that sweeps `sweep.protocol`, fttrace/engine/protocols.py).

Per protocol and setting (fine-tuning LR, C_Tr), the mean over seeds of each measure with its bootstrap interval
(seeds are the unit of replication): both sides of the question "which protocol keeps C_PT, and which leaves
only a strippable wrapper?"
  ft_acc            C_FT reached (accuracy at the end of fine-tuning)
  pt_acc            C_PT retained (accuracy at the end of fine-tuning); pt_retained = pt_acc / the parent's
  prune_k_revive    smallest number of pruned MLP neurons that brings C_PT back within `prune.tolerance` of the
                    parent's (NaN where none does; the mean is over the seeds where some k does, see prune_revived)
  prune_frac_revive the same as a fraction of the MLP neurons
  prune_revived     0/1: some pruning level revives C_PT
  prune_gain15      mean C_PT gain over the pruning levels 0 < k <= 15 MLP neurons (targeted): C_PT(k) - C_PT(0),
                    a mean over the levels, so it is negative where pruning only hurts and noise gives no gain
  prune_random15    the same for k random neurons: the null the targeted gain must beat
  probe_pt          held-out probe accuracy for the pretraining target (best residual-stream layer)
  reft_steps        reFT steps to the revival threshold, restricted to the budget (the budget where it is not
                    reached; analysis.measures)
  control_steps     the same for the matched control pretrained without C_PT (LR factor 1), and reft_speedup =
                    control_steps / reft_steps (geometric mean over seeds)
  weight_change     relative change of all weights against the parent (phase "weights"), and per part and layer
                    (`attn@0`, `mlp@1`, `unembed`, ...)
Members that diverged (or whose lineage did) are left out.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.figures import plt  # pyplot with the Agg backend, which analysis.figures chooses
from analysis.load import Study
from analysis.measures import lineage_measures
from analysis.stats import CONFIDENCE, cell_intervals

PRUNE_UNITS = 15
LOST_BELOW = 0.5  # a cell "lost" C_PT when its mean C_PT retained is below this x the pretrained
CELLS = ["protocol", "finetune_lr_label", "spurious"]
# (column, label, better): "high" / "low" says which end is better for C_PT preservation or for revival.
MEASURES = [
    ("ft_acc", "C_FT reached", "high"),
    ("pt_acc", "C_PT after FT", "high"),
    ("pt_retained", "C_PT retained (x pretrained)", "high"),
    ("prune_k_revive", "neurons pruned to revive C_PT", "low"),
    ("prune_frac_revive", "fraction pruned to revive C_PT", "low"),
    ("prune_revived", "revived by pruning (rate)", "high"),
    (f"prune_gain{PRUNE_UNITS}", f"C_PT gain, mean over 1..{PRUNE_UNITS} neurons pruned", "high"),
    (f"prune_random{PRUNE_UNITS}", f"C_PT gain, {PRUNE_UNITS} random neurons (null)", "high"),
    ("probe_pt", "probe accuracy, C_PT target", "high"),
    ("reft_steps", "reFT steps to threshold", "low"),
    ("control_steps", "control's steps (never had C_PT)", "low"),
    ("reft_speedup", "reFT speed-up over control", "high"),
    ("weight_change", "relative weight change", "low"),
]
LABELS = {column: label for column, label, _ in MEASURES}
LOG_MEASURES = ("reft_speedup",)  # ratios: summarised by their geometric mean


def has_protocols(study: Study) -> bool:
    return "protocol" in study.members and study.members.protocol.notna().any()


def protocol_order(study: Study) -> list[str]:
    swept = list(study.config.get("sweep", {}).get("protocol", ()) or ())
    present = list(dict.fromkeys(study.members.protocol.dropna()))
    return [p for p in swept if p in present] + [p for p in present if p not in swept]


def _weight_changes(study: Study) -> pd.DataFrame:
    """member x part table: 'weight_change' (all weights) and '<part>@<block>' / '<param>' columns."""
    rows = study.results[(study.results.phase == "weights") & study.results.metric.str.endswith(".weight_change")]
    if rows.empty:
        return pd.DataFrame()
    part = rows.metric.str.removesuffix(".weight_change")
    name = np.where(rows.step >= 0, part + "@" + rows.step.astype(str), part)
    name = np.where(name == "all", "weight_change", name)
    return rows.assign(part=name).pivot_table(index="member", columns="part", values="value", aggfunc="first")


def protocol_measures(study: Study) -> pd.DataFrame:
    """One row per fine-tuned member of a protocol sweep with the measures of the module docstring."""
    m = lineage_measures(study, prune_method="neurons", prune_fraction=0.0, prune_units=PRUNE_UNITS)
    m = m[m.protocol.notna() & ~m.diverged].copy()
    m["pt_retained"] = m.pt_acc / m.pt_acc_pretrained
    m["prune_revived"] = m.prune_k_revive.notna().astype(float).where(m.prune_pt_acc_k0.notna())
    m[f"prune_gain{PRUNE_UNITS}"], m[f"prune_random{PRUNE_UNITS}"] = m.prune_gain, m.prune_random_gain
    m["probe_pt"] = m.probe_pt_finetuned
    m["reft_steps"], m["control_steps"] = m.reft_time, m.control_time
    weights = _weight_changes(study)
    if not weights.empty:
        m = m.join(weights, on="finetuned")
    return m.reset_index(drop=True)


def measure_columns(measures: pd.DataFrame) -> list[str]:
    parts = [c for c in measures.columns if "@" in c] + [
        c for c in ("embed", "pos_embed", "ln_f", "unembed") if c in measures]
    return [c for c, _, _ in MEASURES if c in measures] + sorted(parts, key=lambda c: (c.split("@")[-1], c))


def protocol_table(study: Study, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Columns protocol, finetune_lr_label, spurious, protocol_kind, measure, seeds, value, value_lo, value_hi: one
    row per cell and measure; protocols in the sweep's order, then LRs ascending (empty without protocols)."""
    columns = [*CELLS, "protocol_kind", "measure", "seeds", "value", "value_lo", "value_hi"]
    if not has_protocols(study):
        return pd.DataFrame(columns=columns)
    m = protocol_measures(study)
    kinds = dict(zip(m.protocol, m.protocol_kind))
    frames = []
    for column in measure_columns(m):
        table = cell_intervals(m.rename(columns={column: "value"})[[*CELLS, "seed", "value"]], "value", CELLS,
                               confidence, log=column in LOG_MEASURES)
        frames.append(table.assign(measure=column))
    table = pd.concat(frames, ignore_index=True)
    order = protocol_order(study)
    lrs = m.drop_duplicates("finetune_lr_label").sort_values("finetune_lr").finetune_lr_label.tolist()
    table["protocol_kind"] = table.protocol.map(kinds)
    table["_p"], table["_lr"] = table.protocol.map(order.index), table.finetune_lr_label.map(lrs.index)
    return table.sort_values(["_p", "_lr", "spurious"], kind="stable")[columns].reset_index(drop=True)


def cell_name(row) -> str:
    return f"{row.protocol} at LR {row.finetune_lr_label}" + (f", C_Tr {row.spurious:g}" if row.spurious else "")


def _text(value, low, high) -> str:
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.3g}" + (f" [{low:.3g}, {high:.3g}]" if np.isfinite(low) else "")


def protocol_display(table: pd.DataFrame, measures=None) -> pd.DataFrame:
    """One row per cell, one column per measure: 'mean [lo, hi]' (the headline measures by default)."""
    if table.empty:
        return table
    measures = measures or [c for c, _, _ in MEASURES]
    rows = table[table.measure.isin(measures)]
    text = [_text(v, lo, hi) for v, lo, hi in zip(rows.value, rows.value_lo, rows.value_hi)]
    wide = rows.assign(text=text).pivot_table(index=CELLS, columns="measure", values="text", aggfunc="first",
                                              sort=False)
    wide = wide[[c for c in measures if c in wide]]
    wide.insert(0, "seeds", rows.groupby(CELLS, sort=False).seeds.max().reindex(wide.index))
    wide = wide.rename(columns=LABELS).reset_index()
    return wide.rename(columns={"finetune_lr_label": "fine-tuning LR", "spurious": "C_Tr"})


def _values(table: pd.DataFrame, measure: str) -> pd.DataFrame:
    """One row per cell: value, value_lo, value_hi of `measure`."""
    return table[table.measure == measure].set_index(CELLS)[["value", "value_lo", "value_hi"]]


def _best(table: pd.DataFrame, measure: str, better: str):
    """(cell, its row, the other cells whose interval overlaps the best one's) for `measure`; None without data."""
    rows = _values(table, measure).dropna(subset=["value"])
    if rows.empty:
        return None
    best = rows.value.idxmax() if better == "high" else rows.value.idxmin()
    top = rows.loc[best]
    if better == "high":
        ties = rows[(rows.index != best) & (rows.value_hi >= top.value_lo)]
    else:
        ties = rows[(rows.index != best) & (rows.value_lo <= top.value_hi)]
    return best, top, list(ties.index)


def _cell(key) -> str:
    return cell_name(pd.Series(dict(zip(CELLS, key))))


def _at(table, key, measure) -> str:
    rows = _values(table, measure)
    return _text(*rows.loc[key]) if key in rows.index else "n/a"


def closing_note(table: pd.DataFrame) -> list[str]:
    """Sentences with numbers: which protocol best preserves C_PT, and which leaves the most easily revived C_PT
    (by reFT steps and by pruning), each with its C_FT and the cells whose intervals overlap (not resolved)."""
    if table.empty:
        return []

    def ties(others):
        return f" Not resolved from: {', '.join(map(_cell, others))} (overlapping intervals)." if others else ""
    out = []
    if found := _best(table, "pt_acc", "high"):
        key, top, others = found
        out.append(f"Best preserves C_PT: {_cell(key)}, C_PT after fine-tuning {_text(*top)} (C_FT reached "
                   f"{_at(table, key, 'ft_acc')}).{ties(others)}")
    if found := _best(table, "ft_acc", "high"):
        key, top, _ = found
        out.append(f"Highest C_FT: {_cell(key)}, {_text(*top)}, with C_PT {_at(table, key, 'pt_acc')}.")
    if found := _best(table, "reft_steps", "low"):
        key, top, others = found
        out.append(f"Most easily revived by reFT: {_cell(key)}, {_text(*top)} steps to the threshold (its C_PT "
                   f"after fine-tuning {_at(table, key, 'pt_acc')}).{ties(others)}")
    lost = _values(table, "pt_retained").value < LOST_BELOW
    lost_cells = table[table.set_index(CELLS).index.isin(lost[lost].index)]
    if (found := _best(lost_cells, "reft_steps", "low")) and len(lost[lost]) < len(lost):
        key, top, others = found
        out.append(f"Among the cells that lost C_PT (mean retained < {LOST_BELOW:g} x pretrained): fastest reFT "
                   f"{_cell(key)}, {_text(*top)} steps (C_PT after fine-tuning {_at(table, key, 'pt_acc')})."
                   f"{ties(others)}")
    gain, random = f"prune_gain{PRUNE_UNITS}", f"prune_random{PRUNE_UNITS}"
    excess = (_values(table, gain).value - _values(table, random).value).dropna()
    if not excess.empty:
        key = excess.idxmax()
        out.append(f"Largest C_PT gain from pruning <= {PRUNE_UNITS} neurons beyond the random null: {_cell(key)}, "
                   f"mean gain {_at(table, key, gain)} against {_at(table, key, random)} for random neurons "
                   f"({excess.max():+.3g}).")
    out.append("Intervals: 95% percentile bootstrap over seeds.")
    return out


def protocol_figure(table: pd.DataFrame):
    """Forgetting vs strippability: per cell, C_PT after fine-tuning (x) against reFT steps to the threshold, against
    the mean C_PT gain from pruning <= 15 neurons (dotted: the random-neuron null) and against C_FT reached (y),
    with seed intervals on both axes; None without data."""
    if table.empty:
        return None
    panels = [("reft_steps", "reFT steps to revive C_PT\n(lower: more strippable)"),
              (f"prune_gain{PRUNE_UNITS}", f"mean C_PT gain, pruning 1..{PRUNE_UNITS}\nneurons (dashed: random null)"),
              ("ft_acc", "C_FT reached")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels) + 3.0, 3.6), squeeze=False)
    x_rows = _values(table, "pt_acc")
    colors, markers = plt.get_cmap("tab10"), "os^Dv<>p"
    protocols = list(dict.fromkeys(table.protocol))
    lrs = list(dict.fromkeys(table.finetune_lr_label))
    for ax, (measure, ylabel) in zip(axes[0], panels):
        y_rows = _values(table, measure)
        for key in x_rows.index:
            if key not in y_rows.index:
                continue
            (x, x_lo, x_hi), (y, y_lo, y_hi) = x_rows.loc[key], y_rows.loc[key]
            if not (np.isfinite(x) and np.isfinite(y)):
                continue
            xerr = [[x - x_lo], [x_hi - x]] if np.isfinite(x_lo) else None
            yerr = [[y - y_lo], [y_hi - y]] if np.isfinite(y_lo) else None
            ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt=markers[lrs.index(key[1]) % len(markers)],
                        color=colors(protocols.index(key[0]) % 10), label=_cell(key), markersize=4, capsize=2,
                        linewidth=1)
        if measure.startswith("prune_gain"):  # the random-neuron null, and no gain at all
            ax.axhline(0.0, color="gray", linewidth=0.8, linestyle=":")
            null = _values(table, f"prune_random{PRUNE_UNITS}").value.dropna()
            if not null.empty:
                ax.axhline(float(null.mean()), color="tab:red", linewidth=0.8, linestyle="--")
        ax.set_xlabel("C_PT after fine-tuning (higher: less forgetting)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle("Fine-tuning protocols: forgetting vs strippability (mean over seeds, 95% bootstrap CI)")
    fig.tight_layout(rect=(0, 0, 0.8, 1))  # the legend goes in the right fifth, inside the saved image
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.8, 0.5), fontsize=7)
    return fig
