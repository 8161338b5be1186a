"""Weight change per layer and component: how far did fine-tuning (and reFT) move each part of the model?

For every fine-tuned and reverse-fine-tuned member, against its pretraining ancestor, the relative Frobenius change
||W - W0||_F / ||W0||_F (components.relative_change) of each block's attention (query, key, value, out), MLP
(fc_in, fc_out) and LayerNorms, of the parameters outside the blocks (embed, pos_embed, ln_f, unembed) and of all
parameters together. For a fine-tuning protocol (fttrace/engine/protocols.py) these are the merged parameters, so
LoRA and SVF members are measured like any other.

Rows: phase "weights", step = the block (-1 outside the blocks), metrics "attn.weight_change",
"mlp.weight_change", "ln.weight_change" (blocks) and "<param>.weight_change", "all.weight_change" (step -1).
"""
from __future__ import annotations

import pandas as pd

from fttrace.answer.evals.common import ancestor_params, evaluate_members, member_sets, member_status
from fttrace.answer.evals.components import flat_values, relative_change
from fttrace.engine.results import long_frame

PHASE = "weights"
BLOCK_PARTS = {"attn": ("attn",), "mlp": ("mlp",), "ln": ("ln1", "ln2")}


def weight_changes(params, reference) -> dict:
    """{(step, metric): scalar} of one member against its ancestor."""
    out = {}
    for name in params:
        if name.startswith("block_"):
            block = int(name.split("_")[1])
            for part, keys in BLOCK_PARTS.items():
                keys = [k for k in keys if k in params[name]]
                if keys:
                    out[(block, f"{part}.weight_change")] = relative_change(
                        flat_values([params[name][k] for k in keys]), flat_values([reference[name][k] for k in keys]))
        else:
            out[(-1, f"{name}.weight_change")] = relative_change(flat_values(params[name]),
                                                                 flat_values(reference[name]))
    out[(-1, "all.weight_change")] = relative_change(flat_values(params), flat_values(reference))
    return out


def records_of(changes: dict) -> list:
    by_step: dict[int, dict] = {}
    for (step, metric), values in changes.items():
        by_step.setdefault(step, {})[metric] = values
    return sorted(by_step.items())


def measure_weights(run) -> pd.DataFrame:
    frames = []
    for member_set in member_sets(run, ("finetune", "reft")):
        rows, changes = evaluate_members(
            run, lambda both: {f"{s}|{m}": v for (s, m), v in weight_changes(*both).items()},
            (member_set.params, ancestor_params(run, member_set)), member_set.members)
        changes = {(int(key.split("|")[0]), key.split("|")[1]): v for key, v in changes.items()}
        frames.append(long_frame(member_set.members.iloc[rows], PHASE, records_of(changes),
                                 member_status(run, member_set, rows)))
    return pd.concat(frames, ignore_index=True)
