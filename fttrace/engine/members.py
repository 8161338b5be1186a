"""Applying a per-member function over the member axis with bounded memory.

`vmap` over every member at once materialises every member's activations together; for evaluations on
thousands of held-out examples that is hundreds of MB per member. `map_members` vmaps over batches of
`batch` members and loops (`lax.map`) over the batches, so peak memory follows the batch, not the sweep.
"""
from __future__ import annotations

import jax


def map_members(fn, *trees, batch: int):
    """fn applied to each member (leading axis of every leaf of `trees`), `batch` members at a time."""
    n = jax.tree.leaves(trees)[0].shape[0]
    return jax.lax.map(lambda args: fn(*args), trees, batch_size=min(batch, n))
