"""The default study (README's first command): the counter grid of `pcfg_counter.py` at the size of a 2-core CPU.

8 seeds x priors high and low = 16 pretraining members; each fine-tuned at the medium and large LR with the
shortcut off and on (C_Tr 0 and 1) to the criterion (3,000 steps at most): 64 fine-tuning members; then reFT
(1,500 steps) and its control, pruning and its nulls, probes with a control target, attention change, activation
patching and the regime diagnostics. No downloads.

    fttrace run configs/default.py --workdir runs/default
    python -m analysis summary runs/default

The full grid is `configs/pcfg_counter.py` (10 seeds, three priors, three LRs, five C_Tr levels).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import pcfg_counter  # noqa: E402


def get_config():
    return pcfg_counter.get_config("small")
