"""Each evaluation measures what it claims, on constructed cases; then all four run as phases of a study."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from fttrace.evals import attention, probe, prune
from fttrace.evals.reft import steps_to_threshold
from fttrace.model import ModelConfig, Transformer, init_params
from fttrace.pipeline import run_study
from fttrace.sweep import build_groups
from fttrace.tasks.registry import build_task
from fttrace.train import DataSpec, PhaseLoop, answer_loss, eval_sets_for, init_members
from helpers import tiny_config


def test_probe_reads_a_planted_linear_feature_and_shuffled_labels_stay_at_chance():
    key = jax.random.PRNGKey(0)
    n, d, classes = 1200, 16, 5
    y = jax.random.randint(key, (n,), 0, classes)
    directions = jax.random.normal(jax.random.PRNGKey(1), (classes, d))
    # The label is planted along one direction per class in an otherwise random "residual stream".
    x = jax.random.normal(jax.random.PRNGKey(4), (n, d)) + 6.0 * directions[y] / jnp.linalg.norm(
        directions[y], axis=-1, keepdims=True)
    cfg = types.SimpleNamespace(lr=0.05, weight_decay=0.0, steps=300)
    acc = probe.fit_probe(x[:800], y[:800], x[800:], y[800:], n_classes=classes, cfg=cfg)
    assert acc > 0.95
    shuffled = jax.random.permutation(jax.random.PRNGKey(2), y)
    chance = probe.fit_probe(x[:800], shuffled[:800], x[800:], shuffled[800:], n_classes=classes, cfg=cfg)
    majority = np.bincount(np.asarray(shuffled[800:])).max() / 400
    assert chance < majority + 0.08


def test_attention_mass_of_a_hand_built_uniform_pattern_is_exact():
    config = tiny_config()
    task = build_task(config)
    cfg = ModelConfig(vocab_size=task.vocab.size, max_len=task.seq_len, d_model=16, n_layers=2, n_heads=2,
                      d_mlp=32, layer_norm=False)
    params = init_params(cfg, jax.random.PRNGKey(0))
    # Zero queries: every score is 0, so causal attention from the last position is uniform over all T keys.
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.zeros_like(x) if "query" in jax.tree_util.keystr(path) else x, params)
    tokens, _ = task.sample(jax.random.PRNGKey(3), 64, 0.5, 0.0)
    targets = attention.attention_targets(task, tokens)
    mass = attention.attention_mass(Transformer(cfg), params, tokens, targets)  # [L, H, 3]
    t = tokens.shape[1]
    data = np.asarray(tokens[:, 2:-1])
    expected = [1 / t,
                (data == task.vocab.terminal(task.pt_operand)).sum(1).mean() / t,
                (data == task.vocab.terminal(task.ft_operand)).sum(1).mean() / t]
    np.testing.assert_allclose(mass, np.broadcast_to(expected, mass.shape), rtol=1e-5)


def test_steps_to_threshold_reads_the_first_step_that_reaches_it():
    curve = pd.DataFrame({"member": ["a"] * 4 + ["b"] * 4, "metric": "pt_acc", "step": [0, 10, 20, 30] * 2,
                          "value": [0.2, 0.5, 0.96, 0.99, 0.1, 0.2, 0.3, 0.4]})
    got = steps_to_threshold(curve, {"a": 1.0, "b": 1.0}, 0.95)
    assert got["a"] == 20 and np.isnan(got["b"])


@pytest.fixture(scope="module")
def trained_counter():
    """A small counter model trained for a few hundred steps, and everything a Pruner needs around it."""
    config = tiny_config("model.d_model=32", "model.d_mlp=64", "model.n_layers=2", "pretrain.steps=300",
                         "pretrain.eval_every=300", "pretrain.batch_size=32", "eval.examples=256",
                         "prune.examples=256", "prune.neuron_ks=(0,1,2,3,4,6)", "prune.tolerance=0.0")
    (group,) = build_groups(config)
    task = build_task(config)
    eval_sets = eval_sets_for(task, config.eval.examples, config.eval.seed)
    state = init_members(group.model, config.pretrain, 0, [0], [3e-3])
    state, _ = PhaseLoop(group.model, task, config.pretrain, eval_sets).run(state, DataSpec(
        p_ft_operand=jnp.zeros(1), spurious=jnp.zeros(1)))
    return config, group, task, eval_sets, state


def add_wrapper(params, neurons, token, strength=30.0):
    """'Fine-tune' by hand: neurons of the last MLP fire always and push the output towards `token`."""
    last = f"block_{max(int(k.split('_')[1]) for k in params if k.startswith('block_'))}"
    mlp = params[last]["mlp"]
    direction = params["unembed"]["kernel"][:, token]
    fc_in = dict(mlp["fc_in"], kernel=mlp["fc_in"]["kernel"].at[:, neurons].set(0.0),
                 bias=mlp["fc_in"]["bias"].at[neurons].set(3.0))
    fc_out = dict(mlp["fc_out"], kernel=mlp["fc_out"]["kernel"].at[neurons].set(
        strength * direction / jnp.linalg.norm(direction)))
    return {**params, last: {**params[last], "mlp": {"fc_in": fc_in, "fc_out": fc_out}}}


def silence(params, neurons):
    last = f"block_{max(int(k.split('_')[1]) for k in params if k.startswith('block_'))}"
    mlp = params[last]["mlp"]
    fc_out = dict(mlp["fc_out"], kernel=mlp["fc_out"]["kernel"].at[neurons].set(0.0))
    return {**params, last: {**params[last], "mlp": {**mlp, "fc_out": fc_out}}}


def test_pruning_finds_and_removes_a_known_wrapper(trained_counter):
    config, group, task, eval_sets, state = trained_counter
    base = jax.tree.map(lambda x: x[0], state.params)
    neurons = jnp.asarray([5, 17, 40])
    pretrained = silence(base, neurons)  # the capability without the wrapper's units
    finetuned = add_wrapper(pretrained, neurons, task.vocab.none)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), pretrained, finetuned)
    run = types.SimpleNamespace(config=config, group=group, task=task, eval_sets=eval_sets,
                                states={"pretrain": types.SimpleNamespace(params=stacked)})
    pruner = prune.Pruner(run)
    curves = jax.jit(pruner.curves)(finetuned)
    ks = list(config.prune.neuron_ks)
    pt_acc = np.asarray(curves["neurons"]["pt_acc"])
    model = Transformer(group.model)
    original = float(answer_loss(model, pretrained, *eval_sets["pt"])[1])
    assert original > 0.5 and pt_acc[0] < 0.2  # the wrapper hides the capability
    np.testing.assert_allclose(pt_acc[ks.index(3)], original, atol=1e-6)  # three units bring it back exactly
    kr = prune.k_revive(ks, pt_acc[None], np.asarray([original]), 0.0)
    assert kr[0] <= 3
    # The learned mask removes the wrapper too once its budget covers three units.
    assert np.asarray(curves["mask"]["pt_acc"]).max() >= original - 0.02


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny study whose fine-tuning LR is ~0: fine-tuned members equal their parents."""
    workdir = tmp_path_factory.mktemp("evals") / "run"
    config = tiny_config("sweep.seeds=2", "sweep.finetune_lr=(1e-30,)")
    return pd.read_parquet(run_study(config, workdir, quiet=True))


def test_reft_of_an_unchanged_model_meets_the_threshold_at_step_0(study):
    summary = study[(study.phase == "reft") & (study.metric == "steps_to_threshold")]
    assert len(summary) == 2 and (summary.value == 0).all()
    rf = study[study.phase == "reft"]
    assert set(rf.parent) == set(study[study.phase == "finetune"].member)
    assert rf.member.str.startswith("rft").all() and rf.reft_lr.notna().all()


def test_control_is_explicit_in_the_results(study):
    cp = study[study.phase == "control_pretrain"]
    cr = study[study.phase == "control_reft"]
    assert cp.member.nunique() == 2 and (cp.prior_name == "control").all()
    assert set(cr.parent) == set(cp.member)
    assert set(cr.control_lr_factor) == {1.0, 10.0}
    reft_lr = study[study.phase == "reft"].reft_lr.iloc[0]
    np.testing.assert_allclose(sorted(set(cr.reft_lr)), [reft_lr, 10 * reft_lr])
    assert {"steps_to_threshold", "reached"} <= set(cr.metric)


def test_probe_and_attention_cover_every_level_of_the_run_tree(study):
    for phase in ("probe", "attention"):
        members = set(study[study.phase == phase].member)
        assert any(m.startswith("pt") for m in members) and any(m.startswith("ft") for m in members)
        assert any(m.startswith("rft") for m in members)
    probe_rows = study[study.phase == "probe"]
    assert set(probe_rows.step) == {0, 1}  # embeddings and one block
    assert {"resid.pt_acc", "resid.ft_acc", "resid.shuffled_acc", "attn.pt_acc", "init_resid.pt_acc"} <= \
        set(probe_rows.metric)


def test_prune_rows_for_fine_tuned_members_and_pretrained_control(study):
    rows = study[study.phase == "prune"]
    assert any(m.startswith("pt") for m in rows.member) and any(m.startswith("ft") for m in rows.member)
    for method in ("neurons", "heads", "weights", "mask", "neurons_remove_ft"):
        assert f"{method}.pt_acc" in set(rows.metric) and f"{method}.k_revive" in set(rows.metric)
    # An unchanged model needs no pruning to have its pretrained C_PT.
    ft_kr = rows[rows.member.str.startswith("ft") & (rows.metric == "neurons.k_revive")].value
    assert (ft_kr == 0).all()
