"""Compiled components: how far fine-tuning moved each compiled RASP operation (phase "components").

For studies on a Tracr-compiled model (fttrace/evals/components.py writes the phase), one row per setting (fine-tuning
LR x C_Tr), kind of member (fine-tuned, reverse-fine-tuned) and measure (`<component>.<kind>.weight_change` /
`.act_change`, `<param>.weight_change`): the mean over seeds and its bootstrap interval. A wrapper in the strict,
ground-truth sense leaves every compiled component's weights and activations nearly unchanged while the parameters
outside the components (the unembedding, the embeddings) carry the change.
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
