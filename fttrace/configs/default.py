"""The default study (README's first command): the counter grid of `pcfg_counter.py` at the size of a 2-core CPU.

12 seeds x priors high and low = 24 pretraining members (2,000 steps at LR 5e-3). The high prior's members are
pretrained and measured only: their pretraining already teaches C_FT (the regime's check), so fine-tuning them would
stop at step 0. Each low-prior member is fine-tuned at the medium and large LR (pretraining LR / 30 and / 10) with the
shortcut off and on (C_Tr 0 and 1) to the criterion (3,000 steps at most): 48 fine-tuning members; then reFT (1,500
steps, evaluated at 1, 2, 3, 5, 7, ... steps early) and its controls; the matched nulls (one per seed, pretrained on
the low prior's own query mix with O_PT asked about an unasked terminal instead, then fine-tuned like each real
member: 48, which set T_prune and T_reft and measure their false-positive rates) and the planted wrappers (each real
member's fine-tuning redone with only the last layer's output side free: 48, the instruments' power); neuron
pruning, ridge probes (layer chosen on a validation set) with a control target, attention change, activation
patching and the regime diagnostics, read on test sets that no stopping rule saw. No downloads.

    fttrace run default --workdir runs/default
    python -m analysis summary runs/default

Why this size: with fewer than seven seeds the Holm-adjusted claims could not reject at all (a one-sided Wilcoxon
over n seeds has p >= 2^-n; Holm's first threshold is 0.05 / 6); fewer than 10 seeds leave fewer than 40 matched
nulls to measure the instruments' false-positive rates; with 1,200 pretraining steps instead of 2,000 seeds fell
outside the regime. What it finds, on which machine, in how long, and which verdicts a change of machine flips:
`RESULTS.md` beside this file (`python benchmarks/results_page.py WORKDIR ...` writes it from the workdirs of
`fttrace run default` with each of XLA's code generations and `python -m analysis compare`).

The full grid is `configs/pcfg_counter.py` (10 seeds, three priors, three LRs, five C_Tr levels).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import pcfg_counter  # noqa: E402


def get_config():
    return pcfg_counter.get_config("small")
