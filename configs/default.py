"""The default study (README's first command): the counter grid of `pcfg_counter.py`, scaled down.

3 seeds x 3 priors = 9 pretraining members, x 3 fine-tuning LRs x 2 shortcut strengths = 54 fine-tuning
members; 600 pretraining, 200 fine-tuning and 200 reFT steps, with every evaluation (lighter pruning and probe
fits than the full grid). No downloads; under 10 minutes on a 2-core CPU.

    fttrace run configs/default.py --workdir runs/default

The full grid is `configs/pcfg_counter.py` (10 seeds, longer phases).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import pcfg_counter  # noqa: E402


def get_config():
    return pcfg_counter.get_config("small")
