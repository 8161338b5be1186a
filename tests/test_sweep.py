import pytest

from fttrace import config as config_lib
from fttrace.errors import UserError
from fttrace.answer.sweep import build_groups
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


@pytest.mark.slow
def test_pretraining_length_is_a_group_axis(tmp_path):
    import pandas as pd

    from fttrace.engine.runner import run_study
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


@pytest.mark.slow
def test_an_optimiser_hyperparameter_is_a_fine_tuning_axis_set_per_member():
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from fttrace.answer.sweep import optimizer_values
    from fttrace.engine.train import fan_out, init_members

    config = config_lib.load(SMOKE, ["sweep.seeds=1", "sweep.prior=('low',)", "sweep.spurious=(0.0,)",
                                     "sweep.finetune_optimizer.weight_decay=(0.0,0.5)",
                                     "sweep.finetune_optimizer.b2=0.95", "sweep.finetune_optimizer.warmup_steps=(4,)"])
    (group,) = build_groups(config)
    ft = group.finetune
    assert len(ft) == 2 and list(ft.finetune_weight_decay) == [0.0, 0.5] and set(ft.finetune_b2) == {0.95}
    # Each child's optimiser holds its own values, as a phase configured with them would.
    parent = init_members(group.model, config.pretrain, 0, [0], [1e-3])
    n = len(ft)
    state = fan_out(parent, np.zeros(n, np.int32), config.finetune, np.full(n, 1e-2), jnp.stack(
        [jax.random.PRNGKey(1)] * n), hyper=optimizer_values(ft, "finetune"))
    held = {name: optax.tree_utils.tree_get(state.opt_state, name) for name in ("weight_decay", "b1", "b2")}
    np.testing.assert_array_equal(held["weight_decay"], [0.0, 0.5])
    np.testing.assert_array_equal(held["b2"], np.float32([0.95, 0.95]))
    np.testing.assert_array_equal(held["b1"], np.float32([config.finetune.b1] * 2))
    np.testing.assert_array_equal(optax.tree_utils.tree_get(state.opt_state, "warmup_steps"), [4.0, 4.0])
    # ... and trains with them: the weight-decayed child equals a member of a phase whose weight decay is 0.5.
    from fttrace.model.transformer import Transformer
    from fttrace.answer.tasks.registry import build_task
    from fttrace.engine.train import AnswerObjective, DataSpec, QueryMix, train_steps
    task = build_task(config)
    data = lambda k: DataSpec(batch=QueryMix(queries=jnp.tile(task.query_mix(ft=1.0), (k, 1)),  # noqa: E731
                                             spurious=jnp.zeros(k)))
    steps = lambda phase: jax.jit(train_steps(Transformer(group.model), AnswerObjective(task), phase))  # noqa: E731
    trained, _ = steps(config.finetune)(state, data(n), None, jnp.int32(5))
    phase = config.finetune.copy_and_resolve_references()
    phase.update(weight_decay=0.5, b2=0.95, warmup_steps=4)
    alone = fan_out(parent, np.zeros(1, np.int32), phase, np.full(1, 1e-2), jnp.stack([jax.random.PRNGKey(1)]))
    alone, _ = steps(phase)(alone, data(1), None, jnp.int32(5))
    same = max(float(np.abs(a[1] - b[0]).max()) for a, b in zip(jax.tree.leaves(trained.params),
                                                                jax.tree.leaves(alone.params)))
    decayed = max(float(np.abs(a[1] - a[0]).max()) for a in jax.tree.leaves(trained.params))
    # Alike up to float rounding (which Adam's normalisation lifts to ~1e-5 on entries whose gradients are ~0, at
    # LR 1e-2), while the weight decay moves weights by hundreds of times as much.
    assert same < 1e-4 and decayed > 100 * same, (same, decayed)
    with pytest.raises(UserError, match="sweep.finetune_optimizer.momentum"):
        config_lib.load(SMOKE, ["sweep.finetune_optimizer.momentum=(0.9,)"])
    with pytest.raises(UserError, match="sweep.finetune_optimizer.warmup_steps.*longer than finetune.steps"):
        config_lib.load(SMOKE, ["finetune.steps=100", "sweep.finetune_optimizer.warmup_steps=(0,200)"])


@pytest.mark.slow
def test_an_optimiser_hyperparameter_is_a_pretraining_axis_down_to_the_reft_controls(tmp_path):
    import numpy as np

    import fttrace
    from fttrace.engine.runner import run_study
    from helpers import NO_EVALS, TINY
    config = config_lib.load(SMOKE, TINY + ["sweep.seeds=1", "sweep.pretrain_optimizer.weight_decay=(0.0,0.5)",
                                            "evals=('reft',)", "reft.control=True"])
    (group,) = build_groups(config)
    pt = group.pretrain
    assert list(pt.pretrain_weight_decay) == [0.0, 0.5] and list(pt.member) == ["pt0", "pt1"]
    assert list(group.finetune.pretrain_weight_decay) == [0.0, 0.5]  # children carry their parent's setting
    run_study(config, tmp_path / "swept", quiet=True)
    swept = fttrace.open(tmp_path / "swept")
    members = swept.members
    controls = members[members.phase == "control_pretrain"]
    assert sorted(controls.pretrain_weight_decay) == [0.0, 0.5]  # a control per pretraining setting
    # The decayed member is the member of a run whose pretraining weight decay is 0.5; the other is not.
    fixed = config_lib.load(SMOKE, TINY + ["sweep.seeds=1", NO_EVALS, "pretrain.weight_decay=0.5"])
    run_study(fixed, tmp_path / "fixed", quiet=True)
    alone = fttrace.open(tmp_path / "fixed").params("pt0")["unembed"]["kernel"]
    decayed, plain = (swept.params(m)["unembed"]["kernel"] for m in ("pt1", "pt0"))
    assert np.abs(decayed - alone).max() < 1e-4 < np.abs(plain - alone).max()
    with pytest.raises(UserError, match="sweep.pretrain_optimizer.momentum"):
        config_lib.load(SMOKE, ["sweep.pretrain_optimizer.momentum=(0.9,)"])


def test_zipped_axes_vary_together():
    zipped = ["sweep.seeds=2", "sweep.finetune_lr=('small','medium','large')", "sweep.spurious=(0.0,1.0)",
              "sweep.finetune_optimizer.weight_decay=(0.0,0.1,0.2)"]
    (product,) = build_groups(config_lib.load(SMOKE, zipped))
    together = "sweep.zip=('finetune_lr','finetune_optimizer.weight_decay')"
    (group,) = build_groups(config_lib.load(SMOKE, zipped + [together]))
    assert len(product.finetune) == 4 * 3 * 2 * 3 and len(group.finetune) == 4 * 3 * 2
    pairs = set(zip(group.finetune.finetune_lr_name, group.finetune.finetune_weight_decay))
    assert pairs == {("small", 0.0), ("medium", 0.1), ("large", 0.2)}  # LR i with weight decay i
    children = group.finetune[group.finetune.parent == "pt0"]
    assert list(children.member) == [f"ft{k}" for k in range(6)] and list(children.spurious) == [0.0, 1.0] * 3
    # Each zipped cell is the product's cell with the same values, member for member but for the ids.
    same = product.finetune.merge(group.finetune, on=["parent", "finetune_lr", "spurious", "finetune_weight_decay"])
    assert len(same) == len(group.finetune)


@pytest.mark.parametrize("zipped, message", [
    ("('finetune_lr',)", "must name two or more different fine-tuning axes"),
    ("('finetune_lr','prior')", "'prior' is not a fine-tuning axis (one of finetune_lr, spurious)"),
    ("('finetune_lr','spurious')", "its axes must have as many values each (finetune_lr: 1, spurious: 2)"),
])
def test_a_bad_zip_is_refused(zipped, message):
    with pytest.raises(UserError, match="sweep.zip") as error:
        config_lib.load(SMOKE, [f"sweep.zip={zipped}"])
    assert message in str(error.value)
