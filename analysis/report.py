"""The HTML report: one self-contained page (figures inline as base64 PNG, no external files), readable offline.

Its order: the regime (study checks, the pretrained models per prior, the fine-tuning cells with their flags, the
probes' nulls) before any verdict; then what fine-tuning did to C_PT (the taxonomy: one sentence for the study, one
per setting, the class shares); the claims with their verdicts and power; the survival of reFT; the instruments
against their nulls; the figures; compiled components and protocols where the study has them; the nulls and
parameters; the instruments on planted truth; the per-member evidence; the config and the manifest. OUTDIR also
receives the figures as PNG and SVG (figures/) and the per-member evidence as CSV (every measure and the class).
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path

import pandas as pd

from analysis import extraction, figures
from analysis.analyse import INSTRUMENT_TITLES, Analysis, fit_text
from analysis.errors import AnalysisError
from analysis.instruments import missing_note
from analysis.markup import STYLE, badge, escape as _e, table as html_table
from analysis.protocols import LABELS, closing_note, protocol_display, protocol_figure
from analysis.revival import display as revival_display, km_steps
from analysis.settings import setting_columns
from analysis.taxonomy import CLASS_MEANINGS, CLASSES


def _check(sentence: str) -> str:
    word, _, rest = sentence.partition(": ")
    return f"<li>{badge(word)} {_e(rest)}</li>" if word in ("holds", "FAILS", "note") else f"<li>{_e(sentence)}</li>"


def _regime(a: Analysis) -> str:
    r = a.regime
    note = f'<div class="note">{_e(r.note)}</div>' if r.note else ""
    rules = "".join(f"<li>{_e(rule)}</li>" for rule in r.requirements)
    checks = "".join(_check(c) for c in r.checks)
    parts = [f'<section id="regime"><h2>Regime: what the models can do, before any verdict</h2>{note}',
             f'<p class="caption">Requirements:</p><ul class="definition">{rules}</ul>']
    if checks:
        parts.append(f"<h3>Study checks</h3><ul>{checks}</ul>")
    if not r.priors.empty:
        parts += ["<h3>Pretrained models per prior</h3>", '<p class="caption">Fresh held-out test sets; mean over '
                  f"seeds [{a.confidence:.0%} bootstrap CI]. The operand-blind level is the C_FT of a model that "
                  "answers with the pretraining target; the output function counts, on O_FT queries whose two "
                  "answers differ, which answer the models give.</p>", html_table(r.prior_display(), ())]
    if not r.seeds.empty:
        parts += ["<h3>Pretrained models per seed</h3>", '<p class="caption">Test C_PT / C_FT (C_Te = 0) of each '
                  "seed's pretrained model per prior, judged one by one against the requirements: the fine-tuned "
                  "descendants of a model OUTSIDE the regime are not judged, so no class share, regression or claim "
                  "counts them (the cells below say how many per cell).</p>", html_table(r.seeds, ())]
    if not r.cells.empty:
        cells = r.cell_display(setting_columns(a.by))
        flagged = r.flagged
        summary = (f'<p class="flag">{len(flagged)} of {len(r.cells)} cells flagged: their verdicts below do not '
                   "mean what they say.</p>" if len(flagged) else "<p>No cell is flagged.</p>")
        parts += ["<h3>Fine-tuning cells</h3>", summary, html_table(cells, ())]
    if not r.levels.empty:
        parts += ["<h3>Probe selectivity per level: the probes' nulls</h3>", '<p class="caption">Selectivity: the '
                  "best residual layer's probe accuracy for the pretraining target minus that for the control target "
                  "(an answer about a terminal no query asks about, with the same input statistics) at that layer. "
                  "The control models and the untrained ones show what a probe reads without C_PT.</p>",
                  html_table(r.levels, ())]
    return "".join(parts) + "</section>"


def _sentence(sentence: str) -> str:
    """A per-setting sentence with its dominant class as a badge."""
    where, _, rest = sentence.partition(": ")
    word, sep, tail = rest.partition(" — ")
    return f"{_e(where)}: <b>{_e(word.lower())}</b> {_e(sep + tail)}" if sep else _e(sentence)


def _taxonomy(a: Analysis) -> str:
    sentences = "".join(f"<li>{_sentence(s)}</li>" for s in a.headline.sentences)
    p = a.parameters
    meanings = "".join(f"<li><b>{_e(c)}</b>: {_e(CLASS_MEANINGS[c])}</li>" for c in CLASSES)
    definition = (f"Each fine-tuned member gets one class, or is not judged (diverged lineage; parent's test C_PT "
                  f"below {p.min_pretrained_acc:g}; parent outside the regime; incomplete evidence). C_PT is "
                  "<i>kept</i> when the member's test C_PT is at least the midpoint between its parent's and that of "
                  "a model that never had it (the seed's control), else <i>suppressed</i>. Revival must beat the "
                  "nulls (see <a href='#nulls'>Nulls and parameters</a>). Shares among the judged members with "
                  f"{a.confidence:.0%} intervals from a two-stage bootstrap over seeds, then members within them "
                  "(the seed is the unit: the children of one parent are not independent draws).")
    regressions = []
    for c, fit in a.headline.regressions.items():
        regressions.append(f"<li><b>{_e(c)}</b> vs the rest: {_e(fit_text(fit))}</li>")
    return f"""
<section id="taxonomy">
<h2>What fine-tuning did to C_PT</h2>
<p class="overall">{_e(a.headline.overall)}</p>
<ul class="settings">{sentences}</ul>
{html_table(a.class_display(), ()) if not a.headline.table.empty else ""}
<p class="definition">{definition}</p><ul class="definition">{meanings}</ul>
<h3>Logistic regression per class on the settings</h3>
<p class="caption">One-vs-rest logit over the judged members on log10 fine-tuning LR, log10 sampling prior, C_Tr and
every swept scale column that varies ({_e(', '.join(a.scales) or 'none here')}); standard errors clustered by
pretraining seed (cluster-robust, t with seeds - 1 degrees of freedom).</p>
<ul class="definition">{''.join(regressions)}</ul>
</section>"""


def _claims(a: Analysis) -> str:
    return f"""
<section id="claims">
<h2>Claims of the reference study</h2>
<p class="caption">Each claim is one number per seed (seeds are the unit of replication; claims 4a-c pair each
small/medium-LR member with its large-LR sibling of the same parent), tested with an exact one-sided Wilcoxon
signed-rank test (the sign-flip distribution over the observed values, ties and zeros included), Holm-adjusted across
the claims tested. <b>untestable at this n</b>: with its non-zero per-seed values the test's smallest p is not below
the level of its Holm step; <b>supported</b>: p (Holm) &lt; {a.alpha:g} and the effect &gt; 0; <b>refuted</b>: the
equivalence test that the effect is below the smallest effect of interest (SESOI), a signed-rank test of SESOI -
value &gt; 0, has p (Holm) &lt; {a.alpha:g}; otherwise <b>inconclusive</b>. Power, exact: the chance that the test run
on these values gets below the level of its Holm step when they are normal around the SESOI with their spread.</p>
{html_table(a.claims_display())}
</section>"""


def _survival(a: Analysis) -> str:
    r = a.revival
    if r.by_lr.empty:
        body = "<p>No suppressed member with a reFT child: nothing to revive.</p>"
    else:
        body = (f"<h3>Per fine-tuning LR</h3>{html_table(revival_display(r.by_lr), ())}"
                f"<h3>Per fine-tuning LR and prior</h3>{html_table(revival_display(r.by_prior), ())}"
                "<h3>Log-rank, reFT against the control at LR factor 1</h3>"
                f"{html_table(revival_display(r.logrank), ())}"
                f"<h3>Cox regression of reFT revival</h3><p>{_e(fit_text(r.cox))}</p>")
    return f"""
<section id="survival">
<h2>Survival of reFT: steps to revive the suppressed C_PT</h2>
<p class="caption">Kaplan-Meier estimates over the reFT children of members whose C_PT is suppressed and over their
matched controls (never had C_PT; trained on it at the lineage's reFT LR x each factor); a run that does not reach
the threshold within the budget is right-censored there. Restricted mean: the area under the curve up to the
budget. Hazard ratio &gt; 1: faster revival.</p>
{body}
</section>"""


def _instruments(a: Analysis) -> str:
    parts = ['<section id="instruments"><h2>Instruments against their nulls</h2><p class="caption">Per setting, mean '
             f"over seeds [{a.confidence:.0%} bootstrap CI], members of healthy lineages whose parent had C_PT.</p>"]
    for name, table in a.instruments.items():
        parts.append(f"<h3>{_e(INSTRUMENT_TITLES[name])}</h3>")
        parts.append(html_table(table, ()) if not table.empty else
                     f"<p class='meta'>{_e(missing_note(a.evidence, name).capitalize())}.</p>")
    return "".join(parts) + "</section>"


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
    "pruning": ("C_PT and C_FT accuracy against units pruned",
                "A hidden wrapper shows as C_PT (blue) climbing back within the pruning budget while C_FT (orange) "
                "falls, above the null: the same number of random neurons removed (light blue). Dotted: the "
                "pretrained members pruned the same way. Bands: bootstrap 95% intervals over seeds."),
    "probe": ("Probe accuracy for the pretraining target, by layer",
              "Held-out accuracy of linear probes reading the C_PT answer from the residual stream at the answer "
              "position. Fine-tuned (blue) close to pretrained (black) means the capability is still represented; "
              "the untrained model (grey) and the control target (red) are the nulls."),
    "reft": ("Reverse fine-tuning against the control",
             "C_PT accuracy while training on the pretraining task: the reverse-fine-tuned model (green) against a "
             "model pretrained without C_PT, trained the same way at the matched reFT LR x each factor (grey). The "
             "dash-dotted line is the revival threshold."),
    "survival": ("Steps to revival: Kaplan-Meier curves",
                 "Share of runs not yet revived against steps, reFT of suppressed members (solid) and the matched "
                 "controls (dashed), one panel per fine-tuning LR; censored at the budget."),
    "attention": ("Attention maps before and after fine-tuning, and after reFT",
                  "Mean attention mass from the answer position, per layer and head, to the operand slot and to the "
                  "O_PT / O_FT tokens; columns within a panel split C_PT queries (PTq) and C_FT queries (FTq)."),
    "training": ("Training curves per phase",
                 "C_PT accuracy, C_FT accuracy and training loss through each phase; means over seeds with "
                 "bootstrap 95% bands."),
}


def _figures(a: Analysis, out: Path) -> str:
    study, evidence, p = a.study, a.evidence, a.parameters
    budget = float(evidence.prune_budget.median()) if "prune_budget" in evidence and \
        evidence.prune_budget.notna().any() else None
    threshold = study.config.get("reft", {}).get("threshold")
    methods = [m for m in ("neurons", "heads", "mask", "neurons_remove_ft", "weights")
               if (study.results.metric == f"{m}.pt_acc").any()] or [p.prune_method]
    methods.sort(key=lambda m: m != p.prune_method)
    planned = [("classes", None, lambda: figures.class_shares(a.headline.table, setting_columns(a.by), CLASSES))]
    planned += [("pruning", m, lambda m=m: figures.pruning_curves(study, m, budget if m == p.prune_method else None))
                for m in methods]
    planned += [("probe", None, lambda: figures.probe_layers(study)),
                ("reft", None, lambda: figures.reft_curves(study, evidence, threshold)),
                ("survival", None, lambda: figures.km_curves(km_steps(a.revival.runs),
                                                             study.config.get("reft", {}).get("steps"))),
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
        if variant is not None and variant != p.prune_method:
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
    located = a.located_display()
    found = "" if located.empty else f"""
<h3>Does pruning find the compiled components?</h3>
<p>Of the first n units (heads or MLP neurons) that the C_PT-attribution ranking removes, n being a component's
units of its kind, the share that lie in that component, beside chance (n / all units of the kind); mean over seeds
[{a.confidence:.0%} bootstrap CI].</p>
{html_table(located, badge_columns=())}"""
    return f"""
<section id="components">
<h2>Compiled components</h2>
<p>How far fine-tuning (and reverse fine-tuning) moved each compiled RASP operation against the compiled model:
relative Frobenius change of its weights (<code>weight_change</code>) and of its output into the residual stream on
held-out inputs (<code>act_change</code>); mean over seeds [{a.confidence:.0%} bootstrap CI].</p>
{html_table(table, badge_columns=())}{found}
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
{html_table(protocol_display(a.protocols), badge_columns=())}
<img alt="protocols" src="data:image/png;base64,{saved["png_base64"]}">
<h3>Weight change per layer and component</h3>
<p class="caption">||W - W0|| / ||W0|| against the pretrained parent (merged weights for LoRA and SVF);
<code>attn@0</code> is block 0's attention.</p>
{html_table(protocol_display(a.protocols, parts), badge_columns=())}
</section>"""


def _nulls(a: Analysis) -> str:
    config = a.study.config
    store_rules = pd.DataFrame([
        ("revival threshold (reFT, control)", f"C_PT >= {config.get('reft', {}).get('threshold', 'n/a')} x the "
                                              "lineage's pretrained C_PT (reft.threshold of the run)"),
        ("k_revive tolerance (pruning)", f"C_PT within {config.get('prune', {}).get('tolerance', 'n/a')} of "
                                         "pretrained C_PT (prune.tolerance of the run)"),
        ("intervals", f"{a.confidence:.0%}: Wilson for shares, percentile bootstrap over seeds for means"),
        ("tests", f"one-sided Wilcoxon signed-rank over seeds, Holm-adjusted, alpha {a.alpha:g}"),
    ], columns=["setting", "value"])
    nulls = "".join(f"<li>{_e(line)}</li>" for line in a.nulls_lines())
    return f"""
<section id="nulls">
<h2>Nulls and parameters</h2>
<ul>{nulls}</ul>
<p class="caption">Parameters are set with <code>--threshold NAME=VALUE</code>.</p>
{html_table(a.parameters_display(), ())}{html_table(store_rules, ())}
</section>"""


def _validation(a: Analysis) -> str:
    """The instruments on planted truth (analysis.validation): false-positive rates and power, planted classes."""
    v = a.validation
    if v is None or v.empty:
        return ""
    return f"""
<section id="validation">
<h2>Instruments on planted truth</h2>
<p class="caption">False-positive rate on the matched nulls fine-tuned (never had C_PT), each seed judged against
the thresholds of the other seeds' nulls (nominal {v.nominal:.0%}); power on the planted wrappers (C_PT intact, its
read-out re-mapped) whose C_PT was suppressed; exact 95% intervals. FLAG: fewer than 40 nulls, or a rate above
nominal (one-sided binomial test).</p>
{html_table(v.display(), ())}
<p class="caption">Classes of the planted members: a matched null is a planted overwrite, judged against its real
twin's parent.</p>
{html_table(v.classes, ())}
</section>"""


EVIDENCE_FIRST = ["finetuned", "pretrained", "reft", "seed", "finetune_lr_label", "prior_label", "spurious", "taxon",
                  "reason", "revived_by"]


def evidence_table(a: Analysis) -> pd.DataFrame:
    """The per-member evidence: ids, settings and the class first, then every measure and indicator."""
    evidence = a.evidence
    first = [c for c in EVIDENCE_FIRST if c in evidence]
    return evidence[first + [c for c in evidence.columns if c not in first]]


def _provenance(a: Analysis) -> str:
    shown = ["finetuned", "seed", "finetune_lr_label", "prior_label", "spurious", "taxon", "reason", "revived_by",
             "pt_acc_pretrained", "pt_acc", "null_pt_acc", "ft_acc", "ft_shortcut_acc", "stop_step", "prune_gain",
             "prune_random_gain", "reft_steps", "control_steps", "sel_finetuned", "sel_pretrained"]
    evidence = a.evidence[[c for c in shown if c in a.evidence]]
    manifests = []
    for store in a.study.stores:
        rest = {k: v for k, v in store.manifest.items() if k != "config"}
        manifests.append(f"<h3>{_e(store.path)}</h3><pre>{_e(json.dumps(rest, indent=2, default=str))}</pre>")
    return f"""
<section id="members">
<h2>Per-member evidence</h2>
<details><summary>{len(evidence)} fine-tuned members (every measure in evidence.csv)</summary>
{html_table(evidence, ())}</details>
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
{_regime(a)}
{_taxonomy(a)}
{_claims(a)}
{_survival(a)}
{_instruments(a)}
{_figures(a, out)}
{extraction.section(a.study.results, out)}
{_components(a)}
{_protocols(a, out)}
{_nulls(a)}
{_validation(a)}
{_provenance(a)}
</body></html>
"""


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
