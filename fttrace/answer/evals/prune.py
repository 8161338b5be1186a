"""Pruning: does removing a few units of a fine-tuned model bring the pretraining capability back?

One-shot attribution pruning (the reference study's method): score every unit with the first-order Taylor
estimate of how much removing it changes the pretraining-task (C_PT) loss on `prune.examples` held-out sequences,
remove the top k, and record C_PT and C_FT accuracy as a curve over k on as many other held-out sequences (the
first of the shared eval sets). Removing unit u (mask m_u: 1 -> 0, or weight w -> 0) changes the loss by about
-dL/dm_u (or -g.w), so with `score="taylor"` the units whose removal is predicted to *lower* the C_PT loss most
go first; `score="abs"` ranks by the magnitude |g.w| instead. Granularities:
  neurons  MLP hidden units (mask gradients)
  heads    attention heads (mask gradients)
  weights  individual weights of every block matrix (g.w)
  mask     a learned sparse neuron mask: sigmoid(logits) trained to minimise the C_PT loss with a penalty on
           removing more than the budget, then the `budget` fraction with the lowest logits is removed
  neurons_remove_ft  the converse direction: neurons ranked by how much removing them *raises* the C_FT loss
  neurons_random  the null: k MLP neurons drawn at random (the same `prune.random_draws` draws for every member),
           accuracies averaged over the draws
For every method `<method>.k_revive` is the smallest k whose C_PT accuracy comes within `prune.tolerance` of the
member's pretrained C_PT accuracy (NaN if none does), `<method>.frac_revive` the same as a fraction of units.
Every curve records C_FT beside C_PT, so the units whose removal revives C_PT can be seen to remove C_FT (or not).
Pretrained members are pruned the same way, and so are the control that never had C_PT (`control_pretrain`) and
the members of known answer (`null_finetune`, the matched nulls fine-tuned, whose gains make T_prune: a gain
there is the instrument's own, not a latent capability's; `planted_wrapper`; answer/planted.py).

Rows: phase "prune", step = k (units removed), metrics "<method>.pt_acc" / "<method>.ft_acc"; "neurons.unit" and
"heads.unit" at step k: the k-th unit the targeted ranking removes (flat index: layer x units per layer + unit).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from fttrace.config import positive_int, require
from fttrace.model import trees
from fttrace.answer.evals.common import (MemberSet, evaluate_members, extra_key, masked_accuracy, member_sets,
                                  member_status, reference_pt_acc)
from fttrace.model.transformer import Transformer, full_masks
from fttrace.engine.results import long_frame
from fttrace.engine.train import answer_loss, eval_sets_for

PHASE = "prune"
UNITS = "units"  # the key of the removal orders among a member's curves


def _top_k_mask(scores, k):
    """1 everywhere except the k highest scores (over all entries of `scores`), which become 0."""
    flat = scores.reshape(-1)
    rank = jnp.argsort(jnp.argsort(-flat))
    return (rank >= k).astype(jnp.float32).reshape(scores.shape)


def _block_kernels(params):
    """Paths of the weight matrices inside transformer blocks (the candidates for weight pruning)."""
    return [path for path, leaf in jax.tree_util.tree_leaves_with_path(params)
            if str(path[0].key).startswith("block_") and path[-1].key == "kernel"]


class Pruner:
    def __init__(self, run):
        self.run = run
        self.cfg = run.config.prune
        self.model = Transformer(run.group.model)
        self.masks = full_masks(run.group.model)
        task = run.task
        self.score_sets = {"pt": task.sample_heldout(extra_key(run, "prune-pt"), self.cfg.examples,
                                                     task.query_mix(pt=1.0), 0.0),
                           "ft": task.sample_heldout(extra_key(run, "prune-ft"), self.cfg.examples,
                                                     task.query_mix(ft=1.0), 0.0)}
        # C_PT and C_FT test sets of `prune.examples` sequences: the test pool, neither the scoring sets nor the sets
        # that stopping read (drawn here, on the host: the distinct choice cannot run inside a traced program).
        sets = eval_sets_for(task, self.cfg.examples, run.config.eval.seed, name="test")
        self.accuracy_sets = {name: sets[name] for name in ("pt", "ft")}



    def _rank_scores(self, grad, value=1.0):
        contribution = grad * value
        return contribution if self.cfg.score == "taylor" else jnp.abs(contribution)

    def _mask_grads(self, params, target):
        tokens, answers = self.score_sets[target]
        return jax.grad(lambda m: answer_loss(self.model, params, tokens, answers, m)[0])(self.masks)

    def curves(self, params):
        """All pruning curves of one member: {method: (ks, {"pt_acc": [K], "ft_acc": [K]})}."""
        sets = self.accuracy_sets
        out = {}
        g_pt = self._mask_grads(params, "pt")
        g_ft = self._mask_grads(params, "ft")
        unit_scores = {"neurons": (self._rank_scores(g_pt["neurons"]), "neurons", self.cfg.neuron_ks),
                       "heads": (self._rank_scores(g_pt["heads"]), "heads", self.cfg.head_ks),
                       "neurons_remove_ft": (self._rank_scores(-g_ft["neurons"]), "neurons", self.cfg.neuron_ks)}
        for method, (scores, kind, ks) in unit_scores.items():
            def at_k(k, scores=scores, kind=kind):
                return masked_accuracy(self.model, params, sets, {**self.masks, kind: _top_k_mask(scores, k)})
            out[method] = jax.lax.map(at_k, jnp.asarray(ks))
        out["neurons_random"] = self._random_curve(params, sets)
        if self.cfg.weight_fractions:  # an empty list leaves a method out
            out["weights"] = self._weight_curve(params, sets)
        if self.cfg.mask_budgets:
            out["mask"] = self._learned_mask_curve(params, sets)
        # Which units the targeted rankings remove first (flat index layer x units per layer + unit), so that a
        # located wrapper can be named and, for a compiled model, held against its components.
        out[UNITS] = {kind: jnp.argsort(-unit_scores[kind][0].reshape(-1))[:max(unit_scores[kind][2])]
                      for kind in ("neurons", "heads")}
        return out

    def _random_curve(self, params, sets):
        """Accuracies with k random MLP neurons removed, averaged over `prune.random_draws` draws."""
        scores = jax.random.uniform(extra_key(self.run, "prune-random"),
                                    (self.cfg.random_draws,) + self.masks["neurons"].shape)

        def at_k(k):
            per_draw = jax.lax.map(lambda s: masked_accuracy(self.model, params, sets,
                                                             {**self.masks, "neurons": _top_k_mask(s, k)}), scores)
            return jax.tree.map(lambda a: a.mean(0), per_draw)
        return jax.lax.map(at_k, jnp.asarray(self.cfg.neuron_ks))

    def weight_ks(self):
        n = self.n_weights()
        return [int(round(f * n)) for f in self.cfg.weight_fractions]

    def n_weights(self):
        params = self.run.states["pretrain"].params
        return int(sum(np.prod(leaf.shape[1:]) for path, leaf in jax.tree_util.tree_leaves_with_path(params)
                       if path in _block_kernels(params)))

    def _weight_curve(self, params, sets):
        tokens, answers = self.score_sets["pt"]
        grads = jax.grad(lambda p: answer_loss(self.model, p, tokens, answers)[0])(params)
        paths = [[entry.key for entry in path] for path in _block_kernels(params)]
        scores = jnp.concatenate([self._rank_scores(trees.get(grads, p), trees.get(params, p)).reshape(-1)
                                  for p in paths])

        def at_k(k):
            keep = _top_k_mask(scores, k)
            pruned, offset = params, 0
            for p in paths:
                w = trees.get(params, p)
                pruned = trees.replace(pruned, p, w * keep[offset:offset + w.size].reshape(w.shape))
                offset += w.size
            return masked_accuracy(self.model, pruned, sets)
        return jax.lax.map(at_k, jnp.asarray(self.weight_ks()))

    def _learned_mask_curve(self, params, sets):
        tokens, answers = (x[:self.cfg.mask_examples] for x in self.score_sets["pt"])
        n = self.masks["neurons"].size
        tx = optax.adam(self.cfg.mask_lr)

        def train(budget):
            logits = jnp.full(self.masks["neurons"].shape, 3.0)

            def loss(lg):
                m = jax.nn.sigmoid(lg)
                removed = 1.0 - m.mean()
                ce = answer_loss(self.model, params, tokens, answers, {**self.masks, "neurons": m})[0]
                return ce + self.cfg.mask_penalty * jax.nn.relu(removed - budget)

            def step(carry, _):
                lg, opt = carry
                updates, opt = tx.update(jax.grad(loss)(lg), opt)
                return (optax.apply_updates(lg, updates), opt), None
            (logits, _), _ = jax.lax.scan(step, (logits, tx.init(logits)), None, length=self.cfg.mask_steps)
            k = jnp.round(budget * n).astype(jnp.int32)
            return masked_accuracy(self.model, params, sets, {**self.masks, "neurons": _top_k_mask(-logits, k)})
        return jax.lax.map(train, jnp.asarray(self.cfg.mask_budgets, jnp.float32))

    def mask_ks(self):
        n = self.masks["neurons"].size
        return [int(round(b * n)) for b in self.cfg.mask_budgets]

    def method_ks(self):
        return {"neurons": list(self.cfg.neuron_ks), "heads": list(self.cfg.head_ks),
                "neurons_remove_ft": list(self.cfg.neuron_ks), "neurons_random": list(self.cfg.neuron_ks),
                "weights": self.weight_ks(), "mask": self.mask_ks()}

    def totals(self):
        c = self.run.group.model
        return {"neurons": c.n_layers * c.mlp, "heads": c.n_layers * c.n_heads,
                "neurons_remove_ft": c.n_layers * c.mlp, "neurons_random": c.n_layers * c.mlp,
                "weights": self.n_weights(), "mask": c.n_layers * c.mlp}


def k_revive(ks, pt_acc, reference, tolerance):
    """Smallest k (per member) whose C_PT accuracy is within `tolerance` of the reference; NaN if none."""
    ok = pt_acc >= (reference[:, None] - tolerance)
    first = np.argmax(ok, axis=1)
    return np.where(ok.any(axis=1), np.asarray(ks, np.float64)[first], np.nan)


def records_for(curves, method_ks, totals, reference, tolerance):
    """Long-format records [(k, {metric: [members]})] from the per-method curves."""
    by_k: dict[int, dict] = {}
    summary = {}
    for kind, units in curves.get(UNITS, {}).items():
        for rank in range(units.shape[1]):
            by_k.setdefault(rank + 1, {})[f"{kind}.unit"] = units[:, rank]
    for method, accs in curves.items():
        if method == UNITS:
            continue
        ks = method_ks[method]
        for j, k in enumerate(ks):
            row = by_k.setdefault(k, {})
            row[f"{method}.pt_acc"] = accs["pt_acc"][:, j]
            row[f"{method}.ft_acc"] = accs["ft_acc"][:, j]
        kr = k_revive(ks, accs["pt_acc"], reference, tolerance)
        summary[f"{method}.k_revive"] = kr
        summary[f"{method}.frac_revive"] = kr / totals[method]
    by_k.setdefault(0, {}).update(summary)
    return sorted(by_k.items())


def prune_members(run, member_set: MemberSet, pruner: Pruner):
    """(rows of the member set this process holds, their long-format records)."""
    rows, curves = evaluate_members(run, pruner.curves, member_set.params, member_set.members)
    reference = reference_pt_acc(run, member_set)[rows]
    return rows, records_for(curves, pruner.method_ks(), pruner.totals(), reference, run.config.prune.tolerance)


def measure_prune(run) -> pd.DataFrame:
    """Phase "prune": fine-tuned members, with the pretrained members, the control that never had C_PT and the
    members of known answer."""
    pruner = Pruner(run)
    frames = []
    for member_set in member_sets(run, ("pretrain", "finetune", "control_pretrain", "null_finetune",
                                        "planted_wrapper")):
        rows, records = prune_members(run, member_set, pruner)
        frames.append(long_frame(member_set.members.iloc[rows], PHASE, records, member_status(run, member_set, rows)))
    return pd.concat(frames, ignore_index=True)


def check_config(config, model) -> None:
    """The `prune` section against the model (`model.n_layers`, `model.n_heads`)."""
    require(config.prune.score in ("taylor", "abs"), "prune.score", "must be 'taylor' or 'abs'")
    require(0 <= config.prune.tolerance <= 1, "prune.tolerance", "must be in [0, 1]")
    for key in ("neuron_ks", "head_ks"):
        require(all(isinstance(k, int) and k >= 0 for k in config.prune[key]), f"prune.{key}",
                "must hold non-negative integers")
    n_heads = model.n_layers * model.n_heads
    require(max(config.prune.head_ks) <= n_heads, "prune.head_ks", f"exceeds the model's {n_heads} heads")
    for key in ("weight_fractions", "mask_budgets"):
        require(all(0 <= f <= 1 for f in config.prune[key]), f"prune.{key}", "must hold fractions in [0, 1]")
    positive_int(config, "prune.random_draws")
