"""Members whose answer is known, to set the instruments' thresholds and to validate them (`evals` name "planted":
phases the study trains after reFT, before every measurement).

  null_finetune    the matched nulls fine-tuned: each control_pretrain member (never had C_PT; pretrained on its
                   lowest-prior member's own query mix with O_PT asked about the control terminal instead, same
                   budget and LR; fttrace/answer/tasks/queries.py) is fine-tuned like every real member of that
                   lowest prior and seed: same fine-tuning LR, C_Tr, criterion, budget and data order. Member
                   `nftN` is the null twin of `ftN`; `pretrain_index` is ftN's real parent, whose C_PT a revival
                   must reach. They never had C_PT and reach the same C_FT: true nulls of every instrument (their
                   targeted pruning gains and reFT steps make T_prune and T_reft) and planted overwrites.
  null_reft        each null twin trained on the pretraining task like `rftN`: at ftN's reFT LR, to the same
                   threshold of the real parent's C_PT (member `rnftN`).
  planted_wrapper  each lowest-prior real member's fine-tuning repeated with every parameter frozen but the last
                   layer's output side (the last MLP's fc_out, the final LayerNorm and the unembedding): whatever
                   computes C_PT up to the last MLP's units is intact by construction, only its read-out is
                   re-mapped (member `wftN`). The planted wrappers.
  wrapper_reft     their reFT, like `rftN` (member `rwftN`).
Pruning, probes and the regime diagnostics measure null_finetune and planted_wrapper members like the real ones
(fttrace/answer/evals/common.LEVELS); analysis/validation.py reads the instruments' false-positive rates and power.
"""
from __future__ import annotations

import jax
import jax.flatten_util
import numpy as np
import pandas as pd

from fttrace.answer import reft
from fttrace.config import require
from fttrace.answer.evals.common import pretrained_pt_acc
from fttrace.answer.sweep import optimizer_values
from fttrace.answer.tasks import queries
from fttrace.engine.protocols import UpdateSpec
from fttrace.engine.train import data_spec, fan_out, member_keys

NULL_FINETUNE, NULL_REFT, PLANTED, WRAPPER_REFT = "null_finetune", "null_reft", "planted_wrapper", "wrapper_reft"


def lowest_prior_members(group) -> pd.DataFrame:
    """The real fine-tuning members whose parent has the lowest prior of its seed (and pretraining LR and
    optimiser setting): those fine-tuning must teach C_FT; their parents are the ones the controls match."""
    pt = group.pretrain.reset_index(drop=True)
    matched = reft.matched_columns(pt)
    lowest = pt.prior == pt.groupby(matched, sort=False).prior.transform("min")
    ft = group.finetune.reset_index(drop=True)
    return ft[lowest.to_numpy()[ft.parent_index.to_numpy()]]


def null_members(group, controls: pd.DataFrame) -> pd.DataFrame:
    """One null twin per lowest-prior real member: the control of its seed, fine-tuned like it."""
    ft = lowest_prior_members(group)
    control_of = dict(zip(controls.pretrain_index, range(len(controls))))
    rows = [control_of[i] for i in ft.parent_index]
    nf = ft.assign(member="n" + ft.member, parent=controls.member.to_numpy()[rows], parent_index=rows,
                   pretrain_index=ft.parent_index.to_numpy(), prior_name="control")
    return nf.reset_index(drop=True)


def wrapper_members(group) -> pd.DataFrame:
    ft = lowest_prior_members(group)
    return ft.assign(member="w" + ft.member, pretrain_index=ft.parent_index.to_numpy()).reset_index(drop=True)


def reft_children(members: pd.DataFrame, cfg) -> pd.DataFrame:
    """reFT children (`r` + id) of fine-tuned null twins or planted wrappers, at their real twin's reFT LR."""
    out = members.assign(member="r" + members.member, parent=members.member, parent_index=np.arange(len(members)),
                         reft_lr=reft.reft_lrs(members, cfg))
    return out.reset_index(drop=True)


def output_side(params) -> np.ndarray:
    """0/1 over one member's flattened parameters: 1 on the last block's MLP output (fc_out), ln_f and unembed."""
    last = f"block_{max(int(k.split('_')[1]) for k in params if k.startswith('block_'))}"

    def trains(path) -> bool:
        keys = [getattr(p, "key", None) for p in path]
        return keys[0] in ("ln_f", "unembed") or (keys[0] == last and "fc_out" in keys)
    mask = jax.tree_util.tree_map_with_path(lambda path, x: np.full(x.shape, float(trains(path)), np.float32),
                                            params)
    return np.asarray(jax.flatten_util.ravel_pytree(mask)[0])


def finetune(run, phase, members, parents_state, protocol=None):
    """Fine-tune `members` from `parents_state` (rows `parent_index`) exactly as the real members: the member's
    fine-tuning LR, optimiser setting, data order (its seed's fine-tuning key), C_Tr and criterion."""
    spurious = members.spurious.to_numpy(np.float32)
    state = fan_out(parents_state, members.parent_index.to_numpy(), run.config.finetune,
                    members.finetune_lr.to_numpy(np.float32),
                    member_keys(run.config.seed, members.seed.to_numpy(), "finetune"),
                    hyper=optimizer_values(members, "finetune"))
    data = data_spec(queries.fine_tuning(run.task, len(members)), spurious,
                     criterion={"ft": 1 - spurious, "ft_shortcut": spurious})
    if protocol is not None:
        data = data.replace(protocol=protocol)
    return run.train_phase(phase, members, state, data, phase_cfg=run.group.phase(run.config, "finetune"))


def revive(run, phase, state, pt_acc) -> None:
    """reFT of the fine-tuned members of `state` (the phase's children: `run.tables[phase]`) at their twins' reFT LR,
    to the threshold of the real parent's C_PT."""
    cfg = run.config.reft
    children = run.tables[phase]
    state = fan_out(state, children.parent_index.to_numpy(), cfg, children.reft_lr.to_numpy(),
                    member_keys(run.config.seed, children.seed.to_numpy(), reft.REFT))
    reference = pt_acc[children.pretrain_index.to_numpy()]
    reft.train_on_pretraining_task(run, phase, children, state, reference)
    reft.write_summary(run, phase, children, reference)


def run_planted(run) -> None:
    """The fine-tuned matched nulls and the planted wrappers, each with its reFT (module docstring)."""
    pt_acc = pretrained_pt_acc(run)
    nf = run.tables[NULL_FINETUNE]
    state = finetune(run, NULL_FINETUNE, nf, run.states[reft.CONTROL_PRETRAIN])
    revive(run, NULL_REFT, state, pt_acc)
    wf = run.tables[PLANTED]
    mask = output_side(jax.tree.map(lambda x: x[0], run.states["pretrain"].params))
    protocol = UpdateSpec(mask=np.tile(mask, (len(wf), 1)), l2sp=np.zeros(len(wf), np.float32),
                          anchor=np.zeros((len(wf), len(mask)), np.float32))
    state = finetune(run, PLANTED, wf, run.states["pretrain"], protocol)
    revive(run, WRAPPER_REFT, state, pt_acc)


def phase_tables(group, controls: pd.DataFrame, cfg) -> dict[str, pd.DataFrame]:
    """The member tables of the phases above, in run order (TaskStudy.phase_tables)."""
    nf, wf = null_members(group, controls), wrapper_members(group)
    return {NULL_FINETUNE: nf, NULL_REFT: reft_children(nf, cfg), PLANTED: wf, WRAPPER_REFT: reft_children(wf, cfg)}


def check_config(config, task) -> None:
    """What the members of known answer need: reFT with its control (they fine-tune the control), plain fine-tuning,
    and a task that can ask about its control terminal."""
    evals = config.get("evals", ())
    require("reft" in evals and config.reft.control, "evals",
            "evaluation 'planted' fine-tunes the reFT control: it needs 'reft' with reft.control")
    require(not config.sweep.get("protocol", ()), "evals",
            "evaluation 'planted' fine-tunes like plain fine-tuning, not with sweep.protocol")
    require("control" in task.queries, "evals", f"evaluation 'planted' needs a task that can ask about its "
                                                 f"control terminal, not {config.task.name!r}")
