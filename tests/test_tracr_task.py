"""The Tracr task labels what RASP says, its shortcut holds where asked, component change measures what it claims,
bad configs fail with one clear error, and a 16-member fine-tuning sweep of a compiled model runs end to end."""
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest
from tracr.rasp import rasp

from analysis.analyse import analyse
from analysis.components import component_table
import fttrace
from fttrace import config as config_lib
from fttrace.errors import UserError
from fttrace.answer.evals.components import component_changes, component_outputs
from fttrace.model.transformer import Transformer
from fttrace.engine.runner import run_study
from fttrace.answer.sweep import build_groups
from fttrace.answer.tasks.tracr_task import CHECKED_INPUTS, PRETRAINING_TARGET, TARGETS, TracrTask, compiled_errors
from fttrace.engine.train import answer_loss
from helpers import ROOT, assert_open_gives_logged_accuracies

sys.path.insert(0, str(ROOT / "configs"))
import smoke  # noqa: E402

pytestmark = pytest.mark.slow  # CI's slow lane: python -m pytest -m slow

CASES = [("counter", "count_b"), ("counter", "count_d"), ("max_identifier", "min")]
TINY = {"counter": str(ROOT / "configs" / "tracr_counter.py:tiny"),
        "max_identifier": str(ROOT / "configs" / "tracr_max.py:tiny")}


def decode(task, tokens):
    """Vocabulary tokens of task sequences (BOS dropped)."""
    program = task.pretrained_model
    token_of = {i: t for t, i in program.token_ids.items()}
    return [[token_of[int(i)] for i in row[1:]] for row in np.asarray(tokens)]


def rasp_answer_ids(task, inputs, sop):
    """Output ids of the RASP program `sop`'s value at the last position of each input."""
    program = task.pretrained_model
    return np.asarray([program.output_values.index(rasp.evaluate(sop, x)[-1]) for x in inputs])


@pytest.mark.parametrize("program,ft_target", CASES)
@pytest.mark.parametrize("spurious", [0.0, 1.0])
def test_labels_equal_rasp_evaluate_of_both_programs(program, ft_target, spurious):
    task = TracrTask(program, ft_target)
    tokens, answers = task.sample(jax.random.PRNGKey(7), 300, task.query_mix(pt=0.5, ft=0.5), spurious)
    assert tokens.shape == (300, task.seq_len) and task.seq_len == 9
    inputs = decode(task, tokens)
    pt_expected = rasp_answer_ids(task, inputs, task.pretrained_model.rasp)  # the compiled program itself
    ft_expected = rasp_answer_ids(task, inputs, TARGETS[program][ft_target].build())
    labels = task.labels(tokens)
    pt, ft, control = (np.asarray(labels[k]) for k in ("pt", "ft", "control"))
    np.testing.assert_array_equal(pt, pt_expected)
    np.testing.assert_array_equal(ft, ft_expected)
    np.testing.assert_array_equal(control, rasp_answer_ids(task, inputs, task.control.build()))
    assert task.control.name not in (task.pt_target, ft_target)
    answers = np.asarray(answers)
    assert np.all((answers == pt) | (answers == ft))
    if spurious == 0.0:  # both targets are asked for (with the counter's shortcut everywhere, they agree)
        assert 0 < np.mean((answers == ft) & (pt != ft)) and 0 < np.mean((answers == pt) & (pt != ft))
    assert len(set(pt.tolist())) >= 3 and len(set(ft.tolist())) >= 3


@pytest.mark.parametrize("program,ft_target", CASES)
def test_answers_follow_the_query_mix(program, ft_target):
    task = TracrTask(program, ft_target)
    for mix, which in ((task.query_mix(pt=1.0), "pt"), (task.query_mix(ft=1.0), "ft")):
        tokens, answers = task.sample(jax.random.PRNGKey(3), 200, mix, 0.0)
        np.testing.assert_array_equal(answers, task.labels(tokens)[which])


def test_shortcut_holds_in_the_fraction_asked_for():
    counter = TracrTask("counter", "count_b")
    extremes = TracrTask("max_identifier", "min")
    holds = {
        counter: lambda pt, ft: pt == ft,  # count(b) == count(a): the compiled answer is right
        extremes: lambda pt, ft: ft == 5 - pt,  # min == 5 - max (output id = value for 0..5)
    }
    for task, shortcut in holds.items():
        rates = []
        for spurious in (0.0, 0.5, 1.0):
            tokens, _ = task.sample(jax.random.PRNGKey(11), 4000, task.query_mix(ft=1.0), spurious)
            labels = task.labels(tokens)
            pt, ft = np.asarray(labels["pt"]), np.asarray(labels["ft"])
            rates.append(shortcut(pt, ft).mean())
        natural = rates[0]  # counter about 0.16, max/min about 0.4 (max 5 and min 0 are both likely)
        assert rates[2] == 1.0
        assert natural < 0.5
        np.testing.assert_allclose(rates[1], natural + 0.5 * (1 - natural), atol=0.03)


def test_compiled_model_reads_the_pretraining_target_at_the_answer_position():
    for program, ft_target in CASES:
        task = TracrTask(program, ft_target)
        model = Transformer(task.pretrained_model.model_config)
        tokens, answers = task.sample(jax.random.PRNGKey(5), 256, task.query_mix(pt=1.0), 0.0)
        assert float(answer_loss(model, task.pretrained_model.params, tokens, answers)[1]) == 1.0
        tokens, answers = task.sample(jax.random.PRNGKey(5), 256, task.query_mix(ft=1.0), 0.0)
        assert float(answer_loss(model, task.pretrained_model.params, tokens, answers)[1]) < 0.5


def test_attention_masks_mark_bos_and_the_deciding_tokens():
    task = TracrTask("counter", "count_b")
    tokens, _ = task.sample(jax.random.PRNGKey(2), 50, task.query_mix(pt=0.5, ft=0.5), 0.0)
    masks = np.asarray(task.attention_masks(tokens))
    ids = task.pretrained_model.token_ids
    assert task.attention_targets == ("bos", "pt_tokens", "ft_tokens")
    assert masks[0, :, 0].all() and not masks[0, :, 1:].any()
    np.testing.assert_array_equal(masks[1], np.asarray(tokens) == ids["a"])
    np.testing.assert_array_equal(masks[2], np.asarray(tokens) == ids["b"])
    extremes = TracrTask("max_identifier", "min")
    tokens, _ = extremes.sample(jax.random.PRNGKey(2), 50, extremes.query_mix(pt=0.5, ft=0.5), 0.0)
    masks = np.asarray(extremes.attention_masks(tokens))
    values = np.asarray(tokens)[:, 1:]  # input id = value for tokens 0..5
    np.testing.assert_array_equal(masks[1, :, 1:], values == values.max(1, keepdims=True))
    np.testing.assert_array_equal(masks[2, :, 1:], values == values.min(1, keepdims=True))


@pytest.fixture(scope="module")
def max_task():
    task = TracrTask("max_identifier", "min")
    tokens, _ = task.sample(jax.random.PRNGKey(0), 64, task.query_mix(pt=0.5, ft=0.5), 0.0)
    return task, Transformer(task.pretrained_model.model_config), tokens


def test_component_outputs_add_up_to_each_sublayer_output(max_task):
    task, model, tokens = max_task
    program = task.pretrained_model
    params = jax.tree.map(jnp.asarray, program.params)
    outputs = component_outputs(model, params, tokens, program.components)
    _, inter = model.apply({"params": params}, tokens, capture=True)
    for block in range(program.model_config.n_layers):
        for kind in ("attn", "mlp"):
            mine = [y for c, y in zip(program.components, outputs) if c.block == block and c.kind == kind]
            total = sum(mine) if mine else jnp.zeros_like(inter["attn_out"][block])
            if kind == "attn":
                written = inter["attn_out"][block] - params[f"block_{block}"]["attn"]["out"]["bias"]
            else:
                written = (inter["residual"][block + 1] - inter["residual"][block] - inter["attn_out"][block]
                           - params[f"block_{block}"]["mlp"]["fc_out"]["bias"])
            np.testing.assert_allclose(total, written, atol=1e-3 * float(jnp.abs(written).max() + 1))


def perturb(params, component, scale=0.05, key=0):
    """A planted change: noise on the value (attention) or input (MLP) weights of `component` only."""
    block = dict(params[f"block_{component.block}"])
    if component.kind == "attn":
        kernel = block["attn"]["value"]["kernel"]
        noise = scale * jax.random.normal(jax.random.PRNGKey(key), kernel.shape)
        heads = np.zeros(kernel.shape[1], bool)
        heads[list(component.heads)] = True
        value = dict(block["attn"]["value"], kernel=kernel + noise * heads[None, :, None])
        block["attn"] = dict(block["attn"], value=value)
    else:
        kernel = block["mlp"]["fc_in"]["kernel"]
        noise = scale * jnp.abs(kernel).max() * jax.random.normal(jax.random.PRNGKey(key), kernel.shape)
        neurons = np.zeros(kernel.shape[1], bool)
        neurons[list(component.neurons)] = True
        block["mlp"] = dict(block["mlp"], fc_in=dict(block["mlp"]["fc_in"], kernel=kernel + noise * neurons))
    return {**params, f"block_{component.block}": block}


def test_component_change_is_zero_for_an_unchanged_model(max_task):
    task, model, tokens = max_task
    params = jax.tree.map(jnp.asarray, task.pretrained_model.params)
    changes = component_changes(model, task.pretrained_model.components, tokens, params,
                                jax.tree.map(jnp.copy, params))
    assert len(changes) == 2 * len(task.pretrained_model.components) + 3
    assert all(float(v) == 0.0 for v in changes.values()), changes


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_component_change_locates_a_planted_change(max_task, index):
    task, model, tokens = max_task
    components = task.pretrained_model.components
    reference = jax.tree.map(jnp.asarray, task.pretrained_model.params)
    planted = components[index]
    changed = perturb(reference, planted)
    changes = jax.jit(lambda p, r: component_changes(model, components, tokens, p, r))(changed, reference)
    for i, c in enumerate(components):
        weight = float(changes[f"{c.name}.{c.kind}.weight_change"])
        act = float(changes[f"{c.name}.{c.kind}.act_change"])
        if i == index:
            assert weight > 1e-3 and act > 1e-3, (c, weight, act)
        else:
            assert weight == 0.0, c
        if i < index:  # upstream of the change: same activations
            assert act == 0.0, c
    assert all(float(changes[f"{name}.weight_change"]) == 0.0 for name in ("embed", "pos_embed", "unembed"))


def test_component_change_of_the_unembedding_alone(max_task):
    task, model, tokens = max_task
    reference = jax.tree.map(jnp.asarray, task.pretrained_model.params)
    changed = {**reference, "unembed": {"kernel": reference["unembed"]["kernel"] * 1.5}}
    changes = component_changes(model, task.pretrained_model.components, tokens, changed, reference)
    np.testing.assert_allclose(float(changes["unembed.weight_change"]), 0.5, rtol=1e-6)
    assert all(float(v) == 0.0 for k, v in changes.items() if not k.startswith("unembed"))


@pytest.mark.parametrize("override,key", [
    ("task.program='sort'", "task"),
    ("task.ft_target='count_a'", "task"),
    ("task.ft_target='min'", "task"),
    ("sweep.shapes.d_model=(16,)", "sweep.shapes"),
    ("prune.head_ks=(0,2)", "prune.head_ks"),
])
def test_bad_tracr_config_gives_one_clear_error(override, key):
    with pytest.raises(UserError) as err:
        config_lib.load(TINY["counter"], [override])
    message = str(err.value)
    assert key in message and "\n" not in message


def test_components_evaluation_needs_a_compiled_model():
    config = smoke.get_config()
    config.components = dict(examples=8)
    config.evals = ("components",)
    with pytest.raises(UserError, match="'components' needs a task whose model is compiled"):
        config_lib.validate(config)


def test_a_coldness_at_which_the_compiled_model_errs_is_refused():
    with pytest.raises(UserError, match="softmax_coldness 5 answers 58077 of 65536 checked inputs wrongly"):
        config_lib.load(TINY["counter"], ["task.softmax_coldness=5.0"])
    exact = TracrTask("counter", "count_b", softmax_coldness=8.0)
    assert compiled_errors(exact.pretrained_model, TARGETS["counter"]["count_a"]) == (0, 4 ** 8)
    assert compiled_errors(TracrTask("max_identifier", "min").pretrained_model, TARGETS["max_identifier"]["max"]) \
        == (0, CHECKED_INPUTS)


def fine_tuned_accuracy(task, lr, steps):
    """Held-out C_FT of the compiled model after `steps` AdamW steps toward the fine-tuning target."""
    model = Transformer(task.pretrained_model.model_config)
    optimiser = optax.adamw(lr)
    mix = task.query_mix(ft=1.0)

    @jax.jit
    def step(params, state, key):
        tokens, answers = task.sample(key, 32, mix, 0.0)
        grads = jax.grad(lambda p: answer_loss(model, p, tokens, answers)[0])(params)
        updates, state = optimiser.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = jax.tree_util.tree_map(jnp.asarray, task.pretrained_model.params)
    state = optimiser.init(params)
    for i in range(steps):
        params, state = step(params, state, jax.random.PRNGKey(i))
    tokens, answers = task.sample(jax.random.PRNGKey(10 ** 6), 1024, mix, 0.0)
    return float(answer_loss(model, params, tokens, answers)[1])


def test_fine_tuning_learns_count_b_only_from_unsaturated_heads():
    """At Tracr's coldness 100 no gradient reaches the head's choice of tokens and fine-tuning does not learn
    count("b"); at 10 (still exact on every input) the same fine-tuning does."""
    assert fine_tuned_accuracy(TracrTask("counter", "count_b", softmax_coldness=10.0), 1e-3, 800) >= 0.9
    assert fine_tuned_accuracy(TracrTask("counter", "count_b"), 1e-3, 800) < 0.5


def test_unknown_ft_target_names_the_choices():
    with pytest.raises(ValueError, match="known: count_b, count_c, count_d"):
        TracrTask("counter", "count_z")
    assert PRETRAINING_TARGET == {"counter": "count_a", "max_identifier": "max"}


@pytest.fixture(scope="module")
def counter_study(tmp_path_factory):
    config = config_lib.load(TINY["counter"], ["evals=('reft','components')", "reft.control=False"])
    workdir = tmp_path_factory.mktemp("tracr") / "run"
    return config, pd.read_parquet(run_study(config, workdir, quiet=True)), workdir


def test_a_sixteen_member_fine_tuning_sweep_of_the_compiled_counter(counter_study):
    config, frame, _ = counter_study
    (group,) = build_groups(config)
    assert len(group.finetune) == 16 and len(group.pretrain) == 2
    assert group.model == TracrTask("counter", "count_b").pretrained_model.model_config
    pretrain = frame[frame.phase == "pretrain"]
    assert set(pretrain.step) == {0}
    assert (pretrain[pretrain.metric == "pt_acc"].value == 1.0).all()  # every pretrained member is the compiled one
    finetune = frame[frame.phase == "finetune"]
    assert finetune.member.nunique() == 16 and (finetune.status == "ok").all()
    first = finetune[(finetune.step == 0) & (finetune.metric == "pt_acc")]
    assert (first.value == 1.0).all()  # fine-tuning starts from the compiled model
    final = finetune[(finetune.step == config.finetune.steps) & (finetune.metric == "pt_acc")]
    by_lr = final.groupby("finetune_lr_name").value.mean()
    assert by_lr["huge"] < by_lr["small"] < 1.0  # larger LRs hide the compiled count("a") more


def test_component_rows_cover_fine_tuned_and_reft_members(counter_study):
    _, frame, workdir = counter_study
    task = json.loads((workdir / "manifest.json").read_text())["task"]  # the components, for the analysis
    assert task["components"] == [dict(name="count_a", kind="attn", block=0, heads=[0], neurons=None),
                                  dict(name="count_a", kind="mlp", block=0, heads=None, neurons=list(range(18)))]
    assert task["layers"] == 1 and task["control_target"] == "count_c"
    rows = frame[frame.phase == "components"]
    assert rows.member.nunique() == 32
    assert set(rows.metric) == {"count_a.attn.weight_change", "count_a.attn.act_change", "count_a.mlp.weight_change",
                                "count_a.mlp.act_change", "embed.weight_change", "pos_embed.weight_change",
                                "unembed.weight_change"}
    assert set(rows.step) == {-1, 0}
    assert np.isfinite(rows.value).all() and (rows.value > 0).all()
    weight = rows[rows.metric == "count_a.mlp.weight_change"].groupby("finetune_lr").value.mean()
    assert weight.is_monotonic_increasing  # a larger LR moves the compiled weights further


def test_open_gives_the_compiled_model_and_every_trained_member(counter_study):
    config, frame, workdir = counter_study
    run = fttrace.open(workdir)
    assert set(run.members.phase) == {"pretrain", "finetune", "reft"}
    assert config.task.softmax_coldness == 10.0
    compiled = TracrTask("counter", "count_b", softmax_coldness=10.0).pretrained_model
    for a, b in zip(jax.tree.leaves(run.params("pt0")), jax.tree.leaves(compiled.params)):
        np.testing.assert_array_equal(a, b)
    assert_open_gives_logged_accuracies(run, frame, run.heldout())


def test_every_evaluation_runs_on_a_compiled_model(tmp_path):
    """Pruning, probes and attention maps work on compiled models unchanged (the max identifier: 3 blocks)."""
    config = config_lib.load(TINY["max_identifier"], [
        "evals=('prune','probe','attention')", "sweep.seeds=1", "sweep.finetune_lr=('large',)",
        "sweep.spurious=(0.5,)"])
    frame = pd.read_parquet(run_study(config, tmp_path / "run", quiet=True))
    assert set(frame.phase) == {"pretrain", "finetune", "prune", "probe", "attention", "regime"}
    pretrained = frame[frame.member == "pt0"]
    probe = pretrained[(pretrained.phase == "probe") & (pretrained.step == 3)].set_index("metric").value
    # The compiled max is linearly readable after the last block, far better than from the random init (whose
    # readout is about the share of the most common max, ~0.6).
    assert probe["resid.pt_acc"] > 0.85 and probe["resid.pt_acc"] > probe["init_resid.pt_acc"] + 0.2
    heads = pretrained[(pretrained.phase == "prune") & (pretrained.metric == "heads.pt_acc")].set_index("step").value
    assert heads[0] == 1.0 and heads[1] < 1.0  # removing the most important head breaks the compiled max
    attention = pretrained[pretrained.phase == "attention"]
    targets = {m.split(".")[-1] for m in attention.metric}
    assert targets == {"bos", "pt_tokens", "ft_tokens", "tv_seed"}
    # The "max" head (block 2) reads the positions holding the max from the answer position.
    at_max = attention[(attention.step == 2) & (attention.metric == "pt_query.h0.pt_tokens")].value.iloc[0]
    assert at_max > 0.9


def test_analysis_summarises_component_change_per_setting(counter_study):
    _, frame, workdir = counter_study
    analysis = analyse(workdir)
    table = component_table(analysis.study)
    assert len(table) == 2 * 4 * 2 * 7  # (fine-tuned, reFT) x LRs x C_Tr x measures
    assert (table.seeds == 2).all()
    rows = frame[(frame.phase == "components") & (frame.finetune_lr_name == "large") & (frame.spurious == 0.5)
                 & (frame.metric == "count_a.mlp.weight_change") & frame.member.str.startswith("ft")]
    cell = table[(table.kind == "finetuned") & (table.finetune_lr_label == "large") & (table.spurious == 0.5)
                 & (table.metric == "count_a.mlp.weight_change")]
    np.testing.assert_allclose(cell.value.iloc[0], rows.value.mean())
    assert list(dict.fromkeys(table.finetune_lr_label)) == ["small", "medium", "large", "huge"]
    assert "Change of each compiled component" in analysis.summary_text()
