"""One study analysed end to end: load, wrapper evidence, headline, claim tests — what the report and the
terminal summary show."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from analysis.claims import ALPHA, ClaimResult, evaluate_claims
from analysis.components import component_display, component_table
from analysis.emergence import COLUMN_NAMES, Headline, headline, setting_columns
from analysis.errors import AnalysisError
from analysis.load import Study, load_study
from analysis.protocols import closing_note, protocol_display, protocol_table
from analysis.stats import CONFIDENCE
from analysis.wrapper import CRITERIA, CRITERION_NAMES, Thresholds, missing_evidence, wrapper_evidence


@dataclasses.dataclass
class Analysis:
    study: Study
    thresholds: Thresholds
    by: tuple[str, ...]
    evidence: pd.DataFrame  # one row per fine-tuned member (wrapper.wrapper_evidence)
    headline: Headline
    claims: list[ClaimResult]
    alpha: float = ALPHA
    confidence: float = CONFIDENCE
    protocols: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # analysis.protocols.protocol_table

    @property
    def missing_evidence(self) -> list[str]:
        return missing_evidence(self.study)

    def counts(self) -> str:
        members = self.study.members
        kinds = members.kind.value_counts()
        parts = [f"{kinds.get(kind, 0)} {name}" for kind, name in
                 (("pretrained", "pretrained"), ("finetuned", "fine-tuned"), ("reft", "reverse-fine-tuned"))]
        seeds = members[members.kind == "pretrained"].seed.nunique()
        diverged = int((members.status == "diverged").sum())
        return ", ".join(parts) + f" members over {seeds} seed(s)" + (f"; {diverged} diverged" if diverged else "")

    def setting_display(self) -> pd.DataFrame:
        """The headline table with readable columns and formatted numbers (shared by the page and the terminal)."""
        table = self.headline.table
        columns = setting_columns(self.by)
        out = pd.DataFrame({COLUMN_NAMES.get(c, c): table[c].map(_plain) for c in columns})
        out["verdict"] = table.verdict
        out["wrapper rate [95% CI]"] = [
            "n/a" if not r.n else f"{r.rate:.0%} [{r.rate_lo:.0%}, {r.rate_hi:.0%}] ({r.k}/{r.n})"
            for r in table.itertuples()]
        out["C_PT pre -> post"] = [f"{a:.2f} -> {b:.2f}" if np.isfinite(a) and np.isfinite(b) else "n/a"
                                   for a, b in zip(table.pt_acc_pretrained, table.pt_acc_finetuned)]
        out["C_FT post"] = table.ft_acc_finetuned.map(lambda v: f"{v:.2f}" if np.isfinite(v) else "n/a")
        for criterion in CRITERIA:
            out[f"% {CRITERION_NAMES[criterion]}"] = table[f"{criterion}_rate"].map(
                lambda v: f"{v:.0%}" if np.isfinite(v) else "n/a")
        out["reFT speed-up, C_PT lost [95% CI]"] = [
            "n/a" if not np.isfinite(m) else f"x{m:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else "")
            for m, lo, hi in zip(table.reft_speedup, table.reft_speedup_lo, table.reft_speedup_hi)]
        if (table.left_out != "").any():
            out["left out"] = table.left_out
        return out

    def component_display(self) -> pd.DataFrame:
        """The change of each compiled component per setting (empty unless the study has a compiled model)."""
        return component_display(component_table(self.study, self.confidence))

    def summary_text(self) -> str:
        """The headline for a terminal."""
        lines = [f"{', '.join(map(str, self.study.paths))}: {self.counts()}"]
        lines += [f"note: {note}" for note in self.study.notes]
        lines += ["", self.headline.overall]
        if not self.headline.table.empty:
            lines += ["", *self.headline.sentences]
            with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 40):
                lines += ["", self.setting_display().to_string(index=False)]
        components = self.component_display()
        if not components.empty:
            lines += ["", f"Change of each compiled component against the compiled model (mean over seeds "
                          f"[{self.confidence:.0%} bootstrap CI]):"]
            with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 40):
                lines += [components.to_string(index=False)]
        if not self.protocols.empty:
            lines += ["", f"Fine-tuning protocols (mean over seeds [{self.confidence:.0%} bootstrap CI]):"]
            with pd.option_context("display.width", 400, "display.max_columns", 40, "display.max_colwidth", 40):
                lines += [protocol_display(self.protocols).to_string(index=False)]
            lines += closing_note(self.protocols)
        lines += ["", "Claims of the reference study (one-sided Wilcoxon over seeds, Holm-adjusted):"]
        lines += [f"  {c.id:>2}  {c.verdict}" + (f"  effect {c.effect_text}, p(Holm) {c.p_holm:.3g}" if c.test else "")
                  + f"  — {c.claim}" for c in self.claims]
        return "\n".join(lines)


def _plain(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def analyse(paths, thresholds: Thresholds = Thresholds(), by=(), alpha: float = ALPHA,
            confidence: float = CONFIDENCE) -> Analysis:
    """Load the stores at `paths` as one study and compute everything the report shows."""
    study = load_study(paths)
    unknown = [c for c in by if c not in study.members.columns]
    if unknown:
        hyper = [c for c in study.members.columns if c not in ("member", "kind", "parent", "pretrained", "status",
                                                               "store")]
        raise AnalysisError(f"cannot group by {', '.join(unknown)}: not a column of the results "
                            f"(available: {', '.join(hyper)})")
    evidence = wrapper_evidence(study, thresholds)
    return Analysis(study, thresholds, tuple(by), evidence, headline(evidence, by, confidence),
                    evaluate_claims(evidence, thresholds, alpha, confidence), alpha, confidence,
                    protocol_table(study, confidence))
