"""The reference study's counter grid: does fine-tuning learn a wrapper over the pretrained counter?

Pretrain a counter of O_PT (t0) whose pretraining data asks about O_FT (t2) with a high / medium / low sampling
prior, then fine-tune every pretrained member to count O_FT at small / medium / large LR (pretraining LR / 1000,
/ 100, / 10) with the spurious shortcut off or on (C_Tr = 0 or 1): 10 seeds x 3 priors = 30 pretraining members,
x 3 LRs x 2 shortcut strengths = 180 fine-tuning members, one group.

    fttrace run configs/pcfg_counter.py --workdir runs/pcfg_counter

The model and schedule are fttrace's choices (not published by the study): d_model 64, 2 layers, 4 heads,
MLP 256, batch 32, AdamW, 1,000 pretraining steps (cosine, 100 warm-up) and 500 fine-tuning steps (constant).
Use `configs/pcfg_counter.py:small` for a 3-seed version of the same grid.
"""
from fttrace.defaults import pcfg_config


def get_config(arg=None):
    c = pcfg_config()
    c.task.name = "counter"
    c.pretrain.update(steps=1000, batch_size=32, eval_every=100, warmup_steps=100)
    c.finetune.update(steps=500, batch_size=32, eval_every=50)
    c.sweep.seeds = 10
    if arg == "small":
        c.sweep.seeds = 3
        c.pretrain.update(steps=600, eval_every=100, warmup_steps=60)
        c.finetune.update(steps=300, eval_every=50)
        c.eval.examples = 512
    elif arg is not None:
        raise ValueError(f"unknown variant {arg!r}; known: small")
    return c
