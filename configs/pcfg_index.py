"""The reference study's index grid: does fine-tuning learn a wrapper over the pretrained indexer?

The same grid, model and schedule as `pcfg_counter.py`, on the index task: the answer is the position of the
first occurrence of the operand (or NONE). Pretraining indexes O_PT (t0) and sees O_FT (t2) with a high / medium
/ low prior; fine-tuning indexes O_FT; the shortcut places one O_PT right after the first O_FT.

    fttrace run configs/pcfg_index.py --workdir runs/pcfg_index

Use `configs/pcfg_index.py:small` for a 3-seed version.

Measured on the idle 2-core CPU: 32 min wall (2,370 CPU-s). Mean over 10 seeds per cell: pretrained C_PT 0.89
(prior high), 0.98, 0.99 (low); lost only at the large LR (0.16-0.58 after fine-tuning); pruning <= 15 neurons gains
+0.07 to +0.14 there and revives 0-1 of 10 members per cell; probes read O_PT's position at 0.88-0.99 (random init
0.68); reFT for 300 steps lifts C_PT to 0.84-0.93 against 0.23 for the control at the same LR. With a 3,000-step reFT
(`--config.sweep.finetune_lr="('large',)" --config.reft.steps=3000`) every large-LR member reaches 0.95 x its
pretrained C_PT, in 320-560 steps on average; the control needs a 10x larger LR to do so (525 steps; at the same LR
1 of 10 in 3,000 steps).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import pcfg_counter  # noqa: E402


def get_config(arg=None):
    c = pcfg_counter.get_config(arg)
    c.task.name = "index"
    return c
