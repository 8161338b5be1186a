"""Each evaluation measures what it claims, on constructed cases, and reads its null; then all of them run as
phases of a study."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from fttrace.answer.evals import attention, patch, probe, prune, regime
from fttrace.answer.evals.common import masked_accuracy
from fttrace.answer.reft import steps_to_threshold
from fttrace.model.transformer import ModelConfig, Transformer, init_params
from fttrace.engine.runner import run_study
from fttrace.answer.sweep import build_groups
from fttrace.answer.tasks import queries
from fttrace.answer.tasks.registry import build_task
from fttrace.engine.train import AnswerObjective, PhaseLoop, answer_loss, data_spec, eval_sets_for, init_members
from helpers import tiny_config


@pytest.mark.parametrize("fitter", ["softmax", "ridge"])
def test_probe_reads_a_planted_linear_feature_and_its_control_target_stays_at_chance(fitter):
    key = jax.random.PRNGKey(0)
    n, d, classes = 1200, 16, 5
    y = jax.random.randint(key, (n,), 0, classes)
    directions = jax.random.normal(jax.random.PRNGKey(1), (classes, d))
    # The label is planted along one direction per class in an otherwise random "residual stream".
    x = jax.random.normal(jax.random.PRNGKey(4), (n, d)) + 6.0 * directions[y] / jnp.linalg.norm(
        directions[y], axis=-1, keepdims=True)
    cfg = types.SimpleNamespace(fitter=fitter, lr=0.05, weight_decay=0.0, steps=300, ridge=1e-3)
    acc = probe.fit_probe(x[:800], y[:800], x[800:], y[800:], n_classes=classes, cfg=cfg)
    assert acc > 0.95
    # The control target: same distribution as the target, independent of it, and not encoded in the features.
    control = jax.random.randint(jax.random.PRNGKey(2), (n,), 0, classes)
    chance = probe.fit_probe(x[:800], control[:800], x[800:], control[800:], n_classes=classes, cfg=cfg)
    majority = np.bincount(np.asarray(control[800:])).max() / 400
    assert chance < majority + 0.08
    assert acc - chance > 0.7  # the selectivity of a probe that reads the target


def test_the_ridge_solve_is_exact_and_calls_no_lapack_kernel():
    from fttrace.engine.linear_probe import spd_solve
    x = jax.random.normal(jax.random.PRNGKey(0), (512, 24))
    gram = x.T @ x + 0.5 * jnp.eye(24)
    b = jax.random.normal(jax.random.PRNGKey(1), (24, 5))
    expected = np.linalg.solve(np.asarray(gram, np.float64), np.asarray(b, np.float64))
    np.testing.assert_allclose(jax.jit(spd_solve)(gram, b), expected, rtol=1e-4, atol=1e-6)
    batched = jax.jit(jax.vmap(spd_solve))
    np.testing.assert_allclose(batched(jnp.stack([gram, 2 * gram]), jnp.stack([b, b]))[1], expected / 2, rtol=1e-4,
                               atol=1e-6)
    # JAX's LAPACK kernels wait on the thread pool they run on: two at once deadlock a 2-core CPU. None here.
    compiled = batched.lower(jnp.stack([gram, gram]), jnp.stack([b, b])).compile().as_text()
    assert "custom-call(" not in compiled and "custom_call_target" not in compiled
    lapack = jax.jit(jax.vmap(jnp.linalg.solve)).lower(jnp.stack([gram, gram]), jnp.stack([b, b])).compile().as_text()
    assert "custom_call_target" in lapack  # what the check would see: jnp.linalg.solve's LAPACK call


def test_attention_mass_of_a_hand_built_uniform_pattern_is_exact():
    config = tiny_config()
    task = build_task(config)
    cfg = ModelConfig(vocab_size=task.vocab.size, max_len=task.seq_len, d_model=16, n_layers=2, n_heads=2,
                      d_mlp=32, layer_norm=False)
    params = init_params(cfg, jax.random.PRNGKey(0))
    # Zero queries: every score is 0, so causal attention from the last position is uniform over all T keys.
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.zeros_like(x) if "query" in jax.tree_util.keystr(path) else x, params)
    tokens, _ = task.sample(jax.random.PRNGKey(3), 64, task.query_mix(pt=0.5, ft=0.5), 0.0)
    weights = attention.answer_attention(Transformer(cfg), params, tokens)
    mass = attention.attention_mass(weights, task.attention_masks(tokens))  # [L, H, 3]
    t = tokens.shape[1]
    data = np.asarray(tokens[:, 2:-1])
    expected = [1 / t,
                (data == task.vocab.terminal(task.pt_operand)).sum(1).mean() / t,
                (data == task.vocab.terminal(task.ft_operand)).sum(1).mean() / t]
    np.testing.assert_allclose(mass, np.broadcast_to(expected, mass.shape), rtol=1e-5)
    # Total variation: 0 against itself; against attention all on one key, 1 - 1/T.
    np.testing.assert_allclose(attention.total_variation(weights, weights), 0.0, atol=1e-7)
    one_key = jnp.zeros_like(weights).at[..., 0].set(1.0)
    np.testing.assert_allclose(attention.total_variation(weights, one_key), 1 - 1 / t, rtol=1e-5)


def test_seed_partners_pair_each_pretrained_member_with_the_next_seed_of_its_cell():
    members = pd.DataFrame({"seed": [0, 0, 1, 1, 2, 2, 0], "prior": [0.2, 0.02] * 3 + [0.5],
                            "pretrain_lr": 1e-3})
    np.testing.assert_array_equal(attention.seed_partners(members), [2, 3, 4, 5, 0, 1, -1])


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
    state, _ = PhaseLoop(group.model, AnswerObjective(task), config.pretrain, eval_sets).run(state, data_spec(
        queries.reft(task, 1), np.zeros(1)))
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
    original = float(answer_loss(model, pretrained, *pruner.accuracy_sets["pt"])[1])  # on the pruner's test set
    assert original > 0.5 and pt_acc[0] < 0.2  # the wrapper hides the capability
    np.testing.assert_allclose(pt_acc[ks.index(3)], original, atol=1e-6)  # three units bring it back exactly
    kr = prune.k_revive(ks, pt_acc[None], np.asarray([original]), 0.0)
    assert kr[0] <= 3
    # The learned mask removes the wrapper too once its budget covers three units.
    assert np.asarray(curves["mask"]["pt_acc"]).max() >= original - 0.02
    # The ranking names the wrapper's units first (flat index: last layer x neurons per layer + neuron).
    offset = (group.model.n_layers - 1) * group.model.mlp
    assert set(np.asarray(curves["units"]["neurons"][:3]).tolist()) == {offset + 5, offset + 17, offset + 40}
    # Removing the located units takes C_FT's wrapper answer away as C_PT comes back.
    ft_acc = np.asarray(curves["neurons"]["ft_acc"])
    assert ft_acc[ks.index(3)] != ft_acc[0]


def test_random_pruning_of_an_untouched_model_gains_nothing_on_average(trained_counter):
    config, group, task, eval_sets, state = trained_counter
    base = jax.tree.map(lambda x: x[0], state.params)
    run = types.SimpleNamespace(config=config, group=group, task=task, eval_sets=eval_sets,
                                states={"pretrain": types.SimpleNamespace(params=state.params)})
    curve = np.asarray(jax.jit(prune.Pruner(run)._random_curve)(base, {"pt": eval_sets["pt"]})["pt_acc"])
    gains = curve[1:] - curve[0]
    assert gains.mean() <= 0.005 and np.abs(gains).max() < 0.1, curve
    # The draws do remove k units: with every MLP neuron removed the counter is gone.
    every = config.copy_and_resolve_references()
    every.prune.update(neuron_ks=(0, group.model.n_layers * group.model.mlp), weight_fractions=(), mask_budgets=())
    run.config = every
    pruner = prune.Pruner(run)
    curve = np.asarray(jax.jit(pruner._random_curve)(base, {"pt": eval_sets["pt"]})["pt_acc"])
    no_mlp = {**pruner.masks, "neurons": jnp.zeros_like(pruner.masks["neurons"])}
    without = float(masked_accuracy(pruner.model, base, {"pt": eval_sets["pt"]}, no_mlp)["pt_acc"])
    assert curve[1] == without and curve[1] < curve[0], (curve, without)
    # Empty weight fractions and mask budgets leave those methods out.
    assert set(jax.eval_shape(pruner.curves, base)) == {"neurons", "heads", "neurons_remove_ft", "neurons_random",
                                                        "units"}


def test_patching_the_parent_back_into_a_hand_made_wrapper_locates_it(trained_counter):
    config, group, task, eval_sets, state = trained_counter
    parent = jax.tree.map(lambda x: x[0], state.params)
    child = add_wrapper(parent, jnp.asarray([5, 17, 40]), task.vocab.none)  # the wrapper sits in the last MLP
    run = types.SimpleNamespace(config=config, group=group, eval_sets=eval_sets)
    patcher = patch.Patcher(run)
    acc = jax.jit(patcher.accuracies)((child, parent))["pt"]
    by_site = dict(zip(patcher.names, np.asarray(acc)))
    last = group.model.n_layers - 1
    model = Transformer(group.model)
    original = float(answer_loss(model, parent, *(x[:config.patch.examples] for x in eval_sets["pt"]))[1])
    assert by_site["none"] < 0.2 < original
    np.testing.assert_allclose(by_site[f"L{last}.mlp"], original, atol=1e-6)  # the parent's MLP undoes it
    np.testing.assert_allclose(by_site[f"L{last}.block"], original, atol=1e-6)
    assert by_site["L0.h0"] < 0.2 and by_site["L0.mlp"] < 0.2  # elsewhere a patch changes nothing that matters


def test_output_function_identifies_an_operand_blind_counter(trained_counter):
    """The counter trained on O_PT queries only never reads the operand: on O_FT queries it answers count(O_PT)."""
    config, group, task, eval_sets, state = trained_counter
    run = types.SimpleNamespace(config=config, group=group, task=task, eval_sets=eval_sets)
    diagnostics = regime.Diagnostics(run)
    out = jax.jit(diagnostics.measure)(jax.tree.map(lambda x: x[0], state.params))
    assert float(out["ft_query.pt_share"]) > 0.6 > float(out["ft_query.ft_share"])
    assert float(out["pt_query.pt_share"]) > 0.6
    shares = [float(out[f"ft_query.{f}_share"]) for f in regime.FUNCTIONS]
    np.testing.assert_allclose(sum(shares), 1.0, rtol=1e-5)
    rows = diagnostics.task_rows()
    assert rows["heldout.eval_share"] == 1.0 and rows["heldout.train_share"] == 0.0
    # The operand-blind level is that model's C_FT: the share of O_FT test inputs whose two answers agree.
    np.testing.assert_allclose(rows["test.blind_acc"], 1 - rows["test.discriminating"], atol=1e-6)


def test_function_shares_count_each_answer_once():
    labels = {"pt": jnp.asarray([1, 1, 2, 3, 4]), "ft": jnp.asarray([2, 1, 3, 5, 6])}  # input 1 does not discriminate
    predicted = jnp.asarray([2, 9, 2, 7, 0])  # ft, (ignored), pt, majority (7), other
    shares = np.asarray(regime.function_shares(predicted, labels, majority=7))
    np.testing.assert_allclose(shares, [0.25, 0.25, 0.25, 0.25])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny study whose fine-tuning LR is ~0: fine-tuned members equal their parents."""
    workdir = tmp_path_factory.mktemp("evals") / "run"
    config = tiny_config("sweep.seeds=2", "sweep.finetune_lr=(1e-30,)")
    return pd.read_parquet(run_study(config, workdir, quiet=True))


@pytest.mark.slow
def test_reft_of_an_unchanged_model_meets_the_threshold_at_step_0(study):
    summary = study[(study.phase == "reft") & (study.metric == "steps_to_threshold")]
    assert len(summary) == 2 and (summary.value == 0).all()
    stop = study[(study.phase == "reft") & (study.metric == "stop_step")]
    assert len(stop) == 2 and (stop.value == 0).all()  # and stops there (reft.stop_at_threshold)
    rf = study[study.phase == "reft"]
    assert set(rf.parent) == set(study[study.phase == "finetune"].member)
    assert rf.member.str.startswith("rft").all() and rf.reft_lr.notna().all()


@pytest.mark.slow
def test_control_is_explicit_in_the_results(study):
    cp = study[study.phase == "control_pretrain"]
    cr = study[study.phase == "control_reft"]
    assert cp.member.nunique() == 2 and (cp.prior_name == "control").all()
    assert set(cr.parent) == set(cp.member)
    assert set(cr.control_lr_factor) == {1.0, 10.0}
    reft = study[study.phase == "reft"]
    # One reFT LR for every fine-tuning LR (the shared mode): the pretraining LR x reft.lr_scale.
    np.testing.assert_allclose(reft.reft_lr.unique(), [reft.pretrain_lr.iloc[0] * 0.1])
    np.testing.assert_allclose(sorted(set(cr.reft_lr)), [reft.reft_lr.iloc[0], 10 * reft.reft_lr.iloc[0]])
    assert (cr.reft_lr_base == reft.reft_lr.iloc[0]).all()
    assert {"steps_to_threshold", "reached"} <= set(cr.metric)


@pytest.mark.slow
def test_probe_regime_and_attention_cover_every_level_of_the_run_tree(study):
    for phase in ("probe", "regime"):
        members = set(study[study.phase == phase].member)
        for prefix in ("pt", "ft", "rft", "cpt"):
            assert any(m.startswith(prefix) for m in members), (phase, prefix)
        assert any("-x10" in m for m in members)  # the control after its C_PT training
    attention_members = set(study[study.phase == "attention"].member)
    assert {m[:2] for m in attention_members} >= {"pt", "ft", "rf"}
    probe_rows = study[study.phase == "probe"]
    assert set(probe_rows.step) == {0, 1}  # embeddings and one block
    assert {"resid.pt_acc", "resid.ft_acc", "resid.control_acc", "attn.pt_acc", "init_resid.control_acc",
            "resid.pt_val_acc", "init_resid.control_val_acc"} <= \
        set(probe_rows.metric)
    regime_rows = study[study.phase == "regime"]
    assert {"test.pt_acc", "test.ft_shortcut_acc", "ft_query.pt_share", "init_test.pt_acc",
            "test.blind_acc", "heldout.train_share"} <= set(regime_rows.metric)


@pytest.mark.slow
def test_an_unchanged_model_is_unchanged_under_every_measurement(study):
    """Fine-tuning at LR ~0: every patch and attention change reads 0; pruning needs nothing to revive C_PT."""
    rows = study[study.phase == "prune"]
    assert {m[:2] for m in rows.member} >= {"pt", "ft", "cp"}
    for method in ("neurons", "heads", "weights", "mask", "neurons_remove_ft", "neurons_random"):
        assert f"{method}.pt_acc" in set(rows.metric) and f"{method}.k_revive" in set(rows.metric)
    ft_kr = rows[rows.member.str.startswith("ft") & (rows.metric == "neurons.k_revive")].value
    assert (ft_kr == 0).all()
    patched = study[study.phase == "patch"].pivot_table(index="member", columns="metric", values="value")
    for column in patched:
        target = column.split(".")[-1]
        np.testing.assert_allclose(patched[column], patched[f"none.{target}"])
    change = study[(study.phase == "attention") & study.metric.str.endswith("tv_parent")]
    assert len(change) and (change.value.abs() < 1e-6).all()  # reFT members stopped at step 0: nothing to revive
    null = study[(study.phase == "attention") & study.metric.str.endswith("tv_seed")]
    assert (null.value > 1e-3).all()  # two seeds' models attend differently


def test_first_step_reaching_reads_records_and_skips_members_without_a_target():
    from fttrace.engine.curves import records_first_step
    records = [(0, {"rate": np.array([0.1, 0.0, 0.5])}), (30, {"rate": np.array([0.6, 0.2, 0.5])}),
               (300, {"rate": np.array([0.9, 0.9, 0.9])})]
    got = records_first_step(records, "rate", np.array([0.5, 0.8, np.nan]))  # the third has no target: never
    np.testing.assert_array_equal(got, [30.0, 300.0, np.nan])
