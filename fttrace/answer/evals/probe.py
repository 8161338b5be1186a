"""Linear probes: is the pretraining capability still readable from the residual stream, beyond the input?

For every site — the residual stream after the embeddings and after each block (`resid`, step = 0..L) and
each block's attention output (`attn`, step = 1..L) — at the answer position, a linear softmax probe is trained
on frozen activations to read
  pt       the pretraining target (the task's answer for O_PT on that input)
  ft       the fine-tuning target (the answer for O_FT)
  control  the control target: the answer for a terminal no query ever asks about (task.labels()["control"]),
           which has the same input statistics, so a probe that reads it as well as `pt` reads the input, not
           the capability; selectivity = accuracy(pt) - accuracy(control)
and its accuracy on the test set is reported ("<site>.<target>_acc"), beside that on a validation set
("<site>.<target>_val_acc": another draw of the eval pool) on which a reader chooses the layer, so that the
layer is not chosen on the accuracy it reports. Inputs ask about O_PT or O_FT with equal probability and carry
no shortcut. Probes are fitted on standardised features, vmapped over members x sites x targets: with
`probe.fitter = "softmax"` a softmax regression trained by full-batch Adam (`probe.steps` at `probe.lr`), with
"ridge" the closed-form least-squares map onto one-hot labels (penalty `probe.ridge` per example), read out by
argmax: one linear solve instead of hundreds of steps, for runs where the probes would dominate the wall time.
Every level of the run tree is probed (fttrace/answer/evals/common.LEVELS): pretrained, fine-tuned, reverse-fine-tuned
members, the control that never had C_PT (before and after its C_PT training) and each pretraining seed's
untrained model (metrics prefixed `init_`, on the pretraining members' rows).

Rows: phase "probe", step = layer position, metrics "<site>.<target>_acc".
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pandas as pd

from fttrace.config import positive_int, require
from fttrace.engine import linear_probe
from fttrace.answer.evals.common import LEVELS, evaluate_members, extra_key, member_sets, member_status
from fttrace.model.transformer import Transformer
from fttrace.engine.results import long_frame

PHASE = "probe"
TARGETS = ("pt", "ft", "control")


def probe_data(task, key, examples: int, pool: str = "eval"):
    """Held-out inputs of `pool` and their label sets [len(TARGETS), N] (the test pool's without a repeated input)."""
    tokens, _ = task.sample_heldout(key, examples, task.query_mix(pt=0.5, ft=0.5), 0.0, pool=pool,
                                    distinct=pool == "test")
    labels = task.labels(tokens)
    return tokens, jnp.stack([labels[t] for t in TARGETS])


def site_features(model, params, tokens):
    """Activations at the answer position: [L+1 + L, N, d] (residual sites, then attention outputs)."""
    _, inter = model.apply({"params": params}, tokens, capture=True)
    return jnp.concatenate([inter["residual"][:, :, -1], inter["attn_out"][:, :, -1]]).astype(jnp.float32)


def fit_probe(x_train, y_train, x_test, y_test, n_classes: int, cfg):
    """Held-out accuracy of a linear probe trained on (x_train, y_train) (`cfg.fitter`:
    fttrace/engine/linear_probe.py); `x_test`, `y_test` may stack several held-out sets: [sets, N, ...] gives
    [sets] accuracies."""
    flat = x_test.reshape(-1, x_test.shape[-1])
    predicted = linear_probe.predict(x_train, y_train, flat, cfg.fitter, n_classes, steps=cfg.steps, lr=cfg.lr,
                                     weight_decay=cfg.weight_decay, ridge=cfg.ridge)
    return (predicted.reshape(y_test.shape) == y_test).mean(-1)


class Prober:
    def __init__(self, run):
        self.cfg = run.config.probe
        self.model = Transformer(run.group.model)
        self.n_classes = run.task.vocab_size
        self.run = run
        self.train = probe_data(run.task, extra_key(run, "probe-train"), self.cfg.train_examples)
        # The layer is chosen on a validation set (the eval pool, another draw); accuracies are read on the test set.
        validation = probe_data(run.task, extra_key(run, "probe-validation"), self.cfg.test_examples)
        test = probe_data(run.task, extra_key(run, "probe-test"), self.cfg.test_examples, pool="test")
        self.held = (jnp.stack([validation[0], test[0]]), jnp.stack([validation[1], test[1]], axis=1))

    def accuracies(self, params):
        """[sites, targets, 2] probe accuracy of one member on the validation and the test set."""
        x_train = site_features(self.model, params, self.train[0])
        tokens, labels = self.held
        x_held = jnp.stack([site_features(self.model, params, t) for t in tokens], axis=1)  # [sites, 2, N, d]
        fit = functools.partial(fit_probe, n_classes=self.n_classes, cfg=self.cfg)
        per_target = jax.vmap(fit, in_axes=(None, 0, None, 0))
        per_site = jax.vmap(per_target, in_axes=(0, None, 0, None))
        return per_site(x_train, self.train[1], x_held, labels)

    def records(self, params, members: pd.DataFrame, n_layers: int, prefix: str = ""):
        """(rows of `members` this process holds, their records)."""
        rows, acc = evaluate_members(self.run, self.accuracies, params, members)  # [members, sites, targets, 2]
        records = {}
        for site in range(acc.shape[1]):
            kind, step = ("resid", site) if site <= n_layers else ("attn", site - n_layers)
            for t, target in enumerate(TARGETS):
                records.setdefault(step, {})[f"{prefix}{kind}.{target}_acc"] = acc[:, site, t, 1]
                records[step][f"{prefix}{kind}.{target}_val_acc"] = acc[:, site, t, 0]
        return rows, records


def measure_probe(run) -> pd.DataFrame:
    prober = Prober(run)
    n_layers = run.group.model.n_layers
    frames = []
    for member_set in member_sets(run, LEVELS):
        prefix = "init_" if member_set.level == "init" else ""
        rows, records = prober.records(member_set.params, member_set.members, n_layers, prefix)
        frames.append(long_frame(member_set.members.iloc[rows], PHASE, sorted(records.items()),
                                 member_status(run, member_set, rows)))
    return pd.concat(frames, ignore_index=True)


def check_config(config, model) -> None:
    """The `probe` section."""
    for key in ("probe.train_examples", "probe.test_examples", "probe.steps"):
        positive_int(config, key)
    require(config.probe.fitter in ("softmax", "ridge"), "probe.fitter", "must be 'softmax' or 'ridge'")
    require(config.probe.ridge >= 0, "probe.ridge", "must be non-negative")
