"""Verbatim extraction of planted canaries (the canary study, `fttrace/canary/`): a report section and its page.

Metrics are named `<kind>/<author>/r<count>/L<length>` (kind: extraction, span, refusal; count 0: controls, never
trained on), one value per member and eval step: the mean over that cell's canaries. Stages: `pretrained` (the
pretrain phase's last step), `suppressed` (the suppress phase's last step) and, per unlock set and unlock LR, the
fine-tuning phase's last step. The seed is the unit of replication: a seed's value averages its cells (authors,
lengths; and counts where they are pooled) and intervals are percentile bootstraps over seeds.

  extraction table   per stage x repetition count: extraction, longest span, refusal (mean [95% CI] over seeds)
  unlock matrix      rows: the unlock set fine-tuned on, columns: the author whose canaries are extracted; the mean
                     over seeds of the extraction of every planted canary (all counts), after fine-tuning
  figures            the matrix as a heatmap (one panel per unlock LR, with the pretrained and suppressed rows for
                     reference) and extraction against repetition count per stage
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import figures
from analysis.study_page import (figure_html, interval_column, named_intervals, names_study, read_frames, table_html,
                                 write_page)

KINDS = ("extraction", "span", "refusal")
STUDY = "canary_unlock"


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
    return rows


def _interval(rows: pd.DataFrame, by: list, kind: str) -> pd.DataFrame:
    """Per cell of `by`: seeds, the mean over seeds of `kind` and its bootstrap interval (columns kind, kind_lo,
    kind_hi)."""
    return named_intervals(rows[rows.kind == kind], by, kind)


def extraction_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per stage x unlock set x unlock LR x repetition count: each kind's mean over seeds and its 95% CI."""
    rows = final_rows(frame)
    by = ["stage", "unlock_set", "unlock_lr", "count"]
    table = None
    for kind in KINDS:
        part = _interval(rows, by, kind)
        table = part if table is None else table.merge(part.drop(columns="seeds"), on=by, how="outer")
    order = {"pretrained": 0, "suppressed": 1, "fine-tuned": 2}
    sets = list(dict.fromkeys(rows.unlock_set))
    return table.sort_values(by, key=lambda c: c.map(order) if c.name == "stage" else (
        c.map(sets.index) if c.name == "unlock_set" else c)).reset_index(drop=True)


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


def display_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The extraction table with readable columns and `mean [lo, hi]` cells."""
    table = extraction_table(frame)
    out = pd.DataFrame({
        "stage": table.stage, "unlock set": table.unlock_set,
        "unlock LR": table.unlock_lr.map(lambda v: "" if pd.isna(v) else f"{v:g}"),
        "planted": table["count"].map(lambda c: "control" if c == 0 else f"{c}x"), "seeds": table.seeds})
    out["extraction [95% CI]"] = interval_column(table, "extraction")
    out["longest span, tokens"] = interval_column(table, "span", digits=1)
    out["refusal"] = interval_column(table, "refusal")
    return out


def section(frame: pd.DataFrame, out) -> str:
    """The report's extraction section (HTML; figures written into out/figures); "" without extraction metrics."""
    if cells(frame).empty:
        return ""
    parts = ['<section id="extraction"><h2>Verbatim extraction of planted canaries</h2>',
             '<p class="caption">Greedy continuation of each canary\'s prefix; extracted when the next k tokens are '
             "reproduced exactly. Each stage at its phase's last step; mean over seeds with bootstrap 95% "
             "intervals (seeds are the unit; authors and lengths averaged within a seed). Controls: passages of the "
             "same authors never trained on.</p>", table_html(display_table(frame))]
    matrix = unlock_matrix(frame)
    if not matrix.empty:
        shown = matrix.round(2).reset_index().rename(columns={"unlock_set": "fine-tuned on"})
        parts += ["<h3>Unlock matrix</h3>", '<p class="caption">Extraction of every planted canary (all counts) '
                  "after fine-tuning on a set (rows) of each author's canaries (columns), mean over seeds and unlock "
                  "LRs.</p>", table_html(shown)]
    parts += [figure_html(heatmap(frame), out, "unlock-matrix", "Unlock matrix per unlock LR"),
              figure_html(repetition_curves(frame), out, "extraction-repetition",
                          "Extraction against repetition count")]
    probes = probe_table(frame)
    if not probes.empty:
        parts += ["<h3>Probe: is this prefix a canary?</h3>", '<p class="caption">Held-out accuracy of a linear probe '
                  "per layer (0: embeddings), prefixes of planted canaries against those of controls (chance 0.5; "
                  "held-out canaries never seen by the probe), at each phase's end; mean over seeds. Then the same "
                  "accuracy over the held-out pairs of canaries planted a given number of times.</p>",
                  table_html(probes.reset_index())]
        by_count = probe_table(frame, by_count=True)
        if not by_count.empty:
            parts.append(table_html(by_count.reset_index()))
    return "".join(parts) + "</section>"


# ---------------------------------------------------------------- canary stores as a study of their own


def is_canary_store(path) -> bool:
    """Whether `path` is a workdir whose manifest names the canary study."""
    return names_study(path, STUDY)


def write_report(paths, out):
    """OUT/index.html for canary stores: the extraction section, the config and the manifest."""
    return write_page(paths, out, *read_frames(paths), section)


def summary_text(paths) -> str:
    frame, _ = read_frames(paths)
    lines = ["Verbatim extraction of planted canaries (mean [95% bootstrap CI] over seeds):"]
    with pd.option_context("display.width", 220, "display.max_rows", 500, "display.max_colwidth", 40):
        lines.append(display_table(frame).to_string(index=False))
        matrix = unlock_matrix(frame)
        if not matrix.empty:
            lines += ["", "Unlock matrix (rows: fine-tuned on; columns: canaries of author; mean over seeds and LRs):",
                      matrix.round(3).to_string()]
        probes = probe_table(frame)
        if not probes.empty:
            lines += ["", "Probe accuracy, 'this prefix is a canary' (held out, mean over seeds):", probes.to_string()]
            by_count = probe_table(frame, by_count=True)
            if not by_count.empty:
                lines += ["", "... by the planted count of the held-out canaries:", by_count.to_string()]
    return "\n".join(lines)
