"""The default PCFG study config that every `configs/pcfg_*.py` and `configs/smoke.py` starts from.

None of these numbers is published by the reference study; each is a documented, overridable choice.
"""
from __future__ import annotations

import ml_collections


def pcfg_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # base of every member's PRNG key (each member adds its own `seed`)

    c.task = dict(
        name="counter",  # counter | index
        grammar="default",  # "default" (fttrace.tasks.pcfg.DEFAULT_RULES) or a rules table of the same form
        n_terminals=10,
        data_len=27,  # data slots per sequence; the default grammar's strings are 1-27 terminals long
        pt_operand=0,  # O_PT: terminal t0 (about 12% of terminals)
        ft_operand=2,  # O_FT: terminal t2 (about 12% of terminals)
        # Sampling priors of O_FT during pretraining, by name (sweep.prior may also hold plain numbers).
        priors=dict(high=0.2, medium=0.02, low=0.002),
        spurious_test=0.0,  # shortcut strength C_Te of the C_FT evaluation set (0: the true capability)
    )
    c.model = dict(
        d_model=64, n_layers=2, n_heads=4, head_dim=0, d_mlp=256, layer_norm=True, causal=True,
        activation="gelu", use_bias=True, dtype="float32",
        vocab_size=0,  # 0: the task's vocabulary size
        max_len=0,  # 0: the task's sequence length
    )
    c.pretrain = dict(steps=2000, batch_size=64, eval_every=200, schedule="cosine", warmup_steps=100,
                      weight_decay=0.01, grad_clip=1.0, b1=0.9, b2=0.999)
    c.finetune = dict(steps=1000, batch_size=64, eval_every=100, schedule="constant", warmup_steps=0,
                      weight_decay=0.01, grad_clip=1.0, b1=0.9, b2=0.999,
                      # The study's convention: fine-tuning LR = pretraining LR x scale.
                      lr_scale=dict(small=1e-3, medium=1e-2, large=1e-1))
    c.sweep = dict(
        seeds=10, seed_offset=0,
        pretrain_lr=(1e-3,),
        prior=("high", "medium", "low"),
        finetune_lr=("small", "medium", "large"),
        spurious=(0.0, 1.0),  # C_Tr: fraction of fine-tuning sequences that carry the shortcut
        shapes=ml_collections.ConfigDict(),  # model fields swept across groups, e.g. d_model=(64, 128)
    )
    c.eval = dict(examples=1024, seed=1234)
    c.evals = ()
    return ml_collections.ConfigDict(c)
