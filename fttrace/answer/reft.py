"""Reverse fine-tuning (reFT): how fast does the pretraining capability come back? (`evals` name "reft": phases the
study trains after fine-tuning, before every measurement.)

Every fine-tuned member `ftN` gets a child `rftN` trained on the pretraining task (queries about O_PT only, no
shortcut). Its LR (`reft_lr`) is, with `reft.lr_mode = "shared"`, `reft.lr_scale` x its pretraining LR whatever
the fine-tuning LR was, so that every fine-tuning-LR cell is revived at the same LR; with "tied", `reft.lr_factor`
x its fine-tuning LR (the study revives with an LR smaller than the fine-tuning one). Its C_PT curve is logged
at `fttrace.engine.train.eval_steps(reft)` (phase "reft"): with `reft.eval_schedule = "log"` (the default) at steps
1, 2, 3, 5, 7, 10, ... below `reft.eval_every` and every `reft.eval_every` steps after, so that a member that
revives within a few steps is timed to the step rather than floored at the first evaluation.

The control has no latent copy of the capability: for each (seed, pretraining LR) a member `cptN` is pretrained
with the budget and LR of that seed's lowest-prior member `ptN` (the prior whose members fine-tuning must teach
C_FT; column `prior`: that prior, `prior_name` "control") on ptN's own query mix with every query about O_PT
asked about the control terminal instead (queries.matched_null: it learns all ptN learns except C_PT; phase
"control_pretrain"). The phases of "planted" fine-tune it like ptN's children (answer/planted.py). It is then
trained on the pretraining task like the reFT members, at each distinct reFT LR of its seed x
`reft.control_lr_factors` (phase "control_reft", members `cptN-<reFT LR>-x<factor>`, column `reft_lr_base`: the
reFT LR it is matched to). For a task that brings its pretrained model (a Tracr-compiled program) the control is
the same: that architecture randomly initialised and trained on the fine-tuning target only (the `pretrain`
section's budget, which the compiled-task configs set to the fine-tuning budget), so it never had the compiled
capability.

Summary rows (step 0 of their phase): `steps_to_threshold`, the first logged step whose C_PT accuracy reaches
`reft.threshold` x the pretrained C_PT accuracy of the lineage (NaN if never: censored at the budget), and
`reached` (0/1). With `reft.stop_at_threshold` (the default) a member stops training there (its curve stays at the
value it reached), so a long budget costs only the members that have not revived yet.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fttrace.config import require
from fttrace.engine.curves import first_step_reaching
from fttrace.answer.evals.common import pretrained_pt_acc
from fttrace.engine.results import long_frame
from fttrace.answer.tasks import queries
from fttrace.answer.sweep import optimizer_values
from fttrace.engine.train import data_spec, fan_out, init_members, member_keys

REFT, CONTROL_PRETRAIN, CONTROL_REFT = "reft", "control_pretrain", "control_reft"


def reft_lrs(members: pd.DataFrame, cfg) -> np.ndarray:
    """Each fine-tuned member's reFT LR (module docstring)."""
    if cfg.lr_mode == "tied":
        return members.finetune_lr.to_numpy() * cfg.lr_factor
    return members.pretrain_lr.to_numpy() * cfg.lr_scale


def reft_members(group, cfg) -> pd.DataFrame:
    ft = group.finetune
    rf = ft.assign(member="r" + ft.member, parent=ft.member, pretrain_index=ft.parent_index,
                   parent_index=np.arange(len(ft)), reft_lr=reft_lrs(ft, cfg))
    return rf.reset_index(drop=True)


def matched_columns(pretrain: pd.DataFrame) -> list[str]:
    """The columns one control stands for: seed, pretraining LR and swept pretraining optimiser settings."""
    return ["seed", "pretrain_lr", *(f"pretrain_{name}" for name in optimizer_values(pretrain, "pretrain"))]


def control_members(group, reft: pd.DataFrame, factors) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Control pretraining members (one per seed x pretraining LR x swept pretraining optimiser setting, matched to
    its lowest-prior pretraining member) and their C_PT training members."""
    pt = group.pretrain.reset_index(drop=True)
    matched = matched_columns(pt)
    lowest = pt.loc[pt.groupby(matched, sort=False).prior.idxmin()]
    cp = lowest.assign(member="c" + lowest.member, prior_name="control",
                       pretrain_index=lowest.index.to_numpy()).reset_index(drop=True)
    rows = []
    for i, parent in cp.iterrows():
        mine = reft[(reft[matched] == parent[matched]).all(axis=1)]
        for base in sorted(mine.reft_lr.unique()):
            for factor in factors:
                rows.append(dict(parent.to_dict(), member=f"{parent.member}-{base:g}-x{factor:g}", parent=parent.member,
                                 parent_index=i, reft_lr_base=float(base), reft_lr=float(base * factor),
                                 control_lr_factor=float(factor)))
    return cp, pd.DataFrame(rows)


def steps_to_threshold(curve: pd.DataFrame, reference: dict, threshold: float) -> pd.Series:
    """Per member: first logged step with pt_acc >= threshold x reference[member] (NaN if none)."""
    table = curve[curve.metric == "pt_acc"].pivot_table(index="step", columns="member", values="value",
                                                         dropna=False).sort_index()
    target = threshold * np.asarray([reference[m] for m in table.columns], np.float64)
    return pd.Series(first_step_reaching(table.index, table.to_numpy(), target), index=table.columns)


def summary_frame(members, phase, curve, reference, threshold):
    steps = steps_to_threshold(curve, dict(zip(members.member, reference)), threshold).reindex(members.member)
    records = [(0, {"steps_to_threshold": steps.to_numpy(), "reached": steps.notna().to_numpy(float)})]
    status = curve.groupby("member").status.first().reindex(members.member).to_numpy()
    return long_frame(members, phase, records, status)


def train_on_pretraining_task(run, phase, members, state, reference):
    """Train on O_PT queries; with `reft.stop_at_threshold` a member stops once revived (C_PT >= threshold x its
    `reference`), so that the others train on alone (PhaseLoop's compaction)."""
    cfg = run.config.reft
    criterion = None
    if cfg.stop_at_threshold:
        criterion = {"pt": 1.0 / np.maximum(np.asarray(reference, np.float64), 1e-6)}
        cfg = cfg.copy_and_resolve_references()
        cfg.target = cfg.threshold
    data = data_spec(queries.reft(run.task, len(members)), np.zeros(len(members)), criterion=criterion)
    return run.train_phase(phase, members, state, data, phase_cfg=cfg)


def run_reft(run) -> None:
    """reFT of every fine-tuned member, then the control; a resumed run restores finished phases."""
    cfg = run.config.reft
    group = run.group
    rf = run.tables[REFT]
    pt_acc = pretrained_pt_acc(run)
    state = fan_out(run.states["finetune"], rf.parent_index.to_numpy(), cfg, rf.reft_lr.to_numpy(),
                    member_keys(run.config.seed, rf.seed.to_numpy(), REFT))
    train_on_pretraining_task(run, REFT, rf, state, pt_acc[rf.pretrain_index])
    write_summary(run, REFT, rf, pt_acc[rf.pretrain_index])
    if not cfg.control:
        return
    cp, cr = run.tables[CONTROL_PRETRAIN], run.tables[CONTROL_REFT]
    pretraining = group.phase(run.config, "pretrain")
    state = init_members(group.model, pretraining, run.config.seed, cp.seed.to_numpy(), cp.pretrain_lr.to_numpy(),
                         optimizer_values(cp, "pretrain"))
    data = data_spec(queries.control(run.task, cp.prior.to_numpy()), np.zeros(len(cp)))
    state = run.train_phase(CONTROL_PRETRAIN, cp, state, data, phase_cfg=pretraining)
    state = fan_out(state, cr.parent_index.to_numpy(), cfg, cr.reft_lr.to_numpy(),
                    member_keys(run.config.seed, cr.seed.to_numpy(), REFT))
    # The control's reference: the mean pretrained C_PT of the real members of the same seed and LR.
    ref = group.pretrain.assign(pt_acc=pt_acc).groupby(["seed", "pretrain_lr"]).pt_acc.mean()
    reference = [ref[(s, lr)] for s, lr in zip(cr.seed, cr.pretrain_lr)]
    train_on_pretraining_task(run, CONTROL_REFT, cr, state, reference)
    write_summary(run, CONTROL_REFT, cr, reference)


def write_summary(run, phase, members, reference) -> None:
    """Steps to the revival threshold of this process's members (those whose curves its part holds)."""
    part = run.part_name(phase)
    if not run.done(f"{part}-summary"):
        curve = run.store.read_part(part)
        rows = run.placement.local_rows(len(members))
        run.store.write_part(f"{part}-summary", summary_frame(members.iloc[rows], phase, curve,
                                                              np.asarray(reference)[rows], run.config.reft.threshold))


def check_config(config) -> None:
    """The `reft` section (its optimiser and budget are checked with the other training phases')."""
    require(config.reft.lr_mode in ("shared", "tied"), "reft.lr_mode", "must be 'shared' or 'tied'")
    require(config.reft.lr_factor > 0, "reft.lr_factor", "must be positive")
    require(config.reft.lr_scale > 0, "reft.lr_scale", "must be positive")
    require(0 < config.reft.threshold <= 1, "reft.threshold", "must be in (0, 1]")
