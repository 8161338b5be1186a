"""Attention maps: where does each head look from the answer position, and how much did fine-tuning change that?

Per layer and head, on the held-out C_PT inputs (`pt_query`) and C_FT inputs (`ft_query`):
  <query>.h<head>.<target>   the mean attention weight from the answer position to each of the task's target
                             sets of key positions (`task.attention_targets`, summed per sequence), e.g. for PCFG
                             tasks the operand slot, the data tokens equal to O_PT, those equal to O_FT
  <query>.h<head>.tv_parent  (fine-tuned and reverse-fine-tuned members) the change of the head's attention: the
                             total variation distance between its attention distribution from the answer position
                             and its pretraining ancestor's, averaged over the inputs (0: unchanged, 1: disjoint)
  <query>.h<head>.tv_seed    (pretrained members) the seed-to-seed null of that change: the same distance between
                             the member and the pretrained member of the next seed with the same prior and LR (the
                             last seed pairs with the first; NaN with one seed). A fine-tuning change far below it
                             leaves the head as it was; one near it has rewritten the head.
Pretrained, fine-tuned and (when run) reverse-fine-tuned members are measured.

Rows: phase "attention", step = layer, metrics as above.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from fttrace.answer.evals.common import ancestor_params, evaluate_members, member_sets, member_status
from fttrace.model.transformer import Transformer
from fttrace.engine.results import long_frame

PHASE = "attention"


def answer_attention(model, params, tokens):
    """[L, N, H, T]: each head's attention distribution from the last position."""
    _, inter = model.apply({"params": params}, tokens, capture=True)
    return inter["attn_weights"][:, :, :, -1, :]


def attention_mass(weights, targets):
    """[L, H, C] mean attention (weights [L, N, H, T]) onto each of C target sets (targets [C, N, T])."""
    return jnp.einsum("lnhk,cnk->lhcn", weights, targets.astype(weights.dtype)).mean(-1)


def total_variation(a, b):
    """[L, H] mean over inputs of the total variation distance between attention distributions [L, N, H, T]."""
    return 0.5 * jnp.abs(a - b).sum(-1).mean(1)


def seed_partners(members: pd.DataFrame) -> np.ndarray:
    """Row of each pretrained member's partner: the next seed's member of the same prior and pretraining LR
    (cyclically); -1 where the cell has one seed."""
    partner = np.full(len(members), -1)
    for _, cell in members.reset_index(drop=True).groupby(["prior", "pretrain_lr"], sort=False):
        rows = cell.sort_values("seed").index.to_numpy()
        if len(rows) > 1:
            partner[rows] = np.roll(rows, -1)
    return partner


def measure_attention(run) -> pd.DataFrame:
    model = Transformer(run.group.model)
    n = run.config.attention.examples
    tokens_of = {"pt_query": run.eval_sets["pt"][0][:n], "ft_query": run.eval_sets["ft"][0][:n]}
    masks = {q: run.task.attention_masks(tokens) for q, tokens in tokens_of.items()}

    def measure(pair):
        params, other = pair
        out = {}
        for q, tokens in tokens_of.items():
            mine = answer_attention(model, params, tokens)
            out[f"{q}.mass"] = attention_mass(mine, masks[q])
            out[f"{q}.tv"] = total_variation(mine, answer_attention(model, other, tokens))
        return out

    frames = []
    for member_set in member_sets(run):
        if member_set.level == "pretrain":
            partner = seed_partners(member_set.members)
            stacked = jax.tree.leaves(member_set.params)[0].shape[0]
            index = np.concatenate([np.where(partner >= 0, partner, np.arange(len(partner))),
                                    np.zeros(stacked - len(partner), int)])
            other = jax.tree.map(lambda x: x[index], member_set.params)
            distance = "tv_seed"
        else:
            other, distance, partner = ancestor_params(run, member_set), "tv_parent", None
        rows, out = evaluate_members(run, measure, (member_set.params, other), member_set.members)
        records = []
        for layer in range(run.group.model.n_layers):
            metrics = {}
            for q in tokens_of:
                mass, tv = out[f"{q}.mass"], out[f"{q}.tv"]
                for h in range(mass.shape[2]):
                    for c, target in enumerate(run.task.attention_targets):
                        metrics[f"{q}.h{h}.{target}"] = mass[:, layer, h, c]
                    values = tv[:, layer, h]
                    metrics[f"{q}.h{h}.{distance}"] = np.where(partner[rows] >= 0, values, np.nan) \
                        if partner is not None else values
            records.append((layer, metrics))
        frames.append(long_frame(member_set.members.iloc[rows], PHASE, records, member_status(run, member_set, rows)))
    return pd.concat(frames, ignore_index=True)
