"""Pieces every evaluation uses: which member sets to examine, extra held-out data, accuracy under masks."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from fttrace.engine.members import map_members
from fttrace.model.transformer import Transformer
from fttrace.engine.results import status_of
from fttrace.engine.train import PHASE_IDS, answer_loss, init_members


@dataclasses.dataclass
class MemberSet:
    """Member-stacked parameters of one run-tree level, with their member table (ids, parents, hyperparameters)."""
    level: str  # a name of LEVELS
    members: pd.DataFrame
    params: object


# Every level a measurement can examine, in run-tree order: the members, then the nulls (the control that never had
# C_PT, before and after its C_PT training, and each pretraining seed's untrained model), then the fine-tuned
# members of known answer (answer/planted.py: the matched nulls fine-tuned, the planted wrappers).
LEVELS = ("pretrain", "finetune", "reft", "control_pretrain", "control_reft", "init", "null_finetune",
          "planted_wrapper")
MEMBER_LEVELS = ("pretrain", "finetune", "reft")


def member_sets(run, levels=MEMBER_LEVELS) -> list[MemberSet]:
    """The levels of the run tree that exist so far, in run-tree order ("init": the pretraining members' untrained
    models, on the pretraining members' rows): the sets a measurement evaluates, announced to the progress display."""
    tables = {**run.tables, "init": run.group.pretrain}
    out = []
    for level in LEVELS:
        if level not in levels or level not in tables:
            continue
        if level == "init":
            out.append(MemberSet(level, tables[level], untrained_params(run)))
        elif level in run.states:
            out.append(MemberSet(level, tables[level], run.states[level].params))
    run.progress.expect(len(out), sum(len(s.members) for s in out))
    return out


def member_status(run, member_set: MemberSet, rows) -> np.ndarray:
    """"diverged" / "ok" for the members at `rows` of a level: the status of the member whose rows they are (the
    untrained models sit on the pretraining members' rows)."""
    level = "pretrain" if member_set.level == "init" else member_set.level
    if level not in run.states:
        return np.full(len(rows), "ok", object)
    return status_of(run.placement.fetch(run.states[level].diverged, rows))


def untrained_params(run):
    """Each pretraining member's parameters before any training (from its seed's init key)."""
    pt = run.group.pretrain
    return init_members(run.group.model, run.config.pretrain, run.config.seed, pt.seed.to_numpy(),
                        pt.pretrain_lr.to_numpy()).params


def pretrained_pt_acc(run) -> np.ndarray:
    """Every pretrained member's C_PT accuracy on the shared eval set, whole on every process (pads dropped)."""
    model = Transformer(run.group.model)
    tokens, answers = run.eval_sets["pt"]
    acc = jax.jit(lambda params: map_members(lambda p: answer_loss(model, p, tokens, answers)[1], params,
                                             batch=run.config.eval.member_batch),
                  out_shardings=run.placement.replicated)(run.states["pretrain"].params)
    return np.asarray(acc)[:len(run.group.pretrain)]


def pretrain_ancestor(members: pd.DataFrame) -> np.ndarray:
    """Each fine-tuned or reFT member's pretraining ancestor (its row among the pretrained members)."""
    return (members["pretrain_index"] if "pretrain_index" in members else members["parent_index"]).to_numpy()


def ancestor_params(run, member_set: MemberSet):
    """Member-stacked parameters of each member's pretraining ancestor, aligned with `member_set.params` (pad
    members get member 0's ancestor)."""
    ancestor = pretrain_ancestor(member_set.members)
    stacked = jax.tree.leaves(member_set.params)[0].shape[0]
    ancestor = np.concatenate([ancestor, np.full(stacked - len(ancestor), ancestor[0])])
    return jax.tree.map(lambda x: x[ancestor], run.states["pretrain"].params)


def reference_pt_acc(run, member_set: MemberSet) -> np.ndarray:
    """Each member's pretrained C_PT accuracy (its own if pretrained, else its pretraining ancestor's: for a null
    twin, its real twin's parent)."""
    acc = pretrained_pt_acc(run)
    return acc if member_set.level in ("pretrain", "init") else acc[pretrain_ancestor(member_set.members)]


def evaluate_members(run, fn, params, members: pd.DataFrame) -> tuple[np.ndarray, object]:
    """`fn(member params)` for every member, `eval.member_batch` members at a time on each device.

    Returns (rows, outputs): the rows of `members` that this process holds (real members only, in order) and
    `fn`'s outputs for them as numpy. The outputs stay sharded like the members, so every process reads only
    its own rows and pad members never leave the device. The progress display counts the set as done.

    In one process the members go through in slices of one width (`eval.member_batch` per device, the last slice
    padded with copies of the first member), so every set of every size runs the same compiled program: a
    measurement compiles once, not once per set size (on a 2-core CPU a pruning program takes 10-25 s to compile).
    """
    batch = run.config.eval.member_batch
    program = jax.jit(lambda p: map_members(fn, p, batch=batch), out_shardings=run.placement.members)
    n = len(members)
    if jax.process_count() > 1:  # members spread over processes: one program over the whole (padded) set
        rows = run.placement.local_rows(n)
        out = run.placement.fetch(program(run.placement.place(params)), rows)
    else:
        width = batch * run.placement.device_count
        slices = -(-n // width)
        # on the device, parameters never cross to the host: padded once, then sliced by a traced start
        padded = jax.jit(lambda tree: jax.tree.map(
            lambda x: jnp.concatenate([x[:n], jnp.repeat(x[:1], slices * width - n, axis=0)]), tree))(params)
        take = jax.jit(lambda tree, start: jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, width), tree))
        outs = [jax.tree.map(np.asarray, program(run.placement.place(take(padded, k * width))))
                for k in range(slices)]
        rows = np.arange(n)
        out = jax.tree.map(lambda *parts: np.concatenate(parts)[:n], *outs)
    run.progress.done(n)
    return rows, out


def extra_key(run, name: str) -> jax.Array:
    """A key for evaluation data other than the shared eval sets (shared by all members)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(run.config.eval.seed), PHASE_IDS["eval"]),
                              sum(map(ord, name)))


def masked_accuracy(model, params, sets: dict, masks=None) -> dict:
    """{"pt_acc", "ft_acc"} of one member under optional pruning masks."""
    return {f"{name}_acc": answer_loss(model, params, tokens, answers, masks)[1]
            for name, (tokens, answers) in sets.items()}
