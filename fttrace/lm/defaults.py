"""The phase section of the LM studies (`configs/stories_twist.py`, `configs/canary_unlock.py`).

None of these numbers is published by the reference study; each is a documented, overridable choice.
"""
from __future__ import annotations

import ml_collections


def lm_phase(steps: int, batch_size: int, lr: float = 0.0, schedule: str = "constant", warmup_steps: int = 0,
             eval_steps=None) -> ml_collections.ConfigDict:
    """One training phase of an LM study: AdamW as in the reference study's TinyStories models (weight decay
    0.1, betas (0.9, 0.95), grad clip 1.0); measured at each of `eval_steps` (default: start and end)."""
    return ml_collections.ConfigDict(dict(
        steps=steps, batch_size=batch_size, lr=lr, schedule=schedule, warmup_steps=warmup_steps,
        eval_steps=tuple(eval_steps or (0, steps)), b1=0.9, b2=0.95, weight_decay=0.1, grad_clip=1.0,
        member_batch=0))  # members trained together (0: as many as fit the device, train.train_member_batch)
