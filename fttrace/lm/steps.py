"""Next-token training of LM members, vmapped over the member axis.

State, optimiser and per-member learning rates are those of `fttrace.train` (TrainState, `make_optimizer`
with the LR injected as state, the flat parameter vector, the freeze of a member that turns non-finite). What
differs from the answer-position tasks is the batch (documents of the member's data range, `corpus.py`) and the
loss (every position). A chunk of training is one jitted call whose step count is an argument, so a phase
evaluated at uneven steps (0, 10, 30, 100, ...) compiles its training once.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fttrace.lm.corpus import DeviceCorpus, sample_windows
from fttrace.members import map_members
from fttrace.model import Transformer
from fttrace.train import TrainState, apply_gradients


def lm_loss(model: Transformer, params, inputs, targets, weights):
    """Mean next-token cross-entropy over the positions with weight 1."""
    logits = model.apply({"params": params}, inputs)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return (losses * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def lm_train_step(model: Transformer, phase, corpus: DeviceCorpus, state: TrainState, lo, hi):
    """One step of one member on documents [lo, hi). Returns the new state and the loss (NaN once frozen)."""
    key, k_batch = jax.random.split(state.key)
    inputs, targets, weights = sample_windows(k_batch, corpus, lo, hi, phase.batch_size, model.cfg.max_len)
    loss, grads = jax.value_and_grad(lambda p: lm_loss(model, p, inputs, targets, weights))(state.params)
    return apply_gradients(phase, state, key, loss, grads)


def train_chunk(model: Transformer, phase):
    """(state, corpus, lo [M], hi [M], steps) -> (state, mean training loss per member [M]), to be jitted.

    `steps` may be a traced integer: one compiled program serves chunks of any length. With
    `phase.member_batch` > 0, each step runs that many members at a time (bounded activation memory).
    """
    member_batch = phase.get("member_batch", 0)

    def run(state: TrainState, corpus: DeviceCorpus, lo, hi, steps):
        one = lambda s, lo, hi: lm_train_step(model, phase, corpus, s, lo, hi)  # noqa: E731

        def body(_, carry):
            state, total = carry
            if member_batch:
                state, loss = map_members(one, state, lo, hi, batch=member_batch)
            else:
                state, loss = jax.vmap(one)(state, lo, hi)
            return state, total + loss
        members = lo.shape[0]
        state, total = jax.lax.fori_loop(0, steps, body, (state, jnp.zeros(members, jnp.float32)))
        return state, total / jnp.maximum(steps, 1)
    return run


def eval_loss(model: Transformer, params, inputs, targets, weights, member_batch: int = 0):
    """Held-out loss of every member on one fixed batch (`member_batch` members at a time; 0: all)."""
    one = lambda p: lm_loss(model, p, inputs, targets, weights)  # noqa: E731
    if member_batch:
        return map_members(one, params, batch=member_batch)
    return jax.vmap(one)(params)
