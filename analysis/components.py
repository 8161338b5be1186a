"""Compiled components: how far fine-tuning moved each compiled RASP operation (phase "components").

For studies on a Tracr-compiled model (fttrace/answer/evals/components.py writes the phase), one row per setting
(fine-tuning LR x C_Tr), kind of member (fine-tuned, reverse-fine-tuned) and measure
(`<component>.<kind>.weight_change` / `.act_change`, `<param>.weight_change`): the mean over seeds and its bootstrap
interval. A wrapper in the strict, ground-truth sense leaves every compiled component's weights and activations
nearly unchanged while the parameters outside the components (the unembedding, the embeddings) carry the change.
"""
from __future__ import annotations

import pandas as pd

from analysis.load import Study
from analysis.stats import CONFIDENCE, cell_intervals

PHASE = "components"
CELLS = ["kind", "finetune_lr_label", "spurious", "metric"]


def component_table(study: Study, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Columns kind, finetune_lr_label, spurious, metric, seeds, value, value_lo, value_hi (empty without the
    phase), rows in the order of fine-tuning LR (ascending) and of the metrics in the store."""
    rows = study.results[study.results.phase == PHASE]
    if rows.empty:
        return pd.DataFrame(columns=[*CELLS, "seeds", "value", "value_lo", "value_hi"])
    info = study.members[["member", "kind", "finetune_lr_label", "seed"]]
    rows = rows.drop(columns=[c for c in ("seed",) if c in rows]).merge(info, on="member")
    table = cell_intervals(rows, "value", CELLS, confidence)
    order = rows.drop_duplicates("finetune_lr_label").sort_values("finetune_lr").finetune_lr_label.tolist()
    metrics = list(dict.fromkeys(rows.metric))
    table["_lr"] = table.finetune_lr_label.map(order.index)
    table["_metric"] = table.metric.map(metrics.index)
    return table.sort_values(["kind", "_lr", "spurious", "_metric"]).drop(columns=["_lr", "_metric"]).reset_index(
        drop=True)


def component_display(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (kind, LR, C_Tr), one column per measure: 'mean [lo, hi]'."""
    if table.empty:
        return table
    text = [f"{v:.3g}" + (f" [{lo:.3g}, {hi:.3g}]" if pd.notna(lo) else "")
            for v, lo, hi in zip(table.value, table.value_lo, table.value_hi)]
    wide = table.assign(text=text).pivot_table(index=["kind", "finetune_lr_label", "spurious"], columns="metric",
                                               values="text", aggfunc="first", sort=False)
    wide = wide[list(dict.fromkeys(table.metric))].reset_index()
    return wide.rename(columns={"kind": "member", "finetune_lr_label": "fine-tuning LR", "spurious": "C_Tr"})


def located_units(study: Study) -> pd.DataFrame:
    """Does targeted pruning find the compiled components? One row per member that pruning examined and compiled
    component: `share`, the fraction of the first n units the C_PT ranking removes (n = the component's units of
    its kind: heads or MLP neurons) that belong to the component, and `chance`, n / all units of that kind.
    Empty unless the manifest names the compiled components (fttrace's Tracr tasks) and the store holds the
    removal order (phase "prune", metrics "neurons.unit" / "heads.unit")."""
    columns = ["member", "component", "kind", "units", "share", "chance"]
    task = study.stores[0].manifest.get("task") or {}
    components, per_layer = task.get("components"), task.get("units_per_layer")
    rows = study.results[(study.results.phase == "prune") & study.results.metric.isin(["neurons.unit", "heads.unit"])]
    if not components or not per_layer or rows.empty:
        return pd.DataFrame(columns=columns)
    layers = task.get("layers") or 1 + max(c["block"] for c in components)
    order = rows.sort_values("step").groupby(["member", "metric"]).value.agg(list)
    out = []
    for c in components:
        kind, units = ("heads", c["heads"]) if c["kind"] == "attn" else ("neurons", c["neurons"])
        flat = {c["block"] * per_layer[kind] + u for u in units}
        total = per_layer[kind] * layers
        for member, removed in order.xs(f"{kind}.unit", level="metric").items():
            first = removed[:len(flat)]
            if len(first) < len(flat):
                continue
            out.append(dict(member=member, component=c["name"], kind=c["kind"], units=len(flat),
                            share=sum(int(u) in flat for u in first) / len(flat), chance=len(flat) / total))
    return pd.DataFrame(out, columns=columns)


def located_display(study: Study, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per kind of member, setting and component: the share of the first pruned units inside the component (mean
    over seeds [CI]) beside chance."""
    units = located_units(study)
    if units.empty:
        return pd.DataFrame()
    info = study.members[["member", "kind", "finetune_lr_label", "spurious", "seed", "finetune_lr"]].rename(
        columns={"kind": "level"})
    units = units.merge(info, on="member")
    cells = ["level", "finetune_lr_label", "spurious", "component", "kind", "units", "chance"]
    table = cell_intervals(units.fillna({"finetune_lr_label": "", "spurious": -1}), "share", cells, confidence)
    text = [f"{v:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if pd.notna(lo) else "")
            for v, lo, hi in zip(table.share, table.share_lo, table.share_hi)]
    table = table.assign(**{"share of the first pruned units in it": text})
    table["spurious"] = table.spurious.where(table.spurious >= 0, "")
    table["chance"] = table.chance.map(lambda v: f"{v:.2f}")
    return table.drop(columns=["share", "share_lo", "share_hi"]).rename(columns={
        "level": "member", "finetune_lr_label": "fine-tuning LR", "spurious": "C_Tr", "kind": "sublayer"})
