"""Activation patching between a fine-tuned member and its pretrained parent: where does the wrapper sit?

For every fine-tuned member and each site — one attention head (`L<l>.h<h>`), one MLP (`L<l>.mlp`), or a whole
block (`L<l>.block`: its heads and its MLP) — the parent's contribution to the residual stream at that site is
patched into the child's forward pass on the same input (both models are in the same program: the parent is a
gather along the member axis), and the child's C_PT and C_FT accuracy is measured on held-out O_PT and O_FT
queries. A site whose patch brings C_PT back, or removes C_FT, is where fine-tuning changed what the model does;
a wrapper located by pruning should show up as such a site. `none` is the unpatched child.

Rows: phase "patch", step 0, metrics "<site>.pt_acc" / "<site>.ft_acc", on the fine-tuned members' rows.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from fttrace.config import positive_int
from fttrace.answer.evals.common import MemberSet, ancestor_params, evaluate_members, member_sets, member_status
from fttrace.model.transformer import Transformer
from fttrace.engine.results import long_frame

PHASE = "patch"


def sites(n_layers: int, n_heads: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, head weights [L, H], MLP weights [L]) of every site, the unpatched `none` first."""
    out = [("none", np.zeros((n_layers, n_heads)), np.zeros(n_layers))]
    for layer in range(n_layers):
        for head in range(n_heads):
            heads = np.zeros((n_layers, n_heads))
            heads[layer, head] = 1
            out.append((f"L{layer}.h{head}", heads, np.zeros(n_layers)))
        mlp = np.zeros(n_layers)
        mlp[layer] = 1
        out.append((f"L{layer}.mlp", np.zeros((n_layers, n_heads)), mlp))
        heads = np.zeros((n_layers, n_heads))
        heads[layer] = 1
        out.append((f"L{layer}.block", heads, mlp))
    return out


class Patcher:
    def __init__(self, run):
        cfg = run.group.model
        self.model = Transformer(cfg)
        examples = run.config.patch.examples
        self.sets = {name: (tokens[:examples], answers[:examples])
                     for name, (tokens, answers) in run.eval_sets.items() if name in ("pt", "ft")}
        names, heads, mlps = zip(*sites(cfg.n_layers, cfg.n_heads))
        self.names = list(names)
        self.heads, self.mlps = jnp.asarray(np.stack(heads), jnp.float32), jnp.asarray(np.stack(mlps), jnp.float32)

    def accuracies(self, pair):
        """{set: [sites]} accuracy of one child with each site patched from its parent."""
        child, parent = pair
        out = {}
        for name, (tokens, answers) in self.sets.items():
            _, inter = self.model.apply({"params": parent}, tokens, capture=True)

            def patched(heads, mlp, tokens=tokens, answers=answers, inter=inter):
                patch = {"heads": heads, "head_out": inter["head_out"], "mlp": mlp, "mlp_out": inter["mlp_out"]}
                logits = self.model.apply({"params": child}, tokens, patch=patch)[:, -1]
                return (logits.argmax(-1) == answers).mean()
            out[name] = jax.lax.map(lambda site: patched(*site), (self.heads, self.mlps))
        return out


def measure_patch(run) -> pd.DataFrame:
    patcher = Patcher(run)
    (finetuned,) = member_sets(run, ("finetune",))
    pair = (finetuned.params, ancestor_params(run, MemberSet("finetune", finetuned.members, finetuned.params)))
    rows, acc = evaluate_members(run, patcher.accuracies, pair, finetuned.members)
    metrics = {f"{site}.{name}_acc": acc[name][:, i] for name in acc for i, site in enumerate(patcher.names)}
    return long_frame(finetuned.members.iloc[rows], PHASE, [(0, metrics)], member_status(run, finetuned, rows))


def check_config(config, model) -> None:
    """The `patch` section."""
    positive_int(config, "patch.examples")
