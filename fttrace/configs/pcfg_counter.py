"""The reference study's counter grid, in the regime where its question exists.

Pretrain counters that must read the operand token (queries about O_PT = t0 and another operand t3, and about
O_FT = t2 with a high / medium / low sampling prior), then fine-tune every pretrained member to count O_FT at a
small / medium / large LR with the shortcut in a fraction C_Tr = 0 / 0.25 / 0.5 / 0.75 / 1 of its sequences,
each member until its held-out accuracy on its own fine-tuning distribution reaches 0.9 (or the budget ends);
then reverse fine-tuning at one shared LR, its control (pretrained without O_PT queries), pruning with its
random-k and control nulls, probes with a control target, attention change against a seed-to-seed null,
activation patching from each member's parent, and the regime diagnostics. 10 seeds x 3 priors = 30 pretraining
members, x 3 LRs x 5 C_Tr = 450 fine-tuning members, one group.

    fttrace run configs/pcfg_counter.py --workdir runs/pcfg_counter
    python -m analysis summary runs/pcfg_counter

The choices (none is published by the study), each measured with exploratory runs of this grid's settings (the
command with `--config.` overrides; `python -m analysis summary` prints the numbers):
  - model d32, 2 layers, 4 heads, MLP 128; pretraining 2,000 steps of 32 sequences at LR 3e-3 (cosine, 100 warm-up),
    one other operand (t3): pretrained C_PT 1.00 at every prior (with `--config.task.other_operands="(3,5,6)"`
    d32 reached only 0.77-0.88);
  - priors 0.2 / 0.05 / 0.005; the transition is sharp (with three other operands at d48-d64,
    `--config.sweep.prior="(0.1,0.03)"` gave pretrained C_FT 0.94-0.96 and 0.35-0.38);
  - fine-tuning LRs pretraining LR / 100, / 30, / 10: the study's / 1000 (`--config.sweep.finetune_lr="(3e-6,)"`)
    met the criterion in 0 of 4 members without the shortcut within 3,000 steps; budget 8,000 steps of 16 sequences,
    evaluated every 50;
  - reFT at pretraining LR / 10 for every cell, 3,000 steps; the control at that LR and x 10.
Evaluation strings are held out of every training stream (10% of the grammar's strings, by hash).

Measured on the 2-core CPU (at low priority beside other work, killed and resumed across sessions, so no wall
time is given; `python -m analysis summary runs/pcfg_counter` prints every number below). Mean over 10 seeds [95%
bootstrap CI]:
  regime: holds, no cell flagged. Pretrained C_PT 1.00 at every prior; pretrained C_FT 0.98 [0.97, 0.99] / 0.62
    [0.43, 0.80] / 0.31 [0.30, 0.33] at prior high / medium / low (operand-blind level 0.27); every member of every
    cell met the criterion (median stop step at small / medium / large LR: 3,825 / 1,150 / 425 at the low prior,
    C_Tr 0; 0 at the high prior, whose pretrained C_FT already meets it); C_FT without the shortcut after
    fine-tuning at the medium and low priors 0.86-0.95 for C_Tr <= 0.5, 0.71-0.85 at 0.75, and at C_Tr 1 0.56-0.58
    (medium) and 0.29-0.30 (low) (81-87% of its O_FT answers are the O_PT count).
  classes (450 members): kept 48% [43, 53] (every high-prior member; 40-50% at the medium prior), hidden wrapper 46%
    [41, 51] (90-100% of the low-prior members for C_Tr < 1), reuse 5% (40-60% at the low prior with C_Tr 1),
    overwrite 5 members.
  nulls: T_prune = +0.008 (random-neuron gains mean -0.002, the control's targeted gain +0.005); T_reft = 150 steps.
  reFT: the suppressed C_PT revives in a median 50 steps at every LR; the control that never had it needs 500 (same
    LR) or 150 (x 10); log-rank p < 1e-9 per LR; Cox hazard ratios of revival: log10 LR 0.64 [0.46, 0.89], log10
    prior 1.36 [1.03, 1.80], C_Tr 2.70 [1.73, 4.23].
  claims (over the members whose C_PT fine-tuning suppressed): 1 (pruning revives beyond the random null) supported,
    +0.076 [+0.053, +0.099], power 0.81 at +0.05, p(Holm) 0.006; 2 (probe selectivity kept) inconclusive, -0.026
    [-0.086, +0.026]; 3 (reFT faster than the control) supported, x7.15 [4.83, 10.19], power 0.71 at x2, p(Holm)
    0.006; 4a and 4c (weakening at the large LR) supported (+0.018, x1.14), 4b inconclusive.
  probes: selectivity (C_PT target minus control target) pretrained 0.38 [0.36, 0.42], fine-tuned 0.35, reFT 0.40,
    the control that never had C_PT 0.07 [0.02, 0.12], untrained -0.10. Patching the parent into a low-prior member
    (C_Tr 0, small LR) brings C_PT back by +0.65 [0.57, 0.72], most often at the second block.
`configs/pcfg_counter.py:small` is the default study (README's first command; why it is this size: `configs/default.py`;
its numbers: `configs/RESULTS.md`): 12 seeds, priors high and low, LRs medium and large, C_Tr 0 and 1, pretraining
2,000 steps at LR 5e-3 (the fine-tuning and reFT LRs scale with it), fine-tuning evaluated every 100 steps on 256
held-out sequences per set, ridge probes, 128 patching inputs.
"""
from fttrace.answer.defaults import pcfg_config

VARIANTS = {"small": "the default study: 12 seeds, 2 priors x 2 LRs x C_Tr 0 and 1, shorter budgets (2-core CPU)"}


def get_config(arg=None):
    c = pcfg_config()
    c.task.update(name="counter", other_operands=(3,), priors=dict(high=0.2, medium=0.05, low=0.005))
    c.model.update(d_model=32, n_layers=2, n_heads=4, d_mlp=128)
    c.pretrain.update(steps=2000, batch_size=32, eval_every=500, warmup_steps=100)
    c.finetune.update(steps=8000, batch_size=16, eval_every=50, target=0.9,
                      lr_scale=dict(small=1e-2, medium=1 / 30, large=1e-1))
    c.reft.update(steps=3000, batch_size=16, eval_every=50, lr_mode="shared", lr_scale=0.1)
    c.sweep.update(seeds=10, pretrain_lr=(3e-3,), spurious=(0.0, 0.25, 0.5, 0.75, 1.0))
    c.eval.examples = 512
    c.prune.update(examples=256, random_draws=8)
    c.probe.update(train_examples=512, test_examples=512, steps=200)
    c.attention.examples = 128
    if arg == "small":
        c.sweep.update(seeds=12, prior=("high", "low"), finetune_lr=("medium", "large"), spurious=(0.0, 1.0),
                       pretrain_lr=(5e-3,), finetune_priors=("low",))
        c.pretrain.update(steps=2000, eval_every=400)
        c.finetune.update(steps=3000, eval_every=100)
        c.eval.examples = 256
        c.reft.steps = 1500
        # The evaluations dominate a run this small: fewer pruning levels and random draws, no weight or learned-mask
        # pruning (the taxonomy and the claims read neuron pruning), closed-form (ridge) probes, half the patching
        # inputs.
        c.prune.update(neuron_ks=(0, 1, 2, 3, 5, 8, 10, 15), head_ks=(0, 1, 2), random_draws=4, weight_fractions=(),
                       mask_budgets=())
        c.probe.fitter = "ridge"
        c.patch.examples = 128
    elif arg is not None:
        raise ValueError(f"unknown variant {arg!r}; known: small")
    return c
