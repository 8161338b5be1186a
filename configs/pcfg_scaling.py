"""Does wrapper emergence depend on scale? The counter study of `pcfg_counter.py` with width, depth and pretraining
length as axes (each combination is a group of its own: shapes split the sweep).

d_model 32 / 64 x layers 1 / 2 x pretraining 1,000 / 2,000 steps = 8 groups; in each, 4 seeds at the low prior
(where C_FT must be learnt in fine-tuning), fine-tuned at the medium and large LRs with C_Tr 0 and 1 to the
criterion, then every measurement of the counter study. The analysis regresses each class of the taxonomy on
log10 LR, C_Tr and the scale columns (d_model, n_layers, pretrain_steps) and tables the classes per group with
`--by`.

    fttrace run configs/pcfg_scaling.py --workdir runs/pcfg_scaling
    python -m analysis summary runs/pcfg_scaling --by d_model --by n_layers --by pretrain_steps
"""
import ml_collections
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import pcfg_counter  # noqa: E402


def get_config(arg=None):
    c = pcfg_counter.get_config()
    c.model.d_mlp = 0  # 4 x d_model in every group
    c.sweep.update(seeds=4, prior=("low",), finetune_lr=("medium", "large"), spurious=(0.0, 1.0))
    c.sweep.shapes = ml_collections.ConfigDict(dict(d_model=(32, 64), n_layers=(1, 2), pretrain_steps=(1000, 2000)))
    c.finetune.steps = 4000
    if arg is not None:
        raise ValueError(f"unknown variant {arg!r}; this config has none")
    return c
