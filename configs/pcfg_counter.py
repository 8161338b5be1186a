"""The reference study's counter grid: does fine-tuning learn a wrapper over the pretrained counter?

Pretrain a counter of O_PT (t0) whose pretraining data asks about O_FT (t2) with a high / medium / low sampling
prior, then fine-tune every pretrained member to count O_FT at small / medium / large LR (pretraining LR / 1000,
/ 100, / 10) with the spurious shortcut off or on (C_Tr = 0 or 1): 10 seeds x 3 priors = 30 pretraining members,
x 3 LRs x 2 shortcut strengths = 180 fine-tuning members, one group.

    fttrace run configs/pcfg_counter.py --workdir runs/pcfg_counter

The model and schedule are fttrace's choices (not published by the study), sized so that the whole grid with
every evaluation runs on a 2-core CPU: d_model 32, 2 layers, 4 heads, MLP 128, batch 16, AdamW, 800 pretraining
steps (cosine, 80 warm-up), 300 fine-tuning and 300 reFT steps (constant LR).
Use `configs/pcfg_counter.py:small` for a 3-seed version of the same grid.

Measured on the idle 2-core CPU: 40 min wall (2,935 CPU-s; 210 members, plus 180 reFT members and the control).
Mean over 10 seeds per cell [95% bootstrap CI]: pretrained C_PT 0.99-1.00; C_PT after fine-tuning is kept at the
small LR (0.99-1.00) and at the medium LR without the shortcut (0.94-1.00), lost with it at prior high (0.41 [0.31,
0.51]) and at the large LR (0.35-0.44 without, 0.44-0.70 with the shortcut). Pruning <= 15 of 256 MLP neurons
(best level) brings it back most of the way where the shortcut drove fine-tuning (large LR, priors medium/low:
0.70 -> 0.90, 0.54 -> 0.87) but not without it (large LR: +0.05 to +0.14). Probes read the count of O_PT at 0.93-1.00
from every fine-tuned model (a randomly initialised one: 0.79). reFT (300 steps at LR / 10) reaches 0.95 x the
pretrained C_PT in 28-68 steps after the large LR with the shortcut (10/10 each), in 50-225 steps by 1-5 of 10 without;
the control that never had C_PT reaches it in 1 of 60 runs. With a 3,000-step budget (--config.reft.steps=3000,
medium and large LR) every fine-tuned member reaches it, the 44 that had lost C_PT in 50-1,100 steps (mean 414),
while the control at the same LRs reaches it in 0 of 10 (1e-6) and 4 of 10 (1e-5, at ~2,700 steps); only at 10 x
the LR (1e-4) all 10, in 440 steps on average.
"""
from fttrace.defaults import pcfg_config


def get_config(arg=None):
    c = pcfg_config()
    c.task.name = "counter"
    c.model.update(d_model=32, n_layers=2, n_heads=4, d_mlp=128)
    c.pretrain.update(steps=800, batch_size=16, eval_every=100, warmup_steps=80)
    c.finetune.update(steps=300, batch_size=16, eval_every=50)
    c.reft.update(steps=300, batch_size=16, eval_every=25)
    c.sweep.seeds = 10
    if arg == "small":
        c.sweep.seeds = 3
        c.pretrain.update(steps=600, eval_every=100, warmup_steps=60)
        c.finetune.update(steps=200, eval_every=50)
        c.reft.update(steps=200)
        c.eval.examples = 512
        # The evaluations dominate a run this small: score pruning on 256 sequences with a 50-step learned mask,
        # and fit probes on 512 sequences for 150 steps (the full grid keeps the defaults).
        c.prune.update(examples=256, mask_steps=50)
        c.probe.update(train_examples=512, steps=150)
    elif arg is not None:
        raise ValueError(f"unknown variant {arg!r}; known: small")
    return c
