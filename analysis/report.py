"""The HTML report: one self-contained page (figures inline as base64 PNG, no external files), readable offline,
rendered from analysis/templates/report.html (Jinja2, autoescaped).

Its order: the answer (what the run found: class shares with their seed-level intervals, each claim's verdict in
one line, the flags) and a glossary of every symbol the page uses; then the regime (study checks, the pretrained
models per prior, the fine-tuning cells with their flags, the probes' nulls); what fine-tuning did to C_PT (the
taxonomy); the claims with their verdicts and power; the survival of reFT; the instruments against their nulls; the
figures; compiled components and protocols where the study has them; the nulls and parameters; the instruments on planted truth; the per-member
evidence; the config and the manifest. OUTDIR also receives the figures as PNG and SVG (figures/) and the per-member
evidence as CSV (every measure and the class).
"""
from __future__ import annotations

import datetime
import html
import json
import re
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from analysis import extraction, figures, markup
from analysis.analyse import INSTRUMENT_TITLES, Analysis, fit_text
from analysis.errors import AnalysisError
from analysis.glossary import used
from analysis.instruments import missing_note
from analysis.protocols import LABELS, closing_note, protocol_display, protocol_figure
from analysis.revival import display as revival_display, km_steps
from analysis.settings import setting_columns
from analysis.taxonomy import CLASS_MEANINGS, CLASSES


def _check(sentence: str) -> tuple[str, str]:
    """(badge word or '', the rest) of a study check."""
    word, _, rest = sentence.partition(": ")
    return (word, rest) if word in ("holds", "FAILS", "note") else ("", sentence)


def _sentence(sentence: str) -> tuple[str, str, str]:
    """(where, dominant class, the rest) of a per-setting sentence; (sentence, '', '') when it has no class."""
    where, _, rest = sentence.partition(": ")
    word, sep, tail = rest.partition(" — ")
    return (where, word.lower(), sep + tail) if sep else (sentence, "", "")


PRUNED_UNITS = {
    "neurons": "MLP neurons, removed in order of how much their removal is predicted to lower the C_PT loss.",
    "heads": "Attention heads, removed in order of how much their removal is predicted to lower the C_PT loss.",
    "weights": "Single weights of the block matrices, removed in order of how much their removal is predicted to "
               "lower the C_PT loss.",
    "mask": "MLP neurons chosen by a learned sparse mask that minimises the C_PT loss (one point per mask budget).",
    "neurons_remove_ft": "MLP neurons, removed in order of how much their removal is predicted to raise the C_FT "
                         "loss (the converse direction).",
}
FIGURE_TEXT = {
    "classes": ("What fine-tuning did to C_PT, by setting",
                "Share of judged fine-tuned members per taxonomy class and setting."),
    "pruning": ("C_PT gain against units pruned",
                "The effect claim 1 tests: C_PT accuracy after removing k units minus before (k = 0), per member, "
                "then the mean over seeds (blue; line style: C_Tr). A hidden wrapper shows as a gain within the "
                "pruning budget (purple) above the nulls, drawn solid: the same members with k random neurons "
                "removed (grey) and the control that never had C_PT pruned the same way (brown). Bands: bootstrap "
                "95% intervals over seeds."),
    "probe": ("Probe accuracy for the pretraining target, by layer",
              "Held-out accuracy of linear probes reading the C_PT answer from the residual stream at the answer "
              "position. Fine-tuned (blue) close to pretrained (black) means the capability is still represented; "
              "the untrained model (grey) and the control target (red) are the nulls."),
    "reft": ("Reverse fine-tuning against the control",
             "C_PT accuracy while training on the pretraining task. Colour: what is trained, the reverse-fine-tuned "
             "model (green) or a model pretrained without C_PT, trained the same way at the matched reFT LR x each "
             "factor (greys); line style: the C_Tr of the fine-tuned member (the controls have none: solid). The "
             "purple line is the revival threshold. The step axis is logarithmic where the steps were logged "
             "log-spaced, and ends at twice the 95th percentile of the steps to revival."),
    "survival": ("Steps to revival: Kaplan-Meier curves",
                 "Share of runs not yet revived against steps, reFT of suppressed members (solid) and the matched "
                 "controls (dashed), one panel per fine-tuning LR; censored at the budget. Bands: pointwise 95% "
                 "Greenwood intervals."),
    "attention": ("Attention before fine-tuning, and what fine-tuning and reFT changed",
                  "Mean attention mass from the answer position, per layer and head, to the operand slot and to the "
                  "O_PT / O_FT tokens, columns split by C_PT queries (PTq) and C_FT queries (FTq): first the "
                  "pretrained parents, then each fine-tuned or reFT member's minus its pretrained parent's (red: "
                  "more attention than the parent, blue: less; the scale is symmetric around no change)."),
    "training": ("Training curves per phase",
                 "C_PT accuracy, C_FT accuracy and training loss through each phase; means over seeds with "
                 "bootstrap 95% bands."),
}


def _figures(a: Analysis, out: Path) -> tuple[list[dict], list[str]]:
    """Every figure drawn and written into out/figures: ({title, caption, png, folded}, titles not drawn)."""
    study, evidence, p = a.study, a.evidence, a.parameters
    budget = float(evidence.prune_budget.median()) if "prune_budget" in evidence and \
        evidence.prune_budget.notna().any() else None
    reft = study.config.get("reft", {})
    methods = [m for m in ("neurons", "heads", "mask", "neurons_remove_ft", "weights")
               if (study.results.metric == f"{m}.pt_acc").any()] or [p.prune_method]
    methods.sort(key=lambda m: m != p.prune_method)
    planned = [("classes", None, lambda: figures.class_shares(a.headline.table, setting_columns(a.by), CLASSES))]
    planned += [("pruning", m, lambda m=m: figures.pruning_curves(study, m, budget if m == p.prune_method else None))
                for m in methods]
    planned += [("probe", None, lambda: figures.probe_layers(study)),
                ("reft", None, lambda: figures.reft_curves(study, evidence, reft.get("threshold"))),
                ("survival", None, lambda: figures.km_curves(km_steps(a.revival.runs), reft.get("steps"))),
                ("attention", None, lambda: figures.attention_maps(study)),
                ("training", None, lambda: figures.training_curves(study))]
    drawn, absent = [], []
    for kind, variant, draw in planned:
        title, caption = FIGURE_TEXT[kind]
        if kind == "pruning":
            caption = f"{PRUNED_UNITS[variant]} {caption}"
        fig = draw()
        if fig is None:
            absent.append(title)
            continue
        saved = figures.save(fig, out / "figures", kind if variant is None else f"{kind}-{variant}")
        drawn.append({"title": title if variant is None else f"{title}: {variant}", "caption": caption,
                      "png": saved["png_base64"], "folded": variant is not None and variant != p.prune_method})
    return drawn, absent


def _protocols(a: Analysis, out: Path) -> dict | None:
    """The comparison of fine-tuning protocols, for studies that sweep them (None otherwise)."""
    if a.protocols.empty:
        return None
    saved = figures.save(protocol_figure(a.protocols), out / "figures", "protocols")
    parts = [m for m in dict.fromkeys(a.protocols.measure) if m not in LABELS]
    return {"png": saved["png_base64"], "note": closing_note(a.protocols), "table": protocol_display(a.protocols),
            "parts": protocol_display(a.protocols, parts)}


def _store_rules(a: Analysis) -> pd.DataFrame:
    config = a.study.config
    return pd.DataFrame([
        ("revival threshold (reFT, control)", f"C_PT >= {config.get('reft', {}).get('threshold', 'n/a')} x the "
                                              "lineage's pretrained C_PT (reft.threshold of the run)"),
        ("k_revive tolerance (pruning)", f"C_PT within {config.get('prune', {}).get('tolerance', 'n/a')} of "
                                         "pretrained C_PT (prune.tolerance of the run)"),
        ("intervals", f"{a.confidence:.0%}: two-stage cluster bootstrap (seeds, then members) for class shares, "
                      "percentile bootstrap over seeds for means"),
        ("tests", f"one-sided Wilcoxon signed-rank over seeds, Holm-adjusted, alpha {a.alpha:g}"),
    ], columns=["setting", "value"])


EVIDENCE_FIRST = ["finetuned", "pretrained", "reft", "seed", "finetune_lr_label", "prior_label", "spurious", "taxon",
                  "reason", "revived_by"]


def evidence_table(a: Analysis) -> pd.DataFrame:
    """The per-member evidence: ids, settings and the class first, then every measure and indicator."""
    evidence = a.evidence
    first = [c for c in EVIDENCE_FIRST if c in evidence]
    return evidence[first + [c for c in evidence.columns if c not in first]]


def _shown_evidence(a: Analysis) -> pd.DataFrame:
    shown = ["finetuned", "seed", "finetune_lr_label", "prior_label", "spurious", "taxon", "reason", "revived_by",
             "pt_acc_pretrained", "pt_acc", "null_pt_acc", "ft_acc", "ft_shortcut_acc", "stop_step", "prune_gain",
             "prune_random_gain", "reft_steps", "control_steps", "sel_finetuned", "sel_pretrained"]
    return a.evidence[[c for c in shown if c in a.evidence]]


def _context(a: Analysis, out: Path) -> dict:
    """Everything the template shows (draws and writes the figures on the way)."""
    r, columns = a.regime, setting_columns(a.by)
    figure_list, absent = _figures(a, out)
    survival = None if a.revival.by_lr.empty else {
        "by_lr": revival_display(a.revival.by_lr), "by_prior": revival_display(a.revival.by_prior),
        "logrank": revival_display(a.revival.logrank), "cox": fit_text(a.revival.cox)}
    return dict(
        paths=", ".join(str(p) for p in a.study.paths), counts=a.counts(), notes=a.study.notes,
        written=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), answer=a.answer, regime=r,
        checks=[_check(c) for c in r.checks], cells=None if r.cells.empty else r.cell_display(columns),
        flagged=len(r.flagged), confidence=f"{a.confidence:.0%}", alpha=f"{a.alpha:g}", headline=a.headline,
        sentences=[_sentence(s) for s in a.headline.sentences], class_table=a.class_display(),
        parameters=a.parameters, meanings=[(c, CLASS_MEANINGS[c]) for c in CLASSES],
        scales=", ".join(a.scales), regressions=[(c, fit_text(fit)) for c, fit in a.headline.regressions.items()],
        claims=a.claims_display(), survival=survival,
        instruments=[(INSTRUMENT_TITLES[name], table, "" if not table.empty else
                      missing_note(a.evidence, name).capitalize()) for name, table in a.instruments.items()],
        figure_list=figure_list, absent=absent, extraction=Markup(extraction.section(a.study.results, out)),
        components=a.component_display(), located=a.located_display(), protocols=_protocols(a, out),
        nulls=a.nulls_lines(), parameter_table=a.parameters_display(), store_rules=_store_rules(a),
        validation=None if a.validation is None or a.validation.empty else a.validation,
        evidence=_shown_evidence(a), config=json.dumps(a.study.config, indent=2, default=str),
        manifests=[(str(store.path), json.dumps({k: v for k, v in store.manifest.items() if k != "config"},
                                                 indent=2, default=str)) for store in a.study.stores])


def _text(page: str) -> str:
    """The words a reader sees on a page: no tags, no inline images, no config or manifest dumps."""
    page = re.sub(r"<(style|pre)[^>]*>.*?</\1>|data:image/png;base64,[^\"]*", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def render(a: Analysis, out: Path) -> str:
    """The page's HTML; writes the figures into out/figures on the way. The glossary lists the terms the rest of
    the page uses."""
    context = _context(a, out)
    return markup.render("report.html", **context, glossary=used(_text(markup.render("report.html", **context,
                                                                                      glossary=[]))))


def write_report(a: Analysis, out) -> Path:
    """Write OUT/index.html (self-contained), OUT/figures/*.png|svg and OUT/evidence.csv; returns the page's path."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        page = render(a, out)
        evidence_table(a).to_csv(out / "evidence.csv", index=False)
        index = out / "index.html"
        index.write_text(page, encoding="utf-8")
    except OSError as e:
        raise AnalysisError(f"cannot write the report into {out}: {e.strerror or e}") from None
    return index
