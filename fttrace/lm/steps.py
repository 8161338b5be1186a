"""The language models' objective: next-token loss at every position of documents from the member's data range.

State, optimiser, per-member learning rates, the phase loop and the freeze of a member that turns non-finite are
the engine's (`fttrace.engine.train`); what differs from the answer-position tasks is the batch (documents of the
member's range of the resident corpus, `corpus.py`) and the loss (every position). A chunk's step count is traced, so a
phase evaluated at uneven steps (0, 10, 30, 100, ...) compiles its training once.
"""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import optax

from fttrace.lm.corpus import sample_windows
from fttrace.model.transformer import Transformer


@flax.struct.dataclass
class DocumentRange:
    """A member's training data: documents [lo, hi) of the resident corpus (int32 per member)."""
    lo: jax.Array
    hi: jax.Array


def lm_loss(model: Transformer, params, inputs, targets, weights):
    """Mean next-token cross-entropy over the positions with weight 1."""
    logits = model.apply({"params": params}, inputs)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return (losses * weights).sum() / jnp.maximum(weights.sum(), 1.0)


class NextTokenObjective:
    """Every-position LM loss on windows of the member's DocumentRange. Shared inputs: {"corpus": DeviceCorpus,
    "validation": (inputs, targets, weights)}, the fixed held-out batch whose loss is each member's `val_loss`, and
    optionally "held_out": {name: batch}, more such batches (their losses: `val_loss.<name>`)."""

    def __init__(self, max_len: int):
        self.max_len = max_len

    def loss(self, model, params, key, batch: DocumentRange, batch_size: int, shared):
        inputs, targets, weights = sample_windows(key, shared["corpus"], batch.lo, batch.hi, batch_size, self.max_len)
        return lm_loss(model, params, inputs, targets, weights), None

    @staticmethod
    def evaluate(model, params, shared) -> dict:
        held_out = shared.get("held_out", {})
        losses = {f"val_loss.{name}": lm_loss(model, params, *batch) for name, batch in held_out.items()}
        return {"val_loss": lm_loss(model, params, *shared["validation"]), **losses}
