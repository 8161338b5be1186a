"""The shared grid of `tracr_counter.py` and `tracr_max.py` (not a study itself).

Variants: none (the study: 8 seeds x 3 LRs x 2 C_Tr) and "tiny" (the test form, seconds per phase: 2 seeds x
4 LRs x 2 C_Tr = 16 fine-tuning members in one jitted program, 20 fine-tuning steps, small evaluations).
"""
from fttrace.answer.defaults import tracr_config

VARIANTS = {"tiny": "the test form: 16 fine-tuning members, 20 steps per phase"}


def tracr_study(program: str, ft_target: str, arg=None):
    c = tracr_config(program, ft_target)
    c.prune.update(examples=256, mask_examples=128)
    c.probe.update(train_examples=512, test_examples=256)
    if arg == "tiny":
        c.finetune.lr_scale.huge = 30.0
        c.sweep.update(seeds=2, finetune_lr=("small", "medium", "large", "huge"), spurious=(0.0, 0.5))
        c.finetune.update(steps=20, eval_every=10, batch_size=16)
        c.pretrain.update(steps=20, eval_every=10, batch_size=16)
        c.reft.update(steps=20, eval_every=10, batch_size=16, control_lr_factors=(1.0,))
        c.eval.examples = 128
        c.probe.update(steps=30, train_examples=128, test_examples=64)
        c.prune.update(examples=64, mask_steps=5, mask_examples=32, weight_fractions=(0.0, 1e-2))
        c.attention.examples = 32
        c.patch.examples = 32
        c.components.examples = 32
    elif arg is not None:
        raise ValueError(f"unknown variant {arg!r}; known: tiny")
    return c
