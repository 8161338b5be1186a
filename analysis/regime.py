"""The regime a study reached, before any verdict: do the pretrained models have the capability, did fine-tuning
learn its task, what function does each model compute, and do the probes read more than the input?

Read from the run's "regime" phase (fresh held-out test sets: fttrace/answer/evals/regime.py), its "probe" phase and the
stop steps of fine-tuning. Shown first, because a verdict about a capability means nothing where the parents never
had it, and a verdict about fine-tuning nothing where fine-tuning did not learn.
  members        every pretrained member is judged on its own (`member_regime`): test C_PT at least
                 `pretrained_pt`; with more than one prior, C_FT at least `high_prior_ft` at the highest prior and at
                 most the operand-blind level + `low_prior_margin` at the lowest (the priors between: no C_FT
                 requirement). The taxonomy leaves the fine-tuned descendants of a parent outside the regime
                 unjudged, so no class share, regression or claim counts them
  study checks   per seed, never on a mean that could hide a failing seed: the prior sets how much of C_FT
                 pretraining gives in every seed, and how many seeds have a pretrained model outside the regime;
                 evaluation strings are held out of training
  seeds          per seed, each prior's pretrained C_PT / C_FT and why the seed is outside the regime
  priors         per prior, the pretrained models: C_PT, C_FT (C_Te = 0), the operand-blind level (the C_FT of a
                 model answering with the pretraining target) and the output function on O_FT queries (shares of
                 answers equal to the fine-tuning answer, the pretraining answer, the majority answer, anything else,
                 on the inputs where the first two differ)
  cells          per fine-tuning cell (LR x prior x C_Tr, plus `--by` columns): C_FT after fine-tuning at C_Te 0 and
                 1, C_PT after, the share of members that learnt their task (met the criterion) and their median stop
                 step, the output function and probe selectivity, how many lineages have a parent outside the
                 regime, with FLAGS where a requirement fails
  probe nulls    probe selectivity per level of the run tree: the control (never had C_PT), the control after C_PT
                 training and the untrained models beside the members
`Requirements` holds the numbers, printed with the tables. A store without a regime phase is shown from the
training phases' last evaluations, with a note.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from analysis.load import Study
from analysis.measures import FUNCTIONS, accuracies, has_regime, regime_values, selectivity
from analysis.settings import in_setting_order, pretrain_axes, readable, setting_columns
from analysis.stats import CONFIDENCE, bootstrap_mean, seed_series

FUNCTION_NAMES = {"ft": "fine-tuning answer", "pt": "pretraining answer", "majority": "majority answer",
                  "other": "other"}
LEVELS = (("pretrained", "pretrained", ""), ("finetuned", "fine-tuned", ""), ("reft", "reverse-fine-tuned", ""),
          ("control_pretrained", "control (never had C_PT)", ""),
          ("control_reft", "control after C_PT training", ""), ("pretrained", "untrained", "init_"))
NO_REGIME = ("the regime cannot be shown: the store was written by an fttrace without regime diagnostics (no "
             "\"regime\" phase); C_PT and C_FT below are the training phases' last evaluations, not fresh test sets")
NOT_YET = ("the regime cannot be shown yet: the run has not reached its \"regime\" phase; C_PT and C_FT below are "
           "the training phases' last evaluations, not fresh test sets")
LACK_PT = "the pretrained models lack C_PT"
NO_OP = "fine-tuning did not learn C_FT here: its verdicts describe a no-op"
OUTSIDE = "parent outside the regime"  # the taxonomy's reason for the descendants of such a parent
SHOWN_SEEDS = 6  # seeds named in a check sentence


@dataclasses.dataclass(frozen=True)
class Requirements:
    """What a cell and the study must reach before their verdicts mean anything (printed with the tables)."""
    pretrained_pt: float = 0.9  # pretrained test C_PT of every parent (and the mean of a cell's parents)
    learnt_share: float = 0.9  # share of the cell's fine-tuned members that learnt their task
    high_prior_ft: float = 0.8  # pretrained C_FT of every parent at the highest prior (the strongly relevant setting)
    low_prior_margin: float = 0.1  # pretrained C_FT at the lowest prior: at most the operand-blind level + this

    def describe(self, target: float, noop_accuracy: float) -> list[str]:
        learnt = (f"met the run's fine-tuning criterion (held-out accuracy on their own fine-tuning distribution >= "
                  f"{target:g}: stop_step >= 0)" if target else
                  f"reached own-distribution test accuracy >= {noop_accuracy:g} (the run has no fine-tuning "
                  "criterion)")
        return [f"member: every pretrained model has test C_PT >= {self.pretrained_pt:g}, and C_FT >= "
                f"{self.high_prior_ft:g} at the highest prior, within {self.low_prior_margin:g} of the operand-blind "
                f"level at the lowest (else its fine-tuned descendants are not judged: {OUTSIDE})",
                f"cell: pretrained test C_PT >= {self.pretrained_pt:g} in the cell's parents (else flagged: "
                f"{LACK_PT})",
                f"cell: >= {self.learnt_share:.0%} of the cell's fine-tuned members {learnt} (else flagged: {NO_OP})",
                "study: every seed in the regime, and the prior contrast in every seed"]

    def judge(self, pt_acc: float, ft_acc: float, blind_acc: float, highest: bool, lowest: bool) -> list[str]:
        """Why one pretrained model is outside the regime (empty: inside); `highest`/`lowest`: its prior is the
        study's highest / lowest of several."""
        out = []
        if pt_acc < self.pretrained_pt:
            out.append(f"C_PT {pt_acc:.2f} < {self.pretrained_pt:g}")
        if highest and ft_acc < self.high_prior_ft:
            out.append(f"C_FT {ft_acc:.2f} < {self.high_prior_ft:g}")
        if lowest and ft_acc > blind_acc + self.low_prior_margin:
            out.append(f"C_FT {ft_acc:.2f} > {blind_acc + self.low_prior_margin:.2f}")
        return out


REQUIREMENTS = Requirements()


def interval(values, confidence: float = CONFIDENCE) -> str:
    """'mean [lo, hi]' of per-seed values (the mean alone with one seed; n/a without any)."""
    mean, lo, hi = bootstrap_mean(values, confidence)
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.2f}" if not np.isfinite(lo) else f"{mean:.2f} [{lo:.2f}, {hi:.2f}]"


def _shares(frame: pd.DataFrame, prefix: str) -> str:
    """'fine-tuning answer 90%, pretraining answer 5%, ...' from the share columns `prefix<f>_share`."""
    parts = [f"{FUNCTION_NAMES[f]} {frame[f'{prefix}{f}_share'].mean():.0%}" for f in FUNCTIONS
             if f"{prefix}{f}_share" in frame and frame[f"{prefix}{f}_share"].notna().any()]
    return ", ".join(parts) or "n/a"


def _pretrained(study: Study) -> pd.DataFrame:
    members = study.members[study.members.kind == "pretrained"].set_index("member")
    values = regime_values(study)
    shares = values[[c for c in values if c.startswith("ft_query.") or c == "test.blind_acc"]]
    shares = shares.rename(columns=lambda c: c.replace(".", "_"))
    acc = accuracies(study)[["pt_acc", "ft_acc"]]
    return members.join(acc, how="left").join(shares, how="left").join(selectivity(study), how="left")


def lineage_keys(members: pd.DataFrame) -> list[str]:
    """Besides seed and prior, the columns that tell pretrained models apart where they vary (group, pretraining
    LR, a swept pretraining optimiser setting)."""
    pre = members[members.kind == "pretrained"]
    return [c for c in ("group", "pretrain_lr", *pretrain_axes(members)) if c in pre and pre[c].nunique() > 1]


def member_regime(study: Study, requirements: Requirements = REQUIREMENTS) -> pd.DataFrame:
    """One row per pretrained member (index: its id): its lineage keys, seed, prior, prior_label, pt_acc, ft_acc,
    blind_acc (the operand-blind level), in_regime (1/0; NaN where its C_PT is unknown) and `outside` (why not;
    '' inside). The requirements are `Requirements.judge`'s; a diverged pretrained model is outside."""
    pre = _pretrained(study)
    keys = lineage_keys(study.members)
    columns = [*keys, "seed", "prior", "prior_label", "pt_acc", "ft_acc", "blind_acc", "in_regime", "outside"]
    if pre.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="member"))
    blind = pre["test_blind_acc"] if "test_blind_acc" in pre else pd.Series(np.nan, index=pre.index)
    blind = blind.fillna(blind.groupby(pre.prior_label).transform("mean"))
    priors = pre.prior.dropna().unique()
    several = len(priors) > 1
    in_regime, outside = [], []
    for row in pre.assign(blind_acc=blind).itertuples():
        if row.status != "diverged" and np.isnan(row.pt_acc):
            in_regime.append(np.nan)
            outside.append("")
            continue
        reasons = ["diverged"] if row.status == "diverged" else requirements.judge(
            row.pt_acc, row.ft_acc, row.blind_acc, several and row.prior == priors.max(),
            several and row.prior == priors.min())
        in_regime.append(0.0 if reasons else 1.0)
        outside.append(", ".join(reasons))
    out = pre.assign(blind_acc=blind, in_regime=in_regime, outside=outside)
    return out[columns].rename_axis("member")


def _prior_order(parents: pd.DataFrame) -> list[str]:
    """The prior labels, highest prior first."""
    return list(parents.groupby("prior_label").prior.first().sort_values(ascending=False).index)


def _why(seed_rows: pd.DataFrame) -> str:
    """'prior high: C_FT 0.26 < 0.8' for each pretrained model of one seed outside the regime."""
    bad = seed_rows[seed_rows.in_regime == 0]
    return "; ".join(f"prior {r.prior_label}: {r.outside}" for r in bad.itertuples())


def seed_table(parents: pd.DataFrame) -> pd.DataFrame:
    """One row per seed (and lineage key): each prior's pretrained test 'C_PT/C_FT' and `regime`: 'in', 'OUTSIDE
    (prior high: C_FT 0.26 < 0.8)' or 'n/a' where no C_PT is known."""
    keys = [c for c in parents.columns if c not in ("seed", "prior", "prior_label", "pt_acc", "ft_acc", "blind_acc",
                                                   "in_regime", "outside")]
    if parents.empty:
        return pd.DataFrame(columns=[*keys, "seed", "regime"])
    rows = []
    for key, group in parents.groupby([*keys, "seed"], sort=True):
        row = dict(zip([*keys, "seed"], key if isinstance(key, tuple) else (key,)))
        for label in _prior_order(parents):
            mine = group[group.prior_label == label]
            row[f"prior {label} C_PT/C_FT"] = "-" if mine.empty else "/".join(
                "n/a" if np.isnan(v) else f"{v:.2f}" for v in (mine.pt_acc.mean(), mine.ft_acc.mean()))
        known = group.in_regime.dropna()
        row["regime"] = "n/a" if known.empty else "in" if (known == 1).all() else f"OUTSIDE ({_why(group)})"
        rows.append(row)
    return pd.DataFrame(rows)


def prior_table(study: Study, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per prior: the pretrained models' C_PT, C_FT, the operand-blind level and their output function;
    numeric columns pt_acc, ft_acc, blind_acc (means over members) for the checks."""
    pre = _pretrained(study)
    rows = []
    for label, cell in pre.groupby("prior_label", sort=False):
        blind = cell["test_blind_acc"].mean() if "test_blind_acc" in cell else np.nan
        rows.append({"prior": label, "prior_value": cell.prior.iloc[0], "members": len(cell),
                     "C_PT": interval(seed_series(cell, "pt_acc"), confidence),
                     "C_FT (C_Te=0)": interval(seed_series(cell, "ft_acc"), confidence),
                     "operand-blind C_FT": "n/a" if np.isnan(blind) else f"{blind:.2f}",
                     "O_FT queries answered with": _shares(cell, "ft_query_"),
                     "probe selectivity": interval(seed_series(cell, "selectivity"), confidence),
                     "pt_acc": cell.pt_acc.mean(), "ft_acc": cell.ft_acc.mean(), "blind_acc": blind})
    if not rows:
        return pd.DataFrame(columns=["prior", "prior_value", "members", "pt_acc", "ft_acc", "blind_acc"])
    return pd.DataFrame(rows).sort_values("prior_value", ascending=False).reset_index(drop=True)


def cell_table(evidence: pd.DataFrame, by=(), confidence: float = CONFIDENCE, target: float = 0.0,
               requirements: Requirements = REQUIREMENTS) -> pd.DataFrame:
    """One row per fine-tuning cell with the regime numbers and `flags` (failed requirements, '' if none), from
    the taxonomy's evidence (its `learnt` indicator); diverged lineages are left out of the numbers."""
    columns = setting_columns(by)
    if evidence.empty:
        return pd.DataFrame(columns=[*columns, "members", "flags"])
    healthy = evidence[~evidence.diverged]
    rows = []
    for key, cell in evidence.groupby(columns, sort=False, dropna=False):
        row = dict(zip(columns, key if isinstance(key, tuple) else (key,)))
        mine = healthy.loc[healthy.index.intersection(cell.index)]
        learnt = mine.learnt.mean() if mine.learnt.notna().any() else np.nan
        stopped = mine.stop_step[mine.stop_step >= 0]
        row.update({
            "members": len(mine),
            "pretrained C_PT": interval(seed_series(mine, "pt_acc_pretrained"), confidence),
            "C_FT C_Te=0": interval(seed_series(mine, "ft_acc"), confidence),
            "C_FT C_Te=1": interval(seed_series(mine, "ft_shortcut_acc"), confidence),
            "C_PT after": interval(seed_series(mine, "pt_acc"), confidence),
            "learnt its task": "n/a" if np.isnan(learnt) else f"{learnt:.0%}",
            "median stop step": f"{stopped.median():g}" if target and len(stopped) else "n/a",
            "O_FT queries answered with": _shares(mine, "ft_query_"),
            "probe selectivity": interval(seed_series(mine, "sel_finetuned"), confidence),
            "parent outside regime": int((mine.parent_in_regime == 0).sum()) if "parent_in_regime" in mine else 0,
        })
        if len(mine) < len(cell):
            row["members"] = f"{len(mine)} ({len(cell) - len(mine)} diverged left out)"
        flags = []
        parent = mine.pt_acc_pretrained.mean()
        if parent < requirements.pretrained_pt:
            flags.append(f"{LACK_PT} (test C_PT {parent:.2f}; needs >= {requirements.pretrained_pt:g})")
        if learnt < requirements.learnt_share:
            flags.append(f"{NO_OP} ({learnt:.0%} of members learnt their task; needs >= "
                         f"{requirements.learnt_share:.0%})")
        row["flags"] = "; ".join(flags)
        rows.append(row)
    return in_setting_order(pd.DataFrame(rows), evidence, columns)


def _seeds_named(parts: list[str]) -> str:
    return "; ".join(parts[:SHOWN_SEEDS]) + (f"; and {len(parts) - SHOWN_SEEDS} more" if len(parts) > SHOWN_SEEDS
                                             else "")


def _prior_contrast(parents: pd.DataFrame, priors: pd.DataFrame, requirements: Requirements) -> str:
    """The prior contrast, checked in every seed: the mean and the worst seed at the highest and lowest prior."""
    high, low = priors.iloc[0], priors.iloc[-1]
    if np.isnan(low.blind_acc):
        return (f"note: the prior contrast cannot be checked without the operand-blind level (pretrained C_FT "
                f"{high.ft_acc:.2f} at prior {high.prior}, {low.ft_acc:.2f} at prior {low.prior})")
    at_high = parents[parents.prior_label == high.prior].groupby("seed").ft_acc.mean().dropna()
    at_low = parents[parents.prior_label == low.prior]
    excess = (at_low.ft_acc - at_low.blind_acc).groupby(at_low.seed).max().dropna()
    ceiling = low.blind_acc + requirements.low_prior_margin
    failing = set(at_high.index[at_high < requirements.high_prior_ft]) | set(
        excess.index[excess > requirements.low_prior_margin])
    seeds = set(at_high.index) | set(excess.index)
    where = "in every seed" if not failing else (f"in {len(seeds) - len(failing)} of {len(seeds)} seeds only (not in "
                                                 f"seed{'s' if len(failing) > 1 else ''} "
                                                 f"{', '.join(map(str, sorted(failing)))})")
    worst_high = f"lowest {at_high.min():.2f}, seed {at_high.idxmin()}; " if len(at_high) > 1 else ""
    worst_low = (f"highest {at_low.ft_acc.max():.2f}, seed {at_low.seed[at_low.ft_acc.idxmax()]}; "
                 if at_low.seed.nunique() > 1 else "")
    return (f"{'FAILS' if failing else 'holds'}: the prior sets how much of C_FT pretraining gives {where}: "
            f"pretrained C_FT at prior {high.prior} {high.ft_acc:.2f} ({worst_high}needs >= "
            f"{requirements.high_prior_ft:g}) and at prior {low.prior} {low.ft_acc:.2f} ({worst_low}operand-blind "
            f"level {low.blind_acc:.2f}, needs <= {ceiling:.2f})")


def _seeds_outside(study: Study, parents: pd.DataFrame) -> str:
    """'k of n seeds outside the regime' with why, and how many fine-tuned members that leaves unjudged."""
    known = parents.dropna(subset=["in_regime"])
    if known.empty:
        return ""
    bad = known[known.in_regime == 0]
    seeds = known.seed.nunique()
    if bad.empty:
        return f"holds: every pretrained model of every seed is in the regime (0 of {seeds} seeds outside)"
    members = study.members
    descendants = int(((members.kind == "finetuned") & members.pretrained.isin(bad.index)).sum())
    named = [f"seed {seed} ({_why(rows)})" for seed, rows in bad.groupby("seed", sort=True)]
    return (f"FAILS: {bad.seed.nunique()} of {seeds} seeds outside the regime: {_seeds_named(named)}; their "
            f"{descendants} fine-tuned descendants are not judged ({OUTSIDE})")


def study_checks(study: Study, priors: pd.DataFrame, parents: pd.DataFrame,
                 requirements: Requirements = REQUIREMENTS) -> list[str]:
    """Study-wide regime checks, one sentence each, starting 'holds:', 'FAILS:' or 'note:'; each requirement on
    the pretrained models is checked in every seed (`parents`: `member_regime`), not on a mean."""
    out = []
    known = priors.dropna(subset=["ft_acc"]) if not priors.empty else priors
    if len(known) > 1:
        out.append(_prior_contrast(parents, known, requirements))
    elif len(known) == 1:
        out.append(f"note: one prior in the study ({known.prior.iloc[0]}): the prior contrast cannot be checked")
    if outside := _seeds_outside(study, parents):
        out.append(outside)
    values = regime_values(study)
    if "heldout.fraction" in values and values["heldout.fraction"].notna().any():
        fraction = values["heldout.fraction"].dropna().iloc[0]
        evaluated = values["heldout.eval_share"].dropna().mean() if "heldout.eval_share" in values else np.nan
        training = values["heldout.train_share"].dropna().mean() if "heldout.train_share" in values else np.nan
        if fraction > 0 and np.isfinite(evaluated) and np.isfinite(training):
            ok = evaluated == 1 and training == 0
            out.append(f"{'holds' if ok else 'FAILS'}: evaluation strings are held out of training ({fraction:.0%} "
                       f"of the grammar's strings; {evaluated:.1%} of evaluated inputs are held-out strings, "
                       f"{training:.2%} of a training sample)")
        else:
            out.append("note: evaluation inputs are not held out of training (the task holds none out)")
    if "test.eval_overlap" in values and values["test.eval_overlap"].notna().any():
        overlap = values["test.eval_overlap"].dropna().mean()
        distinct = values["test.distinct_share"].dropna().mean()
        out.append(f"{'holds' if overlap == 0 else 'FAILS'}: test sets are fresh ({overlap:.1%} of test strings are in "
                   f"the sets that stopping read; {distinct:.1%} of each test set's strings are distinct)")
    return out


def level_selectivity(study: Study, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Probe accuracy (pretraining and control targets) and selectivity per level of the run tree, the nulls
    (control, untrained) beside the members: mean over seeds [bootstrap interval]."""
    members = study.members.set_index("member")[["kind", "seed"]]
    rows = []
    for kind, name, prefix in LEVELS:
        table = selectivity(study, prefix).join(members, how="inner")
        cell = table[table.kind == kind]
        if cell.empty:
            continue
        rows.append({"level": name, "members": len(cell),
                     "probe C_PT target": interval(seed_series(cell, "probe_pt"), confidence),
                     "probe control target": interval(seed_series(cell, "probe_control"), confidence),
                     "selectivity": interval(seed_series(cell, "selectivity"), confidence)})
    return pd.DataFrame(rows, columns=["level", "members", "probe C_PT target", "probe control target",
                                       "selectivity"])


@dataclasses.dataclass
class Regime:
    available: bool  # the store has a regime phase
    note: str  # why the regime cannot be shown ('' when it can)
    requirements: list[str]  # the requirement rules, printed with the tables
    checks: list[str]
    priors: pd.DataFrame
    cells: pd.DataFrame
    levels: pd.DataFrame
    parents: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # member_regime
    seeds: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # seed_table

    @property
    def flagged(self) -> pd.DataFrame:
        return self.cells[self.cells["flags"] != ""] if "flags" in self.cells else self.cells.iloc[:0]

    def cell_display(self, columns) -> pd.DataFrame:
        """The cell table with readable setting columns."""
        return pd.concat([readable(self.cells, columns), self.cells.drop(columns=list(columns))], axis=1)

    def prior_display(self) -> pd.DataFrame:
        return self.priors.drop(columns=["prior_value", "pt_acc", "ft_acc", "blind_acc"], errors="ignore")


def regime(study: Study, evidence: pd.DataFrame, by=(), confidence: float = CONFIDENCE, target: float = 0.0,
           noop_accuracy: float = 0.9, requirements: Requirements = REQUIREMENTS) -> Regime:
    available = has_regime(study)
    finished = all(store.status == "complete" for store in study.stores)
    note = "" if available else NO_REGIME if finished else NOT_YET
    priors = prior_table(study, confidence)
    parents = member_regime(study, requirements)
    return Regime(available, note, requirements.describe(target, noop_accuracy),
                  study_checks(study, priors, parents, requirements), priors,
                  cell_table(evidence, by, confidence, target, requirements), level_selectivity(study, confidence),
                  parents, seed_table(parents))
