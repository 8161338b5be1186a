"""The default study (README's first command): the counter grid of `pcfg_counter.py` at the size of a 2-core CPU.

8 seeds x priors high and low = 16 pretraining members (1,200 steps at LR 5e-3); each fine-tuned at the medium and
large LR (pretraining LR / 30 and / 10) with the shortcut off and on (C_Tr 0 and 1) to the criterion (3,000 steps at
most): 64 fine-tuning members; then reFT (1,500 steps) and its control, neuron pruning and its nulls, ridge probes
with a control target, attention change, activation patching and the regime diagnostics. No downloads.

    fttrace run configs/default.py --workdir runs/default
    python -m analysis summary runs/default

Measured (`python -m analysis summary runs/default`), mean over 8 seeds [95% bootstrap CI], on the 2-core CPU with
nothing beside it: 7 min 42 s wall with an empty compilation cache (as on a fresh machine; programs that recur
within the run, such as the reFT and control chunks, compile once): pretraining 90 s, fine-tuning 93 s, reFT and its
control 122 s, pruning 58 s, probes 40 s, attention 10 s, patching 20 s, regime 21 s.
  regime: holds, no cell flagged. Pretrained C_PT 0.99-1.00; pretrained test C_FT 0.96 [0.93, 0.99] at prior high,
    0.29 [0.26, 0.32] at prior low (operand-blind level 0.31). Every member of every cell met the criterion (median
    stop step 600 / 300 at medium / large LR, low prior, C_Tr 0; 0 at the high prior). C_FT at C_Te 0 after
    fine-tuning at the low prior 0.91 [0.90, 0.93] / 0.95 [0.93, 0.97] (C_Tr 0), 0.31-0.32 with C_Tr 1, where
    92-96% of O_FT answers are the O_PT count.
  classes (64 members): kept 48% (31 of the 32 high-prior members), hidden wrapper 39% (15 of the 16 low-prior
    members at C_Tr 0, 9 at C_Tr 1), reuse 11% (7 at C_Tr 1), overwrite 1.
  nulls: T_prune = +0.019 (random-neuron gains mean -0.0005, the control's targeted gain +0.006); T_reft = 150 steps;
    probe selectivity pretrained 0.37 [0.33, 0.40], fine-tuned 0.37, the control that never had C_PT 0.05
    [-0.00, 0.11], untrained 0.01.
  reFT: a median 50 steps at both LRs against 300 for the control at the same LR (150 at x 10); log-rank p < 2e-5.
  claims (1-3 read the members whose C_PT fine-tuning suppressed): 3 (reFT faster than the control) supported, x5.20
    [3.46, 7.25], p(Holm) 0.023; 1 (pruning revives beyond the random null) inconclusive, +0.049 [+0.002, +0.091],
    p 0.039, p(Holm) 0.16, power 0.24 at its SESOI +0.05 (the effect sits at the SESOI); 2 (probe selectivity kept:
    fine-tuned >= 0.9 x the parent's) inconclusive, +0.037 [-0.015, +0.107]; 4a and 4c (weakening at the large LR)
    refuted, 4b inconclusive.

The full grid is `configs/pcfg_counter.py` (10 seeds, three priors, three LRs, five C_Tr levels).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import pcfg_counter  # noqa: E402


def get_config():
    return pcfg_counter.get_config("small")
