"""Component change: how much did fine-tuning change each compiled RASP operation? (compiled tasks only)

A Tracr-compiled model comes with ground truth: `task.pretrained_model.components` tells which attention heads
and MLP neurons each RASP operation occupies. For every fine-tuned and reverse-fine-tuned member, against its
pretraining ancestor (the compiled model), per component:
  weight_change  ||W - W0||_F / ||W0||_F over the component's weights (`component.component_params`: its heads'
                 query / key / value kernels and biases and output kernel, or its neurons' input kernel columns
                 and biases and output kernel rows)
  act_change     ||y - y0||_F / ||y0||_F of the component's output written into the residual stream (its heads'
                 share of the attention output, or its neurons' share of the MLP output; the sublayer's shared
                 output bias is left out), over every position of the first `components.examples` held-out C_PT
                 and C_FT inputs, each model run on its own activations
and the weight_change of the parameters outside the blocks (`embed`, `pos_embed`, `unembed`), where a wrapper
that only relabels the output would show. Both are exactly 0 for a member equal to its ancestor (0/0 counts as 0;
a change of something that was 0 is inf).

Rows: phase "components", step = the component's block (-1 outside the blocks), metrics
"<component>.<kind>.weight_change" and "<component>.<kind>.act_change" (kind attn | mlp, e.g.
"count_a.mlp.act_change"), "<param>.weight_change" outside the blocks.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from fttrace.config import positive_int
from fttrace.answer.evals.common import ancestor_params, evaluate_members, member_sets, member_status
from fttrace.model.transformer import Transformer
from fttrace.engine.results import long_frame
from fttrace.answer.tasks.component import Component, component_params

PHASE = "components"
OUTSIDE = ("embed", "pos_embed", "unembed")


def component_outputs(model: Transformer, params, tokens, components) -> list:
    """Each component's output written into the residual stream, [N, T, d] per component."""
    if model.cfg.layer_norm:
        raise ValueError("component outputs are defined for compiled models, which have no layer norm")
    _, inter = model.apply({"params": params}, tokens, capture=True)
    outputs = []
    for c in components:
        block = params[f"block_{c.block}"]
        if c.kind == "attn":
            attn, heads = block["attn"], np.asarray(c.heads)
            x = inter["residual"][c.block]  # the block's input
            values = jnp.einsum("ntd,dhe->nthe", x, attn["value"]["kernel"][:, heads]) + attn["value"]["bias"][heads]
            mixed = jnp.einsum("nhqk,nkhe->nqhe", inter["attn_weights"][c.block][:, heads], values)
            outputs.append(jnp.einsum("nqhe,hed->nqd", mixed, attn["out"]["kernel"][heads]))
        else:
            neurons = np.asarray(c.neurons)
            hidden = inter["mlp_hidden"][c.block][..., neurons]
            outputs.append(hidden @ block["mlp"]["fc_out"]["kernel"][neurons])
    return outputs


def relative_change(new, old):
    """||new - old|| / ||old|| (Frobenius, over every entry); 0 when both are equal, inf for a change of 0."""
    diff = jnp.sqrt(jnp.sum((new - old) ** 2))
    base = jnp.sqrt(jnp.sum(old ** 2))
    return jnp.where(base > 0, diff / jnp.where(base > 0, base, 1.0), jnp.where(diff > 0, jnp.inf, 0.0))


def flat_values(tree) -> jax.Array:
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def metric_name(c: Component, measure: str) -> str:
    return f"{c.name}.{c.kind}.{measure}"


def component_changes(model: Transformer, components, tokens, params, reference) -> dict:
    """{metric: scalar} of one member (`params`) against its ancestor (`reference`)."""
    # Both models in one vmapped forward pass: equal parameters give bit-equal activations.
    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, reference)
    outputs = jax.vmap(lambda p: component_outputs(model, p, tokens, components))(both)
    out = {}
    for c, y in zip(components, outputs):
        out[metric_name(c, "weight_change")] = relative_change(flat_values(component_params(params, c)),
                                                               flat_values(component_params(reference, c)))
        out[metric_name(c, "act_change")] = relative_change(y[0], y[1])
    for name in OUTSIDE:
        out[f"{name}.weight_change"] = relative_change(flat_values(params[name]), flat_values(reference[name]))
    return out


def records_of(changes: dict, components) -> list:
    """Long-format records [(step, {metric: values})]: step = block, -1 outside the blocks."""
    by_step: dict[int, dict] = {}
    for c in components:
        for measure in ("weight_change", "act_change"):
            name = metric_name(c, measure)
            by_step.setdefault(c.block, {})[name] = changes[name]
    by_step[-1] = {f"{name}.weight_change": changes[f"{name}.weight_change"] for name in OUTSIDE}
    return sorted(by_step.items())


def measure_components(run) -> pd.DataFrame:
    components = tuple(run.task.pretrained_model.components)
    model = Transformer(run.group.model)
    n = run.config.components.examples
    tokens = jnp.concatenate([run.eval_sets["pt"][0][:n], run.eval_sets["ft"][0][:n]])
    frames = []
    for member_set in member_sets(run, ("finetune", "reft")):
        members = member_set.members
        reference = ancestor_params(run, member_set)
        rows, changes = evaluate_members(
            run, lambda both: component_changes(model, components, tokens, *both), (member_set.params, reference),
            members)
        frames.append(long_frame(members.iloc[rows], PHASE, records_of(changes, components),
                                 member_status(run, member_set, rows)))
    return pd.concat(frames, ignore_index=True)


def check_config(config, model) -> None:
    """The `components` section."""
    positive_int(config, "components.examples")
