"""The default study (README's first command): the counter grid of `pcfg_counter.py` at the size of a 2-core CPU.

10 seeds x priors high and low = 20 pretraining members; each fine-tuned at the medium and large LR with the
shortcut off and on (C_Tr 0 and 1) to the criterion (3,000 steps at most): 80 fine-tuning members; then reFT
(1,500 steps) and its control, neuron pruning and its nulls, probes with a control target, attention change,
activation patching and the regime diagnostics. No downloads.

    fttrace run configs/default.py --workdir runs/default
    python -m analysis summary runs/default

Measured (`python -m analysis summary runs/default`), mean over 10 seeds [95% bootstrap CI]:
  regime: holds, no cell flagged. Pretrained C_PT 1.00; pretrained C_FT 0.99 at prior high, 0.29 [0.27, 0.31] at
    prior low (operand-blind level 0.27). Every cell met the criterion (90% at medium LR, low prior, C_Tr 0; 100%
    elsewhere; median stop step 1,200 / 400 at medium / large LR there). C_FT at C_Te 0 after fine-tuning at the low
    prior 0.89 [0.84, 0.93] / 0.93 [0.91, 0.94] (C_Tr 0), 0.30-0.32 with C_Tr 1, where 79-84% of O_FT answers are the
    O_PT count.
  classes (80 members): kept 50% (every high-prior member), hidden wrapper 31% (19 of the 20 low-prior members at
    C_Tr 0, 6 at C_Tr 1), reuse 18% (14 of 20 at C_Tr 1), no-op 1.
  nulls: T_prune = +0.024 (random-neuron gains mean -0.002, the control's targeted gain +0.009); T_reft = 300 steps;
    probe selectivity pretrained 0.42 [0.39, 0.46], fine-tuned 0.38, the control that never had C_PT 0.07
    [0.04, 0.10], untrained -0.08.
  reFT: a median 100 steps at both LRs against 450 for the control at the same LR (150 at x 10); log-rank p < 1e-5.
  claims: 1 (pruning revives beyond the random null) supported, +0.057 [+0.033, +0.086], power 1.00 at +0.05,
    p(Holm) 0.006; 3 (reFT faster than the control) supported, x5.31 [4.10, 6.88], power 0.93 at x2, p(Holm) 0.006;
    2 (probe selectivity kept: fine-tuned >= 0.9 x the parent's) inconclusive, -0.001 [-0.024, +0.023], exactly at
    its margin: kept by the kept and reuse members, halved in the hidden wrappers (0.24-0.25 against their parents'
    0.47, still far above the control's 0.07); 4a and 4c (weakening at the large LR) refuted, 4b inconclusive.

The full grid is `configs/pcfg_counter.py` (10 seeds, three priors, three LRs, five C_Tr levels).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import pcfg_counter  # noqa: E402


def get_config():
    return pcfg_counter.get_config("small")
