"""What the LM study kinds measure on every member: gaps between two sampled shares with their noise, decoded
samples, and linear probes on the residual stream of prompts.

  gaps     proportion_gap: p - q of two shares of independent draws and its binomial standard error;
           (the regime test of the LM studies, a gap above 1.96 standard errors, is analysis.schema.beyond_noise:
           the engine decides with the one the analysis reads the results with)
  probes   per layer (the residual stream after the embeddings and after each block), a logistic probe on the mean
           of a prompt's last `positions` hidden states, trained on frozen activations (`probe_members`); its
           accuracy on held-out prompts
The story study's own measures (feature rates, the header and story probe sets) are in `fttrace/stories/measure.py`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from fttrace.engine import linear_probe
from fttrace.lm.tokenizer import Tokenizer
from fttrace.model.transformer import Transformer


@dataclasses.dataclass(frozen=True)
class Prompts:
    tokens: np.ndarray   # int32 [N, P]: BOS + header, PAD after
    lengths: np.ndarray  # int32 [N]
    asks: np.ndarray     # bool [N]: the header asks for F


def proportion_gap(p, q, n_p, n_q):
    """p - q, two shares of n_p and n_q independent draws (a model's rate when asked and when not; its extraction of
    canaries and of controls), and the difference's binomial standard error."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    return p - q, np.sqrt(p * (1 - p) / n_p + q * (1 - q) / n_q)


def decode_samples(tokenizer: Tokenizer, samples: np.ndarray) -> list[str]:
    """Sampled token rows [..., T] -> texts (PAD, BOS and EOS dropped), flattened in row order."""
    rows = np.asarray(samples).reshape(-1, np.shape(samples)[-1])
    return [tokenizer.decode(row) for row in rows]


def header_features(model: Transformer, params, tokens, lengths, positions: int):
    """Mean residual stream over each header's last `positions` tokens: [L+1, N, d]."""
    _, inter = model.apply({"params": params}, tokens, capture=True)
    index = jnp.arange(tokens.shape[1])[None, :]
    window = (index < lengths[:, None]) & (index >= lengths[:, None] - positions)
    weights = window / window.sum(1, keepdims=True)
    return jnp.einsum("lntd,nt->lnd", inter["residual"].astype(jnp.float32), weights)


def probe_accuracy(x_train, y_train, x_test, y_test, steps: int, lr: float):
    """Held-out accuracy of a logistic probe (full-batch Adam on standardised features)."""
    return probe_correct(x_train, y_train, x_test, y_test, steps, lr).mean()


def probe_correct(x_train, y_train, x_test, y_test, steps: int, lr: float):
    """Whether the logistic probe fitted on (x_train, y_train) gets each held-out example right: bool [N_test]."""
    predicted = linear_probe.predict(x_train, y_train, x_test, "logistic", steps=steps, lr=lr, weight_decay=1e-3)
    return (predicted > 0) == (y_test > 0.5)


def probe_members(model: Transformer, params, prompts: Prompts, train: np.ndarray, positions: int, steps: int,
                  lr: float, per_example: bool = False, targets=None):
    """Probe accuracy per member and layer [M, L+1]; `train` marks the prompts the probes are fitted on.

    per_example: instead, whether each held-out prompt (in order) is read right: bool [M, L+1, held-out].
    targets: label sets [K, N] to probe on the same features instead of `prompts.asks`: [M, K, L+1].
    """
    tokens, lengths = jnp.asarray(prompts.tokens), jnp.asarray(prompts.lengths)
    labels = jnp.asarray(prompts.asks if targets is None else targets, jnp.float32)
    tr, te = np.flatnonzero(train), np.flatnonzero(~train)
    fit = probe_correct if per_example else probe_accuracy

    def read(x, y):
        return fit(x[tr], y[tr], x[te], y[te], steps, lr)

    def one(p):
        feats = header_features(model, p, tokens, lengths, positions)
        if targets is None:
            return jax.vmap(lambda x: read(x, labels))(feats)
        return jax.vmap(lambda y: jax.vmap(lambda x: read(x, y))(feats))(labels)
    return jax.lax.map(one, params)
