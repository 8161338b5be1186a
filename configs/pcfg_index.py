"""The reference study's index grid: does fine-tuning learn a wrapper over the pretrained indexer?

The same grid, model and schedule as `pcfg_counter.py`, on the index task: the answer is the position of the
first occurrence of the operand (or NONE). Pretraining indexes O_PT (t0) and sees O_FT (t2) with a high / medium
/ low prior; fine-tuning indexes O_FT; the shortcut places one O_PT right after the first O_FT.

    fttrace run configs/pcfg_index.py --workdir runs/pcfg_index

Use `configs/pcfg_index.py:small` for a 3-seed version.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import pcfg_counter  # noqa: E402


def get_config(arg=None):
    c = pcfg_counter.get_config(arg)
    c.task.name = "index"
    return c
