"""The reference study's index grid, in the regime of `pcfg_counter.py`: the same model, priors, schedule, grid and
measurements on the index task, whose answer is the position of the first occurrence of the operand (or NONE).

O_PT is t1 and O_FT t0 (pretraining also asks about t3): the shortcut — O_PT right after the first O_FT, so that
index(O_FT) = index(O_PT) - 1 — then holds on about 28% of the grammar's strings, so shortcut sequences are drawn
from the grammar itself (with t0 and t2 it would hold on almost none).

    fttrace run configs/pcfg_index.py --workdir runs/pcfg_index
    python -m analysis summary runs/pcfg_index

`configs/pcfg_index.py:small` is the default-size form (`pcfg_counter.py:small`, the default study) on this task.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import pcfg_counter  # noqa: E402


def get_config(arg=None):
    c = pcfg_counter.get_config(arg)
    c.task.update(name="index", pt_operand=1, ft_operand=0, other_operands=(3,))
    return c
