"""The HTML report: one self-contained page (figures inline as base64 PNG, no external files), readable offline.

The first screen answers "did a wrapper emerge, under which settings, with what confidence": one sentence for the
study, one per setting, and a compact table of rates with intervals. Then the figures, the claim tests and the
regression, the thresholds, the config and the manifest. OUTDIR also receives the figures as PNG and SVG
(figures/) and the per-member evidence as CSV.
"""
from __future__ import annotations

import datetime
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import extraction, figures
from analysis.analyse import Analysis
from analysis.errors import AnalysisError
from analysis.protocols import LABELS, closing_note, protocol_display, protocol_figure
from analysis.wrapper import EVIDENCE_PHASES

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1240px;
       padding: 12px 20px 40px; color: #1d1d1f; line-height: 1.35; }
h1 { font-size: 20px; margin: 6px 0 2px; } h2 { font-size: 17px; margin: 22px 0 6px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 16px 0 4px; }
.meta { color: #555; font-size: 13px; }
.note { background: #fff4d6; border-left: 4px solid #e0a800; padding: 4px 10px; margin: 6px 0; font-size: 13px; }
.overall { font-size: 16px; font-weight: 600; margin: 8px 0; }
ul.settings { columns: 2; column-gap: 28px; font-size: 13px; margin: 4px 0 8px; padding-left: 18px; }
ul.settings li { break-inside: avoid; margin-bottom: 2px; }
table { border-collapse: collapse; font-size: 12.5px; margin: 6px 0; }
th, td { border: 1px solid #d6d6d6; padding: 2px 6px; text-align: left; vertical-align: top; }
#verdict td { white-space: nowrap; }
th { background: #f3f3f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.v { font-weight: 700; padding: 0 4px; border-radius: 3px; white-space: nowrap; }
.v-yes, .v-supported { background: #d7f2d9; color: #14621c; }
.v-no, .v-not-supported { background: #e4e8f0; color: #2d3d5c; }
.v-inconclusive { background: #fff0c2; color: #7a5600; }
.v-not-judged, .v-not-tested { background: #eee; color: #666; }
.caption { font-size: 13px; color: #444; max-width: 1100px; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f7f7f9; padding: 8px; font-size: 12px; overflow-x: auto; max-height: 480px; }
details { margin: 6px 0; } summary { cursor: pointer; font-weight: 600; }
.definition { font-size: 13px; color: #333; }
"""


def _e(value) -> str:
    return html.escape(str(value))


def _verdict_badge(verdict: str) -> str:
    word = verdict.split(" (")[0].split(":")[0]
    return f'<span class="v v-{word.replace(" ", "-")}">{_e(verdict)}</span>'


def _html_table(frame: pd.DataFrame, badge_columns=("verdict",)) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, record):
            if column in badge_columns:
                cells.append(f"<td>{_verdict_badge(value)}</td>")
            elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                cells.append(f'<td class="num">{_e(_number(value))}</td>')
            else:
                cells.append(f"<td>{_e(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _number(value) -> str:
    if isinstance(value, (int, np.integer)):
        return str(value)
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.3g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.3f}".rstrip("0").rstrip(".")


def _first_screen(a: Analysis) -> str:
    sentences = "".join(f"<li>{_sentence(s)}</li>" for s in a.headline.sentences)
    t = a.thresholds
    definition = (f"A fine-tuned member counts as a <b>wrapper</b> when fine-tuning hid C_PT (accuracy below "
                  f"{t.lost_below:g} x pretrained) <i>and</i> pruning at most max({t.prune_units}, "
                  f"{t.prune_fraction:g} x units) {_e(t.prune_method)} revives it <i>and</i> a linear probe still "
                  f"reads the pretraining target at >= {t.probe_ratio:g} x the pretrained accuracy <i>and</i> reFT "
                  f"revives C_PT >= {t.reft_speedup:g}x faster than the control that never had it (a run that "
                  "never reaches the revival threshold counts as reaching it at the end of its budget, so x1.00 can "
                  "mean neither did). Verdict per "
                  f"setting: <b>yes</b> when the {a.confidence:.0%} interval of the wrapper rate lies above 50%, "
                  "<b>no</b> when below, otherwise <b>inconclusive</b>. Members whose parent never reached "
                  f"C_PT >= {t.min_pretrained_acc:g} are not judged. See <a href='#thresholds'>Thresholds</a>.")
    missing = "" if not a.missing_evidence else (
        f'<div class="note">No member gets a wrapper indicator: the store has no {_e(", ".join(a.missing_evidence))} '
        f'results (the indicator reads the {", ".join(EVIDENCE_PHASES)} evaluations).</div>')
    return f"""
<section id="verdict">
<h2>Did a wrapper emerge?</h2>
<p class="overall">{_e(a.headline.overall)}</p>
{missing}
<ul class="settings">{sentences}</ul>
{_html_table(a.setting_display()) if not a.headline.table.empty else ""}
<p class="definition">{definition}</p>
</section>"""


def _sentence(sentence: str) -> str:
    """A per-setting sentence with its verdict word as a badge."""
    where, _, rest = sentence.partition(": ")
    word, _, tail = rest.partition(" — ")
    if word.lower() in ("yes", "no", "inconclusive", "not judged"):
        return f"{_e(where)}: {_verdict_badge(word.lower())} {_e(tail)}"
    return _e(sentence)


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
    "heatmap": ("Wrapper emergence by setting",
                "Share of judged fine-tuned members that meet every wrapper criterion, per fine-tuning LR and sampling "
                "prior; one panel per spurious strength C_Tr. Cells read k/n members."),
    "pruning": ("C_PT and C_FT accuracy against units pruned",
                "A wrapper shows as C_PT (blue) jumping back to the pretrained level (dotted: the pretrained members "
                "pruned the same way) within the pruning budget while C_FT (orange) falls. Bands: bootstrap 95% "
                "intervals over seeds."),
    "probe": ("Probe accuracy for the pretraining target, by layer",
              "Held-out accuracy of linear probes reading the C_PT answer from the residual stream at the answer "
              "position. Fine-tuned (blue) close to pretrained (black) means the capability is still represented; "
              "the randomly initialised model (grey) and shuffled labels (red) are the floors."),
    "reft": ("Reverse fine-tuning against the control",
             "C_PT accuracy while training on the pretraining task: the reverse-fine-tuned model (green) against a "
             "model pretrained without C_PT, trained the same way at the reFT LR and at larger LRs (grey). The "
             "dash-dotted line is the revival threshold."),
    "attention": ("Attention maps before and after fine-tuning, and after reFT",
                  "Mean attention mass from the answer position, per layer and head, to the operand slot and to the "
                  "O_PT / O_FT tokens; columns within a panel split C_PT queries (PTq) and C_FT queries (FTq)."),
    "training": ("Training curves per phase",
                 "C_PT accuracy, C_FT accuracy and training loss through each phase; means over seeds with "
                 "bootstrap 95% bands."),
}


def _figures(a: Analysis, out: Path) -> str:
    study, evidence, t = a.study, a.evidence, a.thresholds
    budget = float(evidence.prune_budget.median()) if evidence.prune_budget.notna().any() else None
    threshold = study.config.get("reft", {}).get("threshold")
    prune_methods = [m for m in ("neurons", "heads", "mask", "neurons_remove_ft", "weights")
                     if (study.results.metric == f"{m}.pt_acc").any()] or [t.prune_method]
    prune_methods.sort(key=lambda m: m != t.prune_method)
    planned = [("heatmap", None, lambda: figures.wrapper_heatmap(evidence))]
    planned += [("pruning", m, lambda m=m: figures.pruning_curves(study, m, budget if m == t.prune_method else None))
                for m in prune_methods]
    planned += [("probe", None, lambda: figures.probe_layers(study)),
                ("reft", None, lambda: figures.reft_curves(study, evidence, threshold)),
                ("attention", None, lambda: figures.attention_maps(study)),
                ("training", None, lambda: figures.training_curves(study))]
    parts, absent = [], []
    for kind, variant, draw in planned:
        title, caption = FIGURE_TEXT[kind]
        if kind == "pruning":
            caption = f"{PRUNED_UNITS[variant]} {caption}"
        fig = draw()
        if fig is None:
            absent.append(title)
            continue
        name = kind if variant is None else f"{kind}-{variant}"
        saved = figures.save(fig, out / "figures", name)
        if variant is not None:
            title = f"{title}: {variant}"
        body = (f'<p class="caption">{_e(caption)}</p><img alt="{_e(title)}" '
                f'src="data:image/png;base64,{saved["png_base64"]}">')
        if variant is not None and variant != t.prune_method:
            parts.append(f"<details><summary>{_e(title)}</summary>{body}</details>")
        else:
            parts.append(f"<h3>{_e(title)}</h3>{body}")
    if absent:
        parts.append(f'<p class="meta">Not drawn (no data in the store): {_e("; ".join(absent))}.</p>')
    return '<section id="figures"><h2>Figures</h2>' + "".join(parts) + "</section>"


def _components(a: Analysis) -> str:
    """The compiled components' change, for studies on a compiled model (nothing otherwise)."""
    table = a.component_display()
    if table.empty:
        return ""
    return f"""
<section id="components">
<h2>Compiled components</h2>
<p>How far fine-tuning (and reverse fine-tuning) moved each compiled RASP operation against the compiled model:
relative Frobenius change of its weights (<code>weight_change</code>) and of its output into the residual stream on
held-out inputs (<code>act_change</code>); mean over seeds [{a.confidence:.0%} bootstrap CI].</p>
{_html_table(table, badge_columns=())}
</section>"""


def _protocols(a: Analysis, out: Path) -> str:
    """The comparison of fine-tuning protocols, for studies that sweep them (nothing otherwise)."""
    if a.protocols.empty:
        return ""
    saved = figures.save(protocol_figure(a.protocols), out / "figures", "protocols")
    parts = [m for m in dict.fromkeys(a.protocols.measure) if m not in LABELS]
    note = "".join(f"<li>{_e(s)}</li>" for s in closing_note(a.protocols))
    return f"""
<section id="protocols">
<h2>Fine-tuning protocols</h2>
<p>Which protocol keeps C_PT, and which leaves a capability that pruning or reFT revives easily? Mean over seeds
[{a.confidence:.0%} bootstrap CI] per protocol and setting.</p>
<ul class="settings">{note}</ul>
{_html_table(protocol_display(a.protocols), badge_columns=())}
<img alt="protocols" src="data:image/png;base64,{saved["png_base64"]}">
<h3>Weight change per layer and component</h3>
<p class="caption">||W - W0|| / ||W0|| against the pretrained parent (merged weights for LoRA and SVF);
<code>attn@0</code> is block 0's attention.</p>
{_html_table(protocol_display(a.protocols, parts), badge_columns=())}
</section>"""


def _claims(a: Analysis) -> str:
    rows = []
    for c in a.claims:
        test = c.test
        rows.append({"": c.id, "claim": c.claim, "per-seed measure": c.measure,
                     "effect [95% CI]": c.effect_text or "-", "seeds": test.n if test else "-",
                     "rank-biserial": round(test.rank_biserial, 2) if test else "-",
                     "p": _number(test.p) if test else "-", "p (Holm)": _number(c.p_holm) if test else "-",
                     "verdict": c.verdict, "detail": c.detail})
    regression = a.headline.regression
    if regression.available:
        level = f"{a.confidence:.0%}"
        table = regression.table.rename(columns={"coef": "coefficient", "se": "std. error", "odds_ratio": "odds ratio",
                                                 "or_lo": f"OR {level} low", "or_hi": f"OR {level} high"})
        fit = _html_table(table)
        if regression.dropped:
            fit += f'<p class="meta">Left out (constant here): {_e(", ".join(regression.dropped))}.</p>'
    else:
        fit = f'<p><span class="v v-not-tested">not available</span> {_e(regression.reason)}.</p>'
    return f"""
<section id="claims">
<h2>Claims of the reference study</h2>
<p class="caption">Each claim is reduced to one number per seed (seeds are the unit of replication: members of a
seed share their initialisation and, within a prior, their pretrained parent) and tested with a one-sided
Wilcoxon signed-rank test; p-values are Holm-adjusted across the claims tested, and a claim is <i>supported</i> when
its adjusted p is below {a.alpha:g} and its effect is positive. The rank-biserial correlation (-1..1) is the share of
rank mass in favour of the claim.</p>
{_html_table(pd.DataFrame(rows))}
<h3>Logistic regression of wrapper emergence on the settings</h3>
<p class="caption">Wrapper (0/1) per judged member on log10 fine-tuning LR, log10 sampling prior and spurious
strength C_Tr ({regression.n} members; standard errors treat members as independent).</p>
{fit}
</section>"""


def _thresholds(a: Analysis) -> str:
    rows = pd.DataFrame(a.thresholds.describe(), columns=["criterion", "rule"])
    values = pd.DataFrame([(name, _plain_value(value)) for name, value in vars(a.thresholds).items()],
                          columns=["threshold", "value"])
    config = a.study.config
    store_rules = pd.DataFrame([
        ("revival threshold (reFT, control)", f"C_PT >= {config.get('reft', {}).get('threshold', 'n/a')} x "
                                              "pretrained C_PT (reft.threshold of the run)"),
        ("k_revive tolerance (pruning)", f"C_PT within {config.get('prune', {}).get('tolerance', 'n/a')} of "
                                         "pretrained C_PT (prune.tolerance of the run)"),
        ("intervals", f"{a.confidence:.0%}: Wilson for rates, percentile bootstrap over seeds for means"),
        ("tests", f"one-sided Wilcoxon signed-rank over seeds, Holm-adjusted, alpha {a.alpha:g}"),
    ], columns=["setting", "value"])
    return f"""
<section id="thresholds">
<h2>Thresholds</h2>
<p class="caption">Set with <code>--threshold NAME=VALUE</code>.</p>
{_html_table(rows)}{_html_table(values)}{_html_table(store_rules)}
</section>"""


def _plain_value(value) -> str:
    return "fastest control" if value is None else str(value)


EVIDENCE_COLUMNS = ["finetuned", "pretrained", "reft", "seed", "finetune_lr_label", "prior_label", "spurious",
                    "pt_acc_pretrained", "pt_acc_finetuned", "ft_acc_finetuned", "prune_k_revive", "prune_budget",
                    "probe_ratio", "reft_steps", "control_steps", "reft_speedup", "lost", "revived_by_pruning",
                    "probe_reads", "reft_faster", "wrapper", "left_out"]


def _provenance(a: Analysis) -> str:
    evidence = a.evidence[[c for c in EVIDENCE_COLUMNS if c in a.evidence]]
    manifests = []
    for store in a.study.stores:
        rest = {k: v for k, v in store.manifest.items() if k != "config"}
        manifests.append(f"<h3>{_e(store.path)}</h3><pre>{_e(json.dumps(rest, indent=2, default=str))}</pre>")
    return f"""
<section id="members">
<h2>Per-member evidence</h2>
<details><summary>{len(evidence)} fine-tuned members (also in evidence.csv)</summary>
{_html_table(evidence)}</details>
</section>
<section id="config"><h2>Config</h2>
<details><summary>config of the run</summary><pre>{_e(json.dumps(a.study.config, indent=2, default=str))}</pre>
</details></section>
<section id="manifest"><h2>Manifest</h2>{''.join(manifests)}</section>"""


def render(a: Analysis, out: Path) -> str:
    """The page's HTML; writes the figures into out/figures on the way."""
    paths = ", ".join(str(p) for p in a.study.paths)
    notes = "".join(f'<div class="note">{_e(n)}</div>' for n in a.study.notes)
    written = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fttrace analysis: {_e(paths)}</title>
<style>{STYLE}</style></head><body>
<h1>fttrace analysis: {_e(paths)}</h1>
<p class="meta">{_e(a.counts())}. Report written {written}.</p>
{notes}
{_first_screen(a)}
{_figures(a, out)}
{extraction.section(a.study.results, out)}
{_components(a)}
{_protocols(a, out)}
{_claims(a)}
{_thresholds(a)}
{_provenance(a)}
</body></html>
"""


def write_report(a: Analysis, out) -> Path:
    """Write OUT/index.html (self-contained), OUT/figures/*.png|svg and OUT/evidence.csv; returns the page's path."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        page = render(a, out)
        a.evidence.to_csv(out / "evidence.csv", index=False)
        index = out / "index.html"
        index.write_text(page, encoding="utf-8")
    except OSError as e:
        raise AnalysisError(f"cannot write the report into {out}: {e.strerror or e}") from None
    return index
