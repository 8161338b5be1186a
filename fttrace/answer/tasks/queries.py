"""Which queries each phase asks: the per-member probabilities over a task's `queries` (DataSpec.queries).

  pretraining  O_FT with the member's sampling prior; the rest spread evenly over O_PT and the other operands, so
               that with other operands a model must read the operand token to answer
  fine-tuning  O_FT only
  reFT         O_PT only (the capability to revive)
  control      the matched null: a pretraining member's own mix with every O_PT query asked about the control terminal instead (as
               frequent as O_PT, never asked otherwise): the same prior of O_FT, the same share of counting queries
               and the same strings, so the null differs from the member only in never having had C_PT; a task
               without a control query (Tracr) has none: its control asks O_FT and the other operands evenly
A task without other operands (or a Tracr task, which has none) folds their share into O_PT.
"""
from __future__ import annotations

import numpy as np


def n_others(task) -> int:
    return len(getattr(task, "other_operands", ()))


def pretraining(task, priors) -> np.ndarray:
    """[members, Q] for sampling priors `priors` [members]."""
    k = n_others(task)
    return np.stack([task.query_mix(pt=(1 - p) / (1 + k), ft=p, other=(1 - p) * k / (1 + k))
                     for p in np.asarray(priors, float)]).reshape(len(priors), len(task.queries))


def fine_tuning(task, members: int) -> np.ndarray:
    return np.tile(task.query_mix(ft=1.0), (members, 1))


def reft(task, members: int) -> np.ndarray:
    return np.tile(task.query_mix(pt=1.0), (members, 1))


def control(task, priors) -> np.ndarray:
    """[members, Q]: the never-had-C_PT control's mix for its lowest prior `priors` [members]: the matched null; a
    task without a control query (Tracr) trains it on the pretraining task without O_PT, evenly over O_FT and the
    other operands (O_FT alone when there are none)."""
    if "control" in task.queries:
        return matched_null(task, priors)
    k = n_others(task)
    return np.tile(task.query_mix(ft=1 / (1 + k), other=k / (1 + k)), (len(priors), 1))


def matched_null(task, priors) -> np.ndarray:
    """[members, Q]: `pretraining(task, priors)` with the O_PT share moved to the control query."""
    if "control" not in task.queries:
        raise ValueError("the task asks no control query: it has no matched null")
    mixes = pretraining(task, priors)
    pt, control = task.queries.index("pt"), task.queries.index("control")
    mixes[:, control], mixes[:, pt] = mixes[:, pt], 0.0
    return mixes
