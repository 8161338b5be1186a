"""Attention maps: where does each head look from the answer position, before and after fine-tuning?

Per layer and head, the mean attention weight from the answer position to each of the task's target sets of
key positions (`task.attention_targets`, summed per sequence), e.g. for PCFG tasks
  operand    the query's operand slot
  pt_tokens  all data tokens equal to O_PT
  ft_tokens  all data tokens equal to O_FT
and for Tracr tasks `bos` and the positions that decide the pretraining / fine-tuning answer; averaged over the
held-out C_PT inputs (`pt_query`) and C_FT inputs (`ft_query`), for pretrained, fine-tuned and (when run)
reverse-fine-tuned members.

Rows: phase "attention", step = layer, metrics "<query>.h<head>.<target>".
"""
from __future__ import annotations

import jax.numpy as jnp
import pandas as pd

from fttrace.evals.common import evaluate_members, member_sets
from fttrace.model import Transformer
from fttrace.results import long_frame

PHASE = "attention"


def attention_targets(task, tokens):
    """Boolean key-position masks [len(task.attention_targets), N, T]."""
    return task.attention_masks(tokens)


def attention_mass(model, params, tokens, targets):
    """[L, H, C] mean attention from the last position onto each of C target sets."""
    _, inter = model.apply({"params": params}, tokens, capture=True)
    last = inter["attn_weights"][:, :, :, -1, :]  # [L, N, H, T]
    mass = jnp.einsum("lnhk,cnk->lhcn", last, targets.astype(last.dtype))
    return mass.mean(-1)


def run_attention(run) -> None:
    part = run.part_name(PHASE)
    if run.done(part):
        return
    model = Transformer(run.group.model)
    queries = {"pt_query": run.eval_sets["pt"][0], "ft_query": run.eval_sets["ft"][0]}
    tokens_of = {q: tokens[:run.config.attention.examples] for q, tokens in queries.items()}
    masks = {q: attention_targets(run.task, tokens) for q, tokens in tokens_of.items()}
    frames = []
    for member_set in member_sets(run):
        rows, mass = evaluate_members(  # mass: {query: [members, L, H, C]}
            run, lambda p: {q: attention_mass(model, p, tokens_of[q], masks[q]) for q in tokens_of},
            member_set.params, member_set.members)
        records = []
        for layer in range(run.group.model.n_layers):
            metrics = {f"{q}.h{h}.{target}": m[:, layer, h, c] for q, m in mass.items()
                       for h in range(m.shape[2]) for c, target in enumerate(run.task.attention_targets)}
            records.append((layer, metrics))
        frames.append(long_frame(member_set.members.iloc[rows], PHASE, records))
    run.store.write_part(part, pd.concat(frames, ignore_index=True))
