"""Components: which units of fttrace's parameters one operation of a compiled program owns (its attention heads
or MLP neurons in one block), and those parameters' slices. Independent of the compiler
(fttrace/answer/tasks/programs.py builds them), so evaluations read components without importing it."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Component(NamedTuple):
    """One compiled RASP operation's share of the fttrace params.

    kind "attn": `heads` of `block_{block}/attn`; kind "mlp": hidden `neurons` of `block_{block}/mlp`.
    The other index field is None. A SelectorWidth compiles to an attention and an MLP component of one name.
    """
    name: str
    kind: str
    block: int
    heads: tuple[int, ...] | None
    neurons: tuple[int, ...] | None


def component_params(params: dict, component: Component) -> dict:
    """The slices of `params` (fttrace params of the compiled program's shape, e.g. after fine-tuning; numpy or JAX
    arrays, also inside a jitted function) that belong to `component`, keyed by param path. Output biases, shared
    by all heads or neurons of a sublayer, are left out."""
    block = params[f"block_{component.block}"]
    if component.kind == "attn":
        heads = np.asarray(component.heads)
        attn = block["attn"]
        found = {f"attn/{name}/{leaf}": attn[name][leaf][..., heads, :]
                 for name in ("query", "key", "value") for leaf in ("kernel", "bias")}
        found["attn/out/kernel"] = attn["out"]["kernel"][heads]
    else:
        neurons = np.asarray(component.neurons)
        mlp = block["mlp"]
        found = {"mlp/fc_in/kernel": mlp["fc_in"]["kernel"][:, neurons],
                 "mlp/fc_in/bias": mlp["fc_in"]["bias"][neurons],
                 "mlp/fc_out/kernel": mlp["fc_out"]["kernel"][neurons]}
    return {f"block_{component.block}/{path}": value for path, value in found.items()}
