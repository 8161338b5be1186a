"""The default study (README's first command): the counter grid of `pcfg_counter.py` at the size of a 2-core CPU.

10 seeds x priors high and low = 20 pretraining members; each fine-tuned at the medium and large LR with the
shortcut off and on (C_Tr 0 and 1) to the criterion (3,000 steps at most): 80 fine-tuning members; then reFT
(1,500 steps) and its control, neuron pruning and its nulls, probes with a control target, attention change,
activation patching and the regime diagnostics. No downloads.

    fttrace run configs/default.py --workdir runs/default
    python -m analysis summary runs/default

Measured (`python -m analysis summary runs/default`), mean over 10 seeds [95% bootstrap CI], on the 2-core CPU
(20 min 47 s wall, cold compilation cache, nothing beside it):
  regime: holds, no cell flagged. Pretrained C_PT 1.00; pretrained test C_FT 0.99 at prior high, 0.32 [0.30, 0.33] at
    prior low (operand-blind level 0.27). Every member of every cell met the criterion (median stop step 1,050 / 400
    at medium / large LR, low prior, C_Tr 0). C_FT at C_Te 0 after fine-tuning at the low prior 0.92 [0.91, 0.93] /
    0.93 [0.92, 0.94] (C_Tr 0), 0.28-0.29 with C_Tr 1, where 87-90% of O_FT answers are the O_PT count.
  classes (80 members): kept 50% (every high-prior member), hidden wrapper 35% (19 of the 20 low-prior members at
    C_Tr 0, 9 at C_Tr 1), reuse 14% (11 of 20 at C_Tr 1), overwrite 1.
  nulls: T_prune = +0.032 (random-neuron gains mean +0.001, the control's targeted gain +0.005); T_reft = 150 steps;
    probe selectivity pretrained 0.41 [0.37, 0.44], fine-tuned 0.36, the control that never had C_PT 0.08
    [0.03, 0.13], untrained -0.08.
  reFT: a median 50 steps at both LRs against 500 for the control at the same LR (200 at x 10); log-rank p < 1e-5.
  claims: 1 (pruning revives beyond the random null) supported, +0.100 [+0.051, +0.154], p(Holm) 0.006; 3 (reFT
    faster than the control) supported, x7.11 [4.01, 11.18], p(Holm) 0.006; 2 (probe selectivity kept: fine-tuned
    >= 0.9 x the parent's) inconclusive, -0.002 [-0.025, +0.019], at its margin; 4a and 4c (weakening at the large
    LR) refuted, 4b supported (+0.011 [+0.004, +0.020], p(Holm) 0.043).
  An earlier run of the same commit on another 2-core machine (a different CPU, so XLA's floating point differs and
  the trajectories with it; bit-for-bit results hold on one machine) gave the same verdicts except 4b (inconclusive
  there), with claim 1 at +0.057 [+0.033, +0.086], claim 3 at x5.31 and hidden wrapper / reuse 31% / 18%.

The full grid is `configs/pcfg_counter.py` (10 seeds, three priors, three LRs, five C_Tr levels).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import pcfg_counter  # noqa: E402


def get_config():
    return pcfg_counter.get_config("small")
