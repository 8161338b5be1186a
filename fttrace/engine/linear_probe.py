"""The linear probe every study fits on frozen activations: standardised features, then one of three fitters.

  softmax   multinomial regression over `n_classes`, full-batch Adam for `steps` at `lr`, L2 penalty
            `weight_decay` x sum(w^2); read out by argmax (the PCFG/Tracr probes: fttrace/answer/evals/probe.py)
  logistic  one logit for binary labels (y in {0, 1}), the same Adam fit with the sigmoid loss; read out by its sign
            (the story and canary header probes: fttrace/lm/measure.py)
  ridge     the closed-form least-squares map onto one-hot labels, penalty `ridge` x N on the squared weights; the
            bias is each class's share: one linear solve instead of hundreds of steps

Everything is jnp and vmappable over members, sites and targets. The ridge system is solved by `spd_solve`, a
Cholesky factorisation written in jnp loops, not by `jnp.linalg.solve`: on a CPU, JAX's LAPACK kernels spread a
batch over the thread pool they already run on and wait for it, so two of them at once on a 2-core machine wait
for each other forever (observed: the default study's probes hung in two concurrent `lapack_strsm` calls).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

FITTERS = ("softmax", "logistic", "ridge")


def standardise(x_train, x_test):
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    return (x_train - mean) / std, (x_test - mean) / std


def predict(x_train, y_train, x_test, fitter: str, n_classes: int = 2, steps: int = 0, lr: float = 0.0,
            weight_decay: float = 0.0, ridge: float = 0.0):
    """The labels a probe fitted on (x_train [N, d], y_train [N]) gives x_test [M, d]: int [M]."""
    x_train, x_test = standardise(x_train, x_test)
    if fitter == "logistic":
        w, b = _adam(lambda p: optax.sigmoid_binary_cross_entropy(x_train @ p[0] + p[1], y_train).mean()
                     + weight_decay * jnp.square(p[0]).sum(), (jnp.zeros(x_train.shape[1]), jnp.zeros(())), steps, lr)
        return (x_test @ w + b > 0).astype(jnp.int32)
    if fitter == "ridge":
        one_hot = jax.nn.one_hot(y_train, n_classes)
        b = one_hot.mean(0)
        gram = x_train.T @ x_train + ridge * x_train.shape[0] * jnp.eye(x_train.shape[1])
        w = spd_solve(gram, x_train.T @ (one_hot - b))
    elif fitter == "softmax":
        w, b = _adam(lambda p: optax.softmax_cross_entropy_with_integer_labels(x_train @ p[0] + p[1], y_train).mean()
                     + weight_decay * jnp.sum(p[0] ** 2),
                     (jnp.zeros((x_train.shape[1], n_classes)), jnp.zeros((n_classes,))), steps, lr)
    else:
        raise ValueError(f"unknown probe fitter {fitter!r}; known: {', '.join(FITTERS)}")
    return (x_test @ w + b).argmax(-1)


def spd_solve(a, b):
    """x with a @ x = b, for a symmetric positive definite a [d, d] and b [d, k]: a = L L^T by Cholesky, then two
    triangular solves, each a loop of d vector steps (XLA's own loops and dots; no LAPACK call)."""
    d = a.shape[-1]

    def factor_column(j, lower):  # columns < j of `lower` are done, the rest are 0
        s = a[:, j] - lower @ lower[j]
        pivot = jnp.sqrt(s[j])
        return lower.at[:, j].set(jnp.where(jnp.arange(d) > j, s / pivot, 0.0).at[j].set(pivot))
    lower = jax.lax.fori_loop(0, d, factor_column, jnp.zeros_like(a))

    def forward(i, y):  # L y = b, rows < i of y done, the rest 0
        return y.at[i].set((b[i] - lower[i] @ y) / lower[i, i])
    y = jax.lax.fori_loop(0, d, forward, jnp.zeros_like(b))

    def backward(k, x):  # L^T x = y, rows > i of x done, the rest 0
        i = d - 1 - k
        return x.at[i].set((y[i] - lower[:, i] @ x) / lower[i, i])
    return jax.lax.fori_loop(0, d, backward, jnp.zeros_like(y))


def _adam(loss, params, steps: int, lr: float):
    """`params` after `steps` full-batch Adam steps on `loss`."""
    tx = optax.adam(lr)

    def step(carry, _):
        p, opt = carry
        updates, opt = tx.update(jax.grad(loss)(p), opt, p)
        return (optax.apply_updates(p, updates), opt), None
    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return params
