"""One study analysed end to end — what the report and the terminal summary show, in their order: the answer (what
the run found) and a glossary of its symbols, then the regime, the taxonomy's headline, the claims, the survival of reFT, the instruments against their nulls, compiled components and
protocols, and the nulls and parameters behind every verdict."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import terminal
from analysis.answer import Answer, answer
from analysis.claims import ALPHA, ClaimResult, evaluate_claims
from analysis.components import component_display, component_table, located_display
from analysis.emergence import Headline, headline
from analysis.errors import AnalysisError
from analysis.instruments import instrument_tables, missing_note
from analysis.load import Study, load_study
from analysis.protocols import closing_note, protocol_display, protocol_table
from analysis.regime import Regime, regime
from analysis.revival import Revival, display as revival_display, revival
from analysis.glossary import used
from analysis.settings import column_name, describe_setting, readable, scale_columns, setting_columns, swept_axes
from analysis.stats import CONFIDENCE, LogisticFit
from analysis.survival import CoxFit
from analysis.taxonomy import CLASSES, Parameters, Taxonomy, taxonomy
from analysis.validation import Validation, validate
from analysis.terminal import wrapped

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

    @property
    def answer(self) -> Answer:
        """What the run found, for the top of the summary and the page."""
        return answer(self.headline.overall, self.headline.shares, self.claims, self.regime, self.alpha,
                      self.confidence)

    def keys(self) -> list[str]:
        """The readable names of the setting columns: they identify a row of the tables."""
        return [column_name(c) for c in setting_columns(self.by)] + ["arm", "level", "seed", "parameter", "class",
                                                                     "claim"]

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table of the summary, at full width, by name (`--csv DIR` writes them as DIR/NAME.csv)."""
        r, columns = self.regime, setting_columns(self.by)
        out = {"answer_shares": self.answer.shares, "answer_claims": self.answer.claims,
               "regime_priors": r.prior_display(), "regime_seeds": r.seeds,
               "regime_cells": r.cell_display(columns) if not r.cells.empty else r.cells,
               "regime_probe_levels": r.levels, "classes": self.class_display(), "claims": self.claims_display(),
               "survival": revival_display(self.revival.by_lr), "survival_by_prior": revival_display(
                   self.revival.by_prior), "logrank": revival_display(self.revival.logrank),
               **{f"instrument_{name}": table for name, table in self.instruments.items()},
               "components": self.component_display(), "components_located": self.located_display(),
               "protocols": protocol_display(self.protocols) if not self.protocols.empty else self.protocols,
               "parameters": self.parameters_display()}
        return {name: table for name, table in out.items() if not table.empty}

    def write_tables(self, directory) -> list[Path]:
        """Write `tables()` as CSV files into `directory`; returns their paths."""
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            written = []
            for name, table in self.tables().items():
                table.to_csv(directory / f"{name}.csv", index=False)
                written.append(directory / f"{name}.csv")
        except OSError as e:
            raise AnalysisError(f"cannot write the tables into {directory}: {e.strerror or e}") from None
        return written

    def summary_text(self) -> str:
        """Everything the terminal shows, within terminal.WIDTH columns: the answer, the glossary of what it says,
        then the regime and the evidence."""
        keys = self.keys()
        frame = lambda table: terminal.table(table, keys)  # noqa: E731
        body = [*_regime_lines(self.regime, self.by, frame)]
        body += ["", "== What fine-tuning did to C_PT (the taxonomy) ==", wrapped(self.headline.overall, "", "")]
        if not self.headline.table.empty:
            body += ["", *(wrapped(s, "", "    ") for s in self.headline.sentences), "", frame(self.class_display()),
                     "", wrapped("Each class against the rest (logistic regression over the judged members, standard "
                                 "errors clustered by seed):", "", "")]
            body += [wrapped(f"{c}: {fit_text(fit)}") for c, fit in self.headline.regressions.items()]
        body += ["", "== Claims of the reference study (exact one-sided Wilcoxon over seeds, Holm-adjusted) =="]
        for c in self.claims:
            body.append(wrapped(f"{c.id:>2}  {c.verdict}  — {c.claim}", "  ", "      "))
            if c.test:
                body.append(wrapped(f"effect {c.effect_text} (SESOI {c.sesoi_text}); {c.power_text}; p "
                                    f"{_p(c.test.p)}, p(Holm) {_p(c.p_holm)}; below the SESOI: p(Holm) "
                                    f"{_p(c.p_equivalence_holm)}", "      ", "      "))
        body += ["", *_revival_lines(self.revival, frame)]
        body += ["", "== Instruments against their nulls (mean over seeds [95% bootstrap CI]) =="]
        for name, table in self.instruments.items():
            body += [f"{INSTRUMENT_TITLES[name]}:", frame(table) if not table.empty else
                     wrapped(missing_note(self.evidence, name))]
        components = self.component_display()
        if not components.empty:
            body += ["", wrapped(f"Change of each compiled component against the compiled model (mean over seeds "
                                 f"[{self.confidence:.0%} bootstrap CI]):", "", ""), frame(components)]
        located = self.located_display()
        if not located.empty:
            body += ["", wrapped("Does pruning find the compiled components? Share of the first n units the C_PT "
                                 "ranking removes that lie in each component (n = its units; chance = n / all units "
                                 "of its kind):", "", ""), frame(located)]
        if not self.protocols.empty:
            body += ["", f"Fine-tuning protocols (mean over seeds [{self.confidence:.0%} bootstrap CI]):",
                     frame(protocol_display(self.protocols)), *(wrapped(s) for s in closing_note(self.protocols))]
        body += ["", "== Nulls and parameters ==", *(wrapped(line, "", "    ") for line in self.nulls_lines())]
        body += [wrapped(f"{r.parameter} = {r.value}: {r.rule}") for r in self.parameters_display().itertuples()]
        if self.validation is not None:
            body += ["", "== Instruments on planted truth =="]
            if self.validation.empty:
                body += self.validation.lines()
            else:
                body += [wrapped(f"Per instrument: false-positive rate on the matched nulls fine-tuned (each seed "
                                 f"against the other seeds' thresholds; nominal {self.validation.nominal:.0%}) and "
                                 "power on the planted wrappers whose C_PT was suppressed; exact 95% intervals:", "",
                                 "    "), frame(self.validation.display()),
                         "Classes of the planted members (the taxonomy, as for the real members):",
                         frame(self.validation.classes)]
        head = [f"{', '.join(map(str, self.study.paths))}:", wrapped(self.counts(), "  ", "  ")]
        head += [wrapped(f"note: {note}", "", "    ") for note in self.study.notes]
        head += ["", *_answer_lines(self.answer, frame)]
        text = "\n".join(head + body)
        glossary = ["", "== Glossary ==", *(wrapped(f"{term}: {meaning}", "  ", "      ")
                                           for term, meaning in used(text))]
        return "\n".join(head + glossary + [""] + body)


def _answer_lines(found: Answer, frame) -> list[str]:
    lines = ["== The answer: what this run found ==", wrapped(found.overall, "", "")]
    if not found.shares.empty:
        lines += ["Class shares among the judged members (interval over seeds, then members within them):",
                  frame(found.shares)]
    if not found.claims.empty:
        lines += ["Claims (one number per seed; exact one-sided Wilcoxon, Holm-adjusted; details below):"]
        verdict, effect = (max(map(len, found.claims[c])) for c in found.claims.columns[1:3])
        for r in found.claims.itertuples(index=False):
            lines.append(wrapped(f"{r[0]:>2}  {r[1]:<{verdict}}  {r[2]:<{effect}}  {r[3]}", "  ",
                                 " " * (verdict + effect + 10)))
    lines += ["Flags:", *(wrapped(f"! {flag}", "  ", "    ") for flag in found.flags)] if found.flags else \
        ["Flags: none (every seed in the regime, no cell flagged, every claim testable)."]
    return lines


def _share(k, share, lo, hi) -> str:
    if not np.isfinite(share):
        return "-"
    return f"{k} ({share:.0%} [{lo:.0%}, {hi:.0%}])" if np.isfinite(lo) else f"{k} ({share:.0%})"


def _p(value) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.3g}"


def _regime_lines(r: Regime, by, frame) -> list[str]:
    lines = ["== Regime (before any verdict) =="]
    if r.note:
        lines.append(wrapped(f"note: {r.note}", "", "    "))
    lines += ["Requirements:", *(wrapped(rule) for rule in r.requirements)]
    lines += [wrapped(check) for check in r.checks]
    if not r.priors.empty:
        lines += ["Pretrained models per prior (mean over seeds [95% CI]):", frame(r.prior_display())]
    if not r.seeds.empty:
        lines += ["Pretrained models per seed (test C_PT/C_FT at C_Te = 0; OUTSIDE: not judged, nor its "
                  "descendants):", frame(r.seeds)]
    if not r.cells.empty:
        columns = setting_columns(by)
        lines += ["Fine-tuning cells:", frame(r.cell_display(columns).drop(columns="flags"))]
        flagged = r.flagged
        lines += [wrapped(f"FLAG {describe_setting(row, columns)}: {row['flags']}", "", "    ")
                  for _, row in flagged.iterrows()] or ["No cell is flagged."]
    if not r.levels.empty:
        lines += ["Probe selectivity per level (the nulls: control, untrained):", frame(r.levels)]
    return lines


def _revival_lines(r: Revival, frame) -> list[str]:
    lines = ["== Survival of reFT: steps to revive the suppressed C_PT, reFT vs the matched control =="]
    if r.by_lr.empty:
        return lines + ["  no suppressed member with a reFT child"]
    lines += ["Per fine-tuning LR (Kaplan-Meier, censored at the budget):", frame(revival_display(r.by_lr))]
    if not r.logrank.empty:
        lines += ["Log-rank, reFT vs control x1:", frame(revival_display(r.logrank))]
    lines += [wrapped(f"Cox regression of reFT revival: {fit_text(r.cox)}", "", "    ")]
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
