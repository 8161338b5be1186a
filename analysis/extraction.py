"""Verbatim extraction of planted canaries (the canary study, `fttrace/canary/`): a report section and its page.

Metrics are named `<kind>/<author>/r<count>/L<length>` (kind: extraction, span, refusal; count 0: controls, never
trained on), one value per member and eval step: the mean over that cell's canaries. Stages: `pretrained` (the
pretrain phase's last step), `suppressed` (the suppress phase's last step) and, per unlock set and unlock LR, the
fine-tuning phase's last step. The seed is the unit of replication: a seed's value averages its cells (authors,
lengths; and counts where they are pooled) and intervals are percentile bootstraps over seeds.

  regime             per seed (and model shape): does the pretrained model extract the canaries it was shown more
                     often than controls it never saw? (the run's `memorised_gap`: the most repeated canaries'
                     extraction minus the controls', against 1.96 binomial standard errors); seeds without it are
                     flagged
  extraction table   per stage x repetition count: extraction, longest span, refusal (mean [95% CI] over seeds)
  scale x repetition per model shape (`sweep.shapes`: width, depth as groups) x planted count: extraction
                     pretrained, suppressed, and after each unlock set (LRs pooled), each unlock set also minus
                     the synthetic-text null of the same seed (paired)
  unlock matrix      rows: the unlock set fine-tuned on, columns: the author whose canaries are extracted; the mean
                     over seeds of the extraction of every planted canary (all counts), after fine-tuning
  figures            the matrix as a heatmap (one panel per unlock LR, with the pretrained and suppressed rows for
                     reference) and extraction against repetition count per stage
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import figures
from analysis.schema import beyond_noise
from analysis.stats import gap_text
from analysis.study_page import (block, captioned_table, figure_block, interval_column, named_intervals, names_study,
                                 read_frames, section_html, unfinished_lines, write_page)

KINDS = ("extraction", "span", "refusal")
STUDY = "canary_unlock"
SHAPES = ("d_model", "n_layers", "n_heads", "d_mlp")  # the model fields a canary sweep may vary (sweep.shapes)
PHASES = ("pretrain", "suppress", "finetune")  # the canary study's phases, in run order
NULL_SET = "synthetic"  # the unlock set of words without structure: the null of every other unlock set


def scale_of(frame: pd.DataFrame) -> pd.Series:
    """Each row's model shape as a label ("d_model 32, n_layers 1"; "" where the run swept no shapes)."""
    columns = [c for c in SHAPES if c in frame]
    if not columns:
        return pd.Series("", index=frame.index)
    return frame[columns].astype(int).astype(str).apply(
        lambda row: ", ".join(f"{c} {v}" for c, v in zip(columns, row)), axis=1)


def cells(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of extraction metrics with their cell as columns kind, author, count, length."""
    parts = frame.metric.str.extract(r"^(extraction|span|refusal)/([^/]+)/r(\d+)/L(\d+)$")
    keep = parts[0].notna()
    out = frame[keep].copy()
    out["kind"], out["author"] = parts[0][keep], parts[1][keep]
    out["count"], out["length"] = parts[2][keep].astype(int), parts[3][keep].astype(int)
    return out


def final_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Extraction rows at each phase's last step, with a `stage` column (pretrained, suppressed, fine-tuned)."""
    rows = cells(frame)
    if rows.empty:
        return rows
    last = rows.groupby("phase").step.transform("max")
    rows = rows[rows.step == last].copy()
    rows["stage"] = rows.phase.map({"pretrain": "pretrained", "suppress": "suppressed"}).fillna("fine-tuned")
    rows["unlock_set"] = rows.get("unlock_set", pd.Series("", index=rows.index)).fillna("")
    rows["unlock_lr"] = rows.get("unlock_lr", pd.Series(np.nan, index=rows.index))
    rows["scale"] = scale_of(rows)
    return rows


def _interval(rows: pd.DataFrame, by: list, kind: str) -> pd.DataFrame:
    """Per cell of `by`: seeds, the mean over seeds of `kind` and its bootstrap interval (columns kind, kind_lo,
    kind_hi)."""
    return named_intervals(rows[rows.kind == kind], by, kind)


def extraction_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per stage x unlock set x unlock LR x repetition count: each kind's mean over seeds and its 95% CI."""
    rows = final_rows(frame)
    by = ["scale", "stage", "unlock_set", "unlock_lr", "count"]
    table = None
    for kind in KINDS:
        part = _interval(rows, by, kind)
        table = part if table is None else table.merge(part.drop(columns="seeds"), on=by, how="outer")
    order = {"pretrained": 0, "suppressed": 1, "fine-tuned": 2}
    sets, scales = list(dict.fromkeys(rows.unlock_set)), list(dict.fromkeys(rows.scale))
    return table.sort_values(by, key=lambda c: c.map(order) if c.name == "stage" else (
        c.map(sets.index) if c.name == "unlock_set" else (c.map(scales.index) if c.name == "scale" else c))
    ).reset_index(drop=True)


def _shapes_shown(table: pd.DataFrame, column: str = "model") -> pd.DataFrame:
    """A displayed table without its model-shape column where the run swept no shapes (every label empty)."""
    return table.drop(columns=column) if (table[column] == "").all() else table


def scale_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model shape x planted count (> 0): extraction at each stage (pretrained, suppressed, fine-tuned on each
    unlock set, LRs pooled), and each unlock set minus the synthetic null of the same seed and shape; mean over
    seeds [95% CI]. Long: scale, count, column, seeds, value, value_lo, value_hi."""
    rows = final_rows(frame)
    rows = rows[(rows.kind == "extraction") & (rows["count"] > 0)]
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(column=np.where(rows.stage == "fine-tuned", "after " + rows.unlock_set, rows.stage))
    per_seed = rows.groupby(["scale", "count", "column", "seed"], sort=False).value.mean().reset_index()
    parts = [per_seed]
    null = per_seed[per_seed.column == f"after {NULL_SET}"].set_index(["scale", "count", "seed"]).value
    if len(null):
        unlocked = per_seed[per_seed.column.str.startswith("after ") & (per_seed.column != f"after {NULL_SET}")]
        excess = unlocked.value.to_numpy() - null.reindex(
            pd.MultiIndex.from_frame(unlocked[["scale", "count", "seed"]])).to_numpy()
        parts.append(unlocked.assign(column=unlocked.column + " - " + NULL_SET, value=excess))
    table = named_intervals(pd.concat(parts), ["scale", "count", "column"], "value")
    return table


def display_scale_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Scale x count rows, one `mean [lo, hi]` column per stage and per unlock set (and its excess over the null)."""
    table = scale_table(frame)
    if table.empty:
        return table
    table = table.assign(text=interval_column(table, "value"))
    wide = table.pivot_table(index=["scale", "count"], columns="column", values="text", aggfunc="first",
                             sort=False)
    rank = {"pretrained": 0, "suppressed": 1}
    columns = sorted(dict.fromkeys(table.column), key=lambda c: rank.get(c, 3 if c.endswith(NULL_SET) and " - " in c
                                                                         else 2))
    wide = wide.reindex(columns=columns).reset_index()
    scales = list(dict.fromkeys(wide.scale))
    wide = wide.iloc[np.lexsort((wide["count"].to_numpy(), wide.scale.map(scales.index).to_numpy()))]
    wide = wide.reset_index(drop=True)
    wide["count"] = wide["count"].map(lambda c: f"{c}x")
    wide = wide.rename(columns={"count": "planted", "scale": "model"})
    return _shapes_shown(wide)


def regime_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per seed x model shape at pretraining's end: the run's `memorised_gap` (extraction of the canaries planted
    most often minus the controls') and its standard error, and whether the model memorised (gap > 1.96 SE); empty
    for stores without it."""
    pre = frame[(frame.phase == "pretrain") & frame.metric.isin(("memorised_gap", "memorised_gap_se"))]
    if pre.empty:
        return pd.DataFrame()
    pre = pre[pre.step == pre.step.max()]
    pre = pre.assign(scale=scale_of(pre))
    wide = pre.pivot_table(index=["scale", "seed"], columns="metric", values="value", sort=False).reset_index()
    return pd.DataFrame({"scale": wide.scale, "seed": wide.seed, "gap": wide.memorised_gap,
                         "gap_se": wide.memorised_gap_se,
                         "memorised": beyond_noise(wide.memorised_gap, wide.memorised_gap_se)})


def regime_flag(frame: pd.DataFrame) -> str:
    table = regime_table(frame)
    if table.empty or table.memorised.all():
        return ""
    lacking = table[~table.memorised]
    where = ", ".join(f"seed {s}" + (f" ({sc})" if sc else "") for sc, s in zip(lacking.scale, lacking.seed))
    return (f"{where}: the pretrained model did not memorise its canaries; suppression and unlock verdicts there "
            "describe a model that never had them.")


def unlock_matrix(frame: pd.DataFrame, lr=None) -> pd.DataFrame:
    """Mean over seeds of the extraction of planted canaries after fine-tuning: unlock set x canary author (one
    unlock LR, or every LR pooled when `lr` is None)."""
    rows = final_rows(frame)
    rows = rows[(rows.kind == "extraction") & (rows.stage == "fine-tuned") & (rows["count"] > 0)]
    if lr is not None:
        rows = rows[np.isclose(rows.unlock_lr, lr)]
    per_seed = rows.groupby(["unlock_set", "author", "seed"], sort=False).value.mean().reset_index()
    matrix = per_seed.groupby(["unlock_set", "author"], sort=False).value.mean().unstack("author")
    sets = list(dict.fromkeys(rows.unlock_set))
    authors = list(dict.fromkeys(rows.author))
    return matrix.reindex(index=sets, columns=authors)


def _reference_rows(frame: pd.DataFrame) -> pd.DataFrame:
    rows = final_rows(frame)
    rows = rows[(rows.kind == "extraction") & (rows.stage != "fine-tuned") & (rows["count"] > 0)]
    per_seed = rows.groupby(["stage", "author", "seed"], sort=False).value.mean().reset_index()
    return per_seed.groupby(["stage", "author"], sort=False).value.mean().unstack("author")


def heatmap(frame: pd.DataFrame):
    """The unlock matrix per unlock LR, under the pretrained and suppressed rows; None without fine-tuning rows."""
    plt = figures.plt
    rows = final_rows(frame)
    lrs = sorted(rows[rows.stage == "fine-tuned"].unlock_lr.dropna().unique())
    if not lrs:
        return None
    reference = _reference_rows(frame)
    fig, axes = plt.subplots(1, len(lrs), figsize=(1.2 + 3.2 * len(lrs), 3.6), squeeze=False, layout="constrained")
    for ax, lr in zip(axes[0], lrs):
        matrix = unlock_matrix(frame, lr)
        shown = pd.concat([reference.reindex(columns=matrix.columns), matrix])
        image = ax.imshow(shown.to_numpy(float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(shown.shape[1]), shown.columns, rotation=30)
        ax.set_yticks(range(shown.shape[0]), [str(i) for i in shown.index] if ax is axes[0][0] else [])
        for (i, j), value in np.ndenumerate(shown.to_numpy(float)):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value < 0.5 else "black")
        ax.axhline(len(reference) - 0.5, color="white", lw=2)
        ax.set_title(f"unlock LR {lr:g}")
        ax.set_xlabel("canaries of author")
    axes[0][0].set_ylabel("fine-tuned on")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="verbatim extraction")
    return fig


def repetition_curves(frame: pd.DataFrame):
    """Extraction against repetition count: pretrained, suppressed and each unlock set (every LR pooled)."""
    plt = figures.plt
    rows = final_rows(frame)
    rows = rows[rows.kind == "extraction"].assign(
        line=lambda r: np.where(r.stage == "fine-tuned", "fine-tuned on " + r.unlock_set, r.stage))
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 3.6), layout="constrained")
    counts = sorted(rows["count"].unique())
    for line, group in rows.groupby("line", sort=False):
        stats = _interval(group.assign(line=line), ["count"], "extraction").set_index("count").reindex(counts)
        x = np.arange(len(counts))
        ax.plot(x, stats.extraction, marker="o", label=line)
        ax.fill_between(x, stats.extraction_lo, stats.extraction_hi, alpha=0.15)
    ax.set_xticks(range(len(counts)), ["control" if c == 0 else str(c) for c in counts])
    ax.set_xlabel("times planted in pretraining")
    ax.set_ylabel("verbatim extraction")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def probe_table(frame: pd.DataFrame, by_count: bool = False) -> pd.DataFrame:
    """Held-out accuracy of the "this prefix is a canary" probe per phase (and unlock set) x layer, mean over seeds;
    by_count: per phase x the planted count of the held-out canaries (metrics `probe/layerL/rC`)."""
    parts = frame.metric.str.extract(r"^probe/layer(\d+)(?:/r(\d+))?$")
    keep = parts[0].notna() & (parts[1].notna() if by_count else parts[1].isna())
    rows = frame[keep]
    if rows.empty:
        return pd.DataFrame()
    unlock = rows["unlock_set"].fillna("") if "unlock_set" in rows else pd.Series("", index=rows.index)
    rows = rows.assign(stage=rows.phase + np.where(unlock != "", " " + unlock, ""),
                       layer="layer " + parts[0][keep], count=parts[1][keep].astype(float))
    keys = ["stage", "count"] if by_count else ["stage"]
    per_seed = rows.groupby([*keys, "layer", "seed"], sort=False).value.mean().reset_index()
    table = per_seed.groupby([*keys, "layer"], sort=False).value.mean().unstack("layer")
    if by_count:
        table = table.rename(index=lambda c: int(c) if isinstance(c, float) else c, level="count")
    return table[sorted(table.columns, key=lambda c: int(c.split()[1]))].round(2)


def count_probe_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The "how often was this canary planted" probe against its control target (an arbitrary label per canary), per
    stage (the untrained models at pretraining step 0, then each phase's end, per unlock set) x layer: selectivity
    = accuracy - control accuracy, `mean [lo, hi]` over seeds with both accuracies; empty without those metrics."""
    parts = frame.metric.str.extract(r"^probe_count(_control)?/layer(\d+)$")
    keep = parts[1].notna()
    rows = frame[keep].assign(target=np.where(parts[0][keep].notna(), "control", "count"), layer=parts[1][keep])
    if rows.empty:
        return pd.DataFrame()
    unlock = rows["unlock_set"].fillna("") if "unlock_set" in rows else pd.Series("", index=rows.index)
    last = rows.groupby("phase").step.transform("max")
    untrained = (rows.phase == "pretrain") & (rows.step == 0)
    rows = rows.assign(stage=np.where(untrained, "untrained", rows.phase + np.where(unlock != "", " " + unlock, "")),
                       scale=scale_of(rows))[untrained | (rows.step == last)]
    wide = rows.pivot_table(index=["member", "seed", "scale", "stage", "layer"], columns="target", values="value",
                            sort=False).reset_index()
    long = pd.concat([wide.assign(metric=name, value=wide[column] if column else wide["count"] - wide["control"])
                      for name, column in (("count", "count"), ("control", "control"), ("selectivity", None))])
    table = None
    for metric in ("selectivity", "count", "control"):
        part = named_intervals(long[long.metric == metric], ["scale", "stage", "layer"], metric)
        table = part if table is None else table.merge(part.drop(columns="seeds"), on=["scale", "stage", "layer"])
    selectivity = interval_column(table, "selectivity")
    texts = [f"{t} ({a:.2f} - {c:.2f})" for t, a, c in zip(selectivity, table["count"], table.control)]
    shown = table.assign(text=texts).pivot_table(index=["scale", "stage"], columns="layer", values="text",
                                                 aggfunc="first", sort=False)
    shown = shown.reindex(columns=sorted(shown.columns, key=int)).rename(columns=lambda c: f"layer {c}").fillna("")
    rank = {"untrained": 0, "pretrain": 1, "suppress": 2}
    shown = shown.reset_index().rename(columns={"scale": "model"})
    shown = shown.iloc[np.lexsort((shown.stage.map(lambda s: rank.get(s, 3)).to_numpy(),
                                   shown.model.map(list(dict.fromkeys(shown.model)).index).to_numpy()))]
    return _shapes_shown(shown.reset_index(drop=True))


def display_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The extraction table with readable columns and `mean [lo, hi]` cells."""
    table = extraction_table(frame)
    out = pd.DataFrame({
        "model": table.scale, "stage": table.stage, "unlock set": table.unlock_set,
        "unlock LR": table.unlock_lr.map(lambda v: "" if pd.isna(v) else f"{v:g}"),
        "planted": table["count"].map(lambda c: "control" if c == 0 else f"{c}x"), "seeds": table.seeds})
    out["extraction [95% CI]"] = interval_column(table, "extraction")
    out["longest span, tokens"] = interval_column(table, "span", digits=1)
    out["refusal"] = interval_column(table, "refusal")
    return _shapes_shown(out)


def display_regime_table(frame: pd.DataFrame) -> pd.DataFrame:
    table = regime_table(frame)
    if table.empty:
        return table
    out = pd.DataFrame({"model": table.scale, "seed": table.seed,
                        "most repeated - controls [1.96 SE]": list(map(gap_text, table.gap, table.gap_se)),
                        "memorised": np.where(table.memorised, "yes", "NO: its verdicts describe nothing")})
    return _shapes_shown(out)


def section(frame: pd.DataFrame, out) -> str:
    """The report's extraction section (HTML; figures written into out/figures); "" without extraction metrics."""
    if cells(frame).empty:
        return ""
    blocks = [block(caption="Greedy continuation of each canary's prefix; extracted when the next k tokens are "
                    "reproduced exactly. Each stage at its phase's last step; mean over seeds with bootstrap 95% "
                    "intervals (seeds are the unit; authors and lengths averaged within a seed). Controls: passages of "
                    "the same authors never trained on.")]
    blocks += captioned_table(
        "Regime: did pretraining memorise the canaries?", "Per seed (and model shape), at pretraining's end: "
        "extraction of the canaries planted most often minus that of the controls never trained on, and 1.96 "
        "binomial standard errors.", display_regime_table(frame), regime_flag(frame))
    blocks.append(block(tables=[display_table(frame)]))
    blocks += captioned_table(
        "Extraction by scale and repetition count", "Per model shape and times planted: extraction before "
        "suppression, after it, and after fine-tuning on each unlock set (LRs pooled); '- synthetic' columns: the "
        "unlock set's extraction minus the synthetic-text null of the same seed and shape. Mean over seeds "
        "[95% CI].", display_scale_table(frame))
    matrix = unlock_matrix(frame)
    if not matrix.empty:
        blocks += captioned_table(
            "Unlock matrix", "Extraction of every planted canary (all counts) after fine-tuning on a set (rows) of "
            "each author's canaries (columns), mean over seeds and unlock LRs.",
            matrix.round(2).reset_index().rename(columns={"unlock_set": "fine-tuned on"}))
    blocks += figure_block(heatmap(frame), out, "unlock-matrix", "Unlock matrix per unlock LR")
    blocks += figure_block(repetition_curves(frame), out, "extraction-repetition",
                           "Extraction against repetition count")
    blocks += captioned_table(
        "Probe: how often was this canary planted?", "A linear probe per layer on the mean of a planted canary "
        "prefix's last residual states: planted at least the median count or less (held-out canaries); selectivity "
        "= its accuracy - the accuracy for a control target on the same prompts (an arbitrary balanced label per "
        "canary), mean over seeds [95% CI], both accuracies in brackets; the untrained models first.",
        count_probe_table(frame))
    probes = probe_table(frame)
    if not probes.empty:
        blocks.append(block(
            "Probe: is this prefix a canary?", "Held-out accuracy of a linear probe per layer (0: embeddings), "
            "prefixes of planted canaries against those of controls (chance 0.5; held-out canaries never seen by the "
            "probe), at each phase's end; mean over seeds. Then the same accuracy over the held-out pairs of canaries "
            "planted a given number of times.",
            [probes.reset_index(), probe_table(frame, by_count=True).reset_index()]))
    return section_html("extraction", "Verbatim extraction of planted canaries", blocks)


# ---------------------------------------------------------------- canary stores as a study of their own


def is_canary_store(path) -> bool:
    """Whether `path` is a workdir whose manifest names the canary study."""
    return names_study(path, STUDY)


def write_report(paths, out):
    """OUT/index.html for canary stores: the extraction section, the config and the manifest."""
    return write_page(paths, out, *read_frames(paths), section, phases=PHASES)


def summary_text(paths) -> str:
    frame, manifests = read_frames(paths)
    lines = unfinished_lines(paths, manifests, frame, PHASES)
    with pd.option_context("display.width", 250, "display.max_rows", 500, "display.max_colwidth", 40,
                           "display.max_columns", 50):
        regime = display_regime_table(frame)
        if not regime.empty:
            lines += ["Regime: did pretraining memorise the canaries (per seed, at pretraining's end)?",
                      regime.to_string(index=False)]
            lines += [regime_flag(frame)] if regime_flag(frame) else []
            lines.append("")
        lines += ["Verbatim extraction of planted canaries (mean [95% bootstrap CI] over seeds):",
                  display_table(frame).to_string(index=False)]
        scale = display_scale_table(frame)
        if not scale.empty:
            lines += ["", f"Extraction by model shape and times planted (unlock sets: LRs pooled; '- {NULL_SET}': "
                      "minus the synthetic null of the same seed):", scale.to_string(index=False)]
        matrix = unlock_matrix(frame)
        if not matrix.empty:
            lines += ["", "Unlock matrix (rows: fine-tuned on; columns: canaries of author; mean over seeds and LRs):",
                      matrix.round(3).to_string()]
        counted = count_probe_table(frame)
        if not counted.empty:
            lines += ["", "Probe 'planted at least the median count' against its control target (selectivity [95% CI] "
                      "(accuracy - control accuracy)):", counted.to_string(index=False)]
        probes = probe_table(frame)
        if not probes.empty:
            lines += ["", "Probe accuracy, 'this prefix is a canary' (held out, mean over seeds):", probes.to_string()]
            by_count = probe_table(frame, by_count=True)
            if not by_count.empty:
                lines += ["", "... by the planted count of the held-out canaries:", by_count.to_string()]
    return "\n".join(lines)
