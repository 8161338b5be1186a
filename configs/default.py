"""The default study (README's first command): the counter grid of `pcfg_counter.py` at the size of a 2-core CPU.

8 seeds x priors high and low = 16 pretraining members (1,200 steps at LR 5e-3); each fine-tuned at the medium and
large LR (pretraining LR / 30 and / 10) with the shortcut off and on (C_Tr 0 and 1) to the criterion (3,000 steps at
most): 64 fine-tuning members; then reFT (1,500 steps) and its control, neuron pruning and its nulls, ridge probes
with a control target, attention change, activation patching and the regime diagnostics. No downloads.

    fttrace run configs/default.py --workdir runs/default
    python -m analysis summary runs/default

Measured (`python -m analysis summary runs/default`), mean over 8 seeds [95% bootstrap CI], on the 2-core CPU with
nothing beside it: 4 min 37 s wall (manifest `wall_s` 277; 4 min 42 s for the whole command) with an empty
compilation cache (as on a fresh machine; programs that recur within the run, such as the reFT and control chunks,
compile once); `fttrace status runs/default`: pretraining 48 s, fine-tuning 57 s, reFT with its control 73 s (the
control's training 47 s of it), pruning 38 s, probes 24 s, regime 15 s, patching 12 s, attention 6 s.
  regime: holds, no cell flagged. Pretrained C_PT 1.00; pretrained test C_FT 0.98 [0.98, 0.99] at prior high,
    0.31 [0.28, 0.34] at prior low (operand-blind level 0.31). Every member of every cell met the criterion (median
    stop step 850 / 350 at medium / large LR, low prior, C_Tr 0; 0 at the high prior). C_FT at C_Te 0 after
    fine-tuning at the low prior 0.93 [0.91, 0.94] / 0.94 [0.92, 0.96] (C_Tr 0), 0.32-0.33 with C_Tr 1, where
    89-92% of O_FT answers are the O_PT count.
  classes (64 members): kept 52% [40, 63] (every high-prior member), hidden wrapper 36% [25, 48] (all 16 low-prior
    members at C_Tr 0, 7 of 16 at C_Tr 1), reuse 12% (8 of the 16 at C_Tr 1).
  nulls: T_prune = +0.016 (random-neuron gains mean +0.0004, the control's targeted gain +0.014); T_reft = 250 steps;
    probe selectivity pretrained 0.33 [0.30, 0.37], fine-tuned 0.32, the control that never had C_PT 0.08
    [0.06, 0.10], untrained 0.01.
  reFT: a median 50 steps at both LRs against 350 for the control at the same LR (150 at x 10); log-rank p < 3e-5.
  claims (1-3 read the members whose C_PT fine-tuning suppressed): 3 (reFT faster than the control) supported, x5.40
    [4.70, 6.19], power 1.00 at x2, p(Holm) 0.023; 2 (probe selectivity kept) refuted, -0.050 [-0.104, +0.001];
    1 (pruning revives beyond the random null) inconclusive, +0.067 [+0.024, +0.111], p 0.016 but p(Holm) 0.078,
    power 0.14 at its SESOI +0.05 with 8 seeds; 4a and 4b inconclusive, 4c refuted.

The full grid is `configs/pcfg_counter.py` (10 seeds, three priors, three LRs, five C_Tr levels).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import pcfg_counter  # noqa: E402


def get_config():
    return pcfg_counter.get_config("small")
