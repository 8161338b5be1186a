"""Which queries each phase asks: the per-member probabilities over a task's `queries` (DataSpec.queries).

  pretraining  O_FT with the member's sampling prior; the rest spread evenly over O_PT and the other operands, so
               that with other operands a model must read the operand token to answer
  fine-tuning  O_FT only
  reFT         O_PT only (the capability to revive)
  control      the pretraining task without O_PT: evenly over O_FT and the other operands (O_FT alone when there
               are none), so the control learns everything the members learn except C_PT
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


def control(task, members: int) -> np.ndarray:
    k = n_others(task)
    return np.tile(task.query_mix(ft=1 / (1 + k), other=k / (1 + k)), (members, 1))
