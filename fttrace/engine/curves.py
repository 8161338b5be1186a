"""Reading a logged curve: the first step at which each member reaches its target (steps to revival in reverse
fine-tuning, steps to the pretrained feature rate in story recovery)."""
from __future__ import annotations

import numpy as np


def first_step_reaching(steps, values, target) -> np.ndarray:
    """Per member: the first of `steps` [S] at which `values` [S, members] >= `target` [members]; NaN where it never
    does (a NaN value or target never reaches)."""
    with np.errstate(invalid="ignore"):
        hit = np.asarray(values, np.float64) >= np.asarray(target, np.float64)[None]
    return np.where(hit.any(0), np.asarray(steps, np.float64)[hit.argmax(0)], np.nan)


def records_first_step(records, metric: str, target) -> np.ndarray:
    """`first_step_reaching` over a phase's records [(step, {metric: [members]}), ...]."""
    return first_step_reaching([step for step, _ in records], np.stack([m[metric] for _, m in records]), target)
