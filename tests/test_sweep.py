import pytest

from fttrace import config as config_lib
from fttrace.errors import UserError
from fttrace.sweep import build_groups
from helpers import SMOKE


def test_fan_out_maps_every_fine_tuning_member_to_its_parent():
    config = config_lib.load(SMOKE, ["sweep.seeds=3", "sweep.prior=('high','low',0.5)",
                                     "sweep.finetune_lr=('small','large',3e-4)", "sweep.spurious=(0.0,0.5,1.0)"])
    (group,) = build_groups(config)
    pt, ft = group.pretrain, group.finetune
    assert len(pt) == 3 * 3 and len(ft) == len(pt) * 3 * 3
    assert pt.member.is_unique and ft.member.is_unique
    for _, row in ft.iterrows():
        parent = pt.iloc[row.parent_index]
        assert row.parent == parent.member
        for col in ("seed", "pretrain_lr", "prior", "prior_name"):
            assert row[col] == parent[col]
    # Named values resolve: priors through task.priors, LRs relative to the parent's pretraining LR.
    assert set(pt.prior) == {config.task.priors.high, config.task.priors.low, 0.5}
    lrs = set(zip(ft.finetune_lr_name, ft.finetune_lr.round(12)))
    assert lrs == {("small", round(1e-3 * 1e-3, 12)), ("large", round(1e-3 * 1e-1, 12)), ("", 3e-4)}
    # Every (pretraining member, fine-tuning cell) pair appears exactly once.
    assert ft.groupby(["parent", "finetune_lr", "spurious"]).size().eq(1).all()


def test_shape_axes_split_groups_with_globally_unique_members():
    config = config_lib.load(SMOKE, ["sweep.shapes.d_model=(16,32)", "sweep.seeds=2"])
    groups = build_groups(config)
    assert [g.model.d_model for g in groups] == [16, 32]
    members = [m for g in groups for m in list(g.pretrain.member) + list(g.finetune.member)]
    assert len(members) == len(set(members))
    assert all((g.pretrain.d_model == g.model.d_model).all() for g in groups)


def test_unknown_shape_field_is_refused():
    with pytest.raises(UserError, match="sweep.shapes.width"):
        config_lib.load(SMOKE, ["sweep.shapes.width=(16,32)"])


def test_pretraining_length_is_a_group_axis(tmp_path):
    import pandas as pd

    from fttrace.pipeline import run_study
    from helpers import NO_EVALS, TINY
    config = config_lib.load(SMOKE, TINY + [NO_EVALS, "sweep.shapes.pretrain_steps=(10,30)"])
    groups = build_groups(config)
    assert [g.phase(config, "pretrain").steps for g in groups] == [10, 30]
    assert groups[0].phase(config, "finetune") is config.finetune  # other phases keep the config's budget
    assert config.pretrain.steps == 20  # the config itself is untouched
    frame = pd.read_parquet(run_study(config, tmp_path / "run", quiet=True))
    pretrain = frame[frame.phase == "pretrain"]
    assert pretrain.groupby("pretrain_steps").step.max().to_dict() == {10: 10, 30: 30}
    assert set(frame[frame.phase == "finetune"].pretrain_steps) == {10, 30}
    with pytest.raises(UserError, match="sweep.shapes.pretrain_steps"):
        config_lib.load(SMOKE, TINY + ["sweep.shapes.pretrain_steps=(15,)"])  # not a multiple of eval_every
