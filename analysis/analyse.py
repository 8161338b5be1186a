"""One study analysed end to end — what the report and the terminal summary show, in their order: the regime, the
taxonomy's headline, the claims, the survival of reFT, the instruments against their nulls, compiled components and
protocols, and the nulls and parameters behind every verdict."""
from __future__ import annotations

import dataclasses
import textwrap

import numpy as np
import pandas as pd

from analysis.claims import ALPHA, ClaimResult, evaluate_claims
from analysis.components import component_display, component_table, located_display
from analysis.emergence import Headline, headline
from analysis.errors import AnalysisError
from analysis.instruments import instrument_tables, missing_note
from analysis.load import Study, load_study
from analysis.protocols import closing_note, protocol_display, protocol_table
from analysis.regime import Regime, regime
from analysis.revival import Revival, display as revival_display, revival
from analysis.settings import describe_setting, readable, scale_columns, setting_columns, swept_axes
from analysis.stats import CONFIDENCE, LogisticFit
from analysis.survival import CoxFit
from analysis.taxonomy import CLASSES, Parameters, Taxonomy, taxonomy
from analysis.validation import Validation, validate

WIDTH = 120  # terminal columns for wrapped prose
INSTRUMENT_TITLES = {"pruning": "Pruning against its nulls (random neurons; the control that never had C_PT)",
                     "attention": "Attention change against the seed-to-seed null",
                     "patching": "Activation patching with the parent"}


@dataclasses.dataclass
class Analysis:
    study: Study
    parameters: Parameters
    by: tuple[str, ...]
    taxonomy: Taxonomy
    regime: Regime
    headline: Headline
    claims: list[ClaimResult]
    revival: Revival
    instruments: dict[str, pd.DataFrame]
    scales: list[str]  # the swept scale columns the regressions use
    alpha: float = ALPHA
    confidence: float = CONFIDENCE
    protocols: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # analysis.protocols.protocol_table
    validation: Validation | None = None  # the instruments on planted truth (analysis.validation)

    @property
    def evidence(self) -> pd.DataFrame:
        return self.taxonomy.evidence

    def counts(self) -> str:
        members = self.study.members
        kinds = members.kind.value_counts()
        parts = [f"{kinds.get(kind, 0)} {name}" for kind, name in
                 (("pretrained", "pretrained"), ("finetuned", "fine-tuned"), ("reft", "reverse-fine-tuned"),
                  ("control_pretrained", "control"))]
        seeds = members[members.kind == "pretrained"].seed.nunique()
        diverged = int((members.status == "diverged").sum())
        return ", ".join(parts) + f" members over {seeds} seed(s)" + (f"; {diverged} diverged" if diverged else "")

    def class_display(self) -> pd.DataFrame:
        """The headline table with readable columns: per class 'k (share [lo, hi])' (page and terminal)."""
        table = self.headline.table
        if table.empty:
            return table
        columns = setting_columns(self.by)
        out = readable(table, columns)
        out["judged"] = [f"{r.judged}/{r.members}" for r in table.itertuples()]
        out["dominant"] = table.dominant.replace("", "n/a")
        for c in CLASSES:
            out[c] = [_share(k, share, lo, hi) for k, share, lo, hi in
                      zip(table[f"{c} k"], table[f"{c} share"], table[f"{c} lo"], table[f"{c} hi"])]
        if (table.not_judged != "").any():
            out["not judged"] = table.not_judged
        return out

    def claims_display(self) -> pd.DataFrame:
        rows = []
        for c in self.claims:
            test = c.test
            rows.append({"": c.id, "claim": c.claim, "verdict": c.verdict, "effect [95% CI]": c.effect_text or "-",
                         "SESOI": c.sesoi_text, "power": c.power_text or "-", "seeds": test.n if test else "-",
                         "p": _p(test.p) if test else "-", "p (Holm)": _p(c.p_holm) if test else "-",
                         "p below SESOI (Holm)": _p(c.p_equivalence_holm) if test else "-",
                         "per-seed measure": c.measure, "detail": c.detail})
        return pd.DataFrame(rows)

    def component_display(self) -> pd.DataFrame:
        """The change of each compiled component per setting (empty unless the study has a compiled model)."""
        return component_display(component_table(self.study, self.confidence))

    def located_display(self) -> pd.DataFrame:
        """Whether targeted pruning removes the compiled components first (empty without compiled components)."""
        return located_display(self.study, self.confidence)

    def nulls_lines(self) -> list[str]:
        nulls = self.taxonomy.nulls
        return [nulls.prune_text(), *nulls.reft_texts()]

    def parameters_display(self) -> pd.DataFrame:
        return pd.DataFrame(self.parameters.describe(self.taxonomy.target), columns=["parameter", "value", "rule"])

    def summary_text(self) -> str:
        """Everything the terminal shows, regime first."""
        lines = [f"{', '.join(map(str, self.study.paths))}: {self.counts()}"]
        lines += [f"note: {note}" for note in self.study.notes]
        lines += ["", *_regime_lines(self.regime, self.by)]
        lines += ["", "== What fine-tuning did to C_PT (the taxonomy) ==", self.headline.overall]
        if not self.headline.table.empty:
            lines += ["", *self.headline.sentences, "", _frame(self.class_display()), "",
                      "Each class against the rest (logistic regression over the judged members, standard errors "
                      "clustered by seed):"]
            lines += [f"  {c}: {fit_text(fit)}" for c, fit in self.headline.regressions.items()]
        lines += ["", "== Claims of the reference study (exact one-sided Wilcoxon over seeds, Holm-adjusted) =="]
        for c in self.claims:
            lines.append(f"  {c.id:>2}  {c.verdict}  — {c.claim}")
            if c.test:
                lines.append(f"      effect {c.effect_text} (SESOI {c.sesoi_text}); {c.power_text}; p {_p(c.test.p)}, "
                             f"p(Holm) {_p(c.p_holm)}; below the SESOI: p(Holm) {_p(c.p_equivalence_holm)}")
        lines += ["", *_revival_lines(self.revival)]
        lines += ["", "== Instruments against their nulls (mean over seeds [95% bootstrap CI]) =="]
        for name, table in self.instruments.items():
            lines += [f"{INSTRUMENT_TITLES[name]}:", _frame(table) if not table.empty else
                      f"  {missing_note(self.evidence, name)}"]
        components = self.component_display()
        if not components.empty:
            lines += ["", f"Change of each compiled component against the compiled model (mean over seeds "
                          f"[{self.confidence:.0%} bootstrap CI]):", _frame(components)]
        located = self.located_display()
        if not located.empty:
            lines += ["", "Does pruning find the compiled components? Share of the first n units the C_PT ranking "
                          "removes that lie in each component (n = its units; chance = n / all units of its kind):",
                      _frame(located)]
        if not self.protocols.empty:
            lines += ["", f"Fine-tuning protocols (mean over seeds [{self.confidence:.0%} bootstrap CI]):",
                      _frame(protocol_display(self.protocols)), *closing_note(self.protocols)]
        lines += ["", "== Nulls and parameters ==", *self.nulls_lines(), _frame(self.parameters_display())]
        if self.validation is not None:
            lines += ["", "== Instruments on planted truth ==", *self.validation.lines()]
        return "\n".join(lines)


def _share(k, share, lo, hi) -> str:
    if not np.isfinite(share):
        return "-"
    return f"{k} ({share:.0%} [{lo:.0%}, {hi:.0%}])" if np.isfinite(lo) else f"{k} ({share:.0%})"


def _p(value) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.3g}"


def _frame(frame: pd.DataFrame) -> str:
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.max_colwidth", 60):
        return frame.to_string(index=False)


def _wrapped(sentence: str) -> str:
    """A sentence indented and wrapped to the terminal's WIDTH columns."""
    return textwrap.fill(sentence, WIDTH, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False)


def _regime_lines(r: Regime, by) -> list[str]:
    lines = ["== Regime (before any verdict) =="]
    if r.note:
        lines.append(f"note: {r.note}")
    lines += ["Requirements:", *(_wrapped(rule) for rule in r.requirements)]
    lines += [_wrapped(check) for check in r.checks]
    if not r.priors.empty:
        lines += ["Pretrained models per prior (mean over seeds [95% CI]):", _frame(r.prior_display())]
    if not r.seeds.empty:
        lines += ["Pretrained models per seed (test C_PT/C_FT at C_Te = 0; OUTSIDE: not judged, nor its "
                  "descendants):", _frame(r.seeds)]
    if not r.cells.empty:
        columns = setting_columns(by)
        lines += ["Fine-tuning cells:", _frame(r.cell_display(columns).drop(columns="flags"))]
        flagged = r.flagged
        lines += [f"FLAG {describe_setting(row, columns)}: {row['flags']}" for _, row in flagged.iterrows()] or \
            ["No cell is flagged."]
    if not r.levels.empty:
        lines += ["Probe selectivity per level (the nulls: control, untrained):", _frame(r.levels)]
    return lines


def _revival_lines(r: Revival) -> list[str]:
    lines = ["== Survival of reFT: steps to revive the suppressed C_PT, reFT vs the matched control =="]
    if r.by_lr.empty:
        return lines + ["  no suppressed member with a reFT child"]
    lines += ["Per fine-tuning LR (Kaplan-Meier, censored at the budget):", _frame(revival_display(r.by_lr))]
    if not r.logrank.empty:
        lines += ["Log-rank, reFT vs control x1:", _frame(revival_display(r.logrank))]
    lines += [f"Cox regression of reFT revival: {fit_text(r.cox)}"]
    return lines


def fit_text(fit: CoxFit | LogisticFit) -> str:
    if not fit.available:
        return f"not available ({fit.reason})"
    ratio, low, high = ("hazard_ratio", "hr_lo", "hr_hi") if isinstance(fit, CoxFit) else ("odds_ratio", "or_lo",
                                                                                          "or_hi")
    return "; ".join(f"{r.term}: {ratio.replace('_', ' ')} {getattr(r, ratio):.3g} [{getattr(r, low):.3g}, "
                     f"{getattr(r, high):.3g}], p {r.p:.3g}" for r in fit.table.itertuples())


def analyse(paths, parameters: Parameters = Parameters(), by=(), alpha: float = ALPHA,
            confidence: float = CONFIDENCE) -> Analysis:
    """Load the stores at `paths` as one study and compute everything the report shows."""
    study = load_study(paths)
    unknown = [c for c in by if c not in study.members.columns]
    if unknown:
        hyper = [c for c in study.members.columns if c not in ("member", "kind", "parent", "pretrained", "status",
                                                               "store")]
        raise AnalysisError(f"cannot group by {', '.join(unknown)}: not a column of the results "
                            f"(available: {', '.join(hyper)})")
    by = (*by, *(c for c in swept_axes(study.members) if c not in by))  # a swept optimiser axis splits the cells
    found = taxonomy(study, parameters)
    evidence = found.evidence
    scales = scale_columns(study.members[study.members.kind == "finetuned"])
    return Analysis(study, parameters, tuple(by), found,
                    regime(study, evidence, by, confidence, found.target, parameters.noop_accuracy),
                    headline(evidence, by, confidence, scales), evaluate_claims(evidence, alpha, confidence),
                    revival(study, evidence, scales), instrument_tables(evidence, by, confidence), scales, alpha,
                    confidence, protocol_table(study, confidence), validate(study, found))
