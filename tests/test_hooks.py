"""The notebook model as TransformerLens users know it: hook points by name, run_with_cache's names_filter,
run_with_hooks, a stack of members evaluated at once, tokens as strings in every task's vocabulary; and, on a tiny
study, the mid-training checkpoints kept at log-spaced steps, the models read from them and a member's curve."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fttrace
from fttrace.engine.checkpoint import Checkpoints, log_spaced_steps
from fttrace.engine.placement import Placement
from fttrace.engine.runner import run_study
from fttrace.errors import UserError
from fttrace.model.member import Ablation, MemberModel, MemberStack, Patch
from fttrace.model.transformer import ModelConfig, Transformer, init_params
from helpers import NO_EVALS, tiny_config

CFG = ModelConfig(vocab_size=11, max_len=7, d_model=16, n_layers=2, n_heads=2, d_mlp=24)
TOL = dict(rtol=1e-4, atol=1e-4)


def member(key: int, name: str, cfg: ModelConfig = CFG) -> MemberModel:
    params = jax.tree.map(lambda x: np.asarray(x) * 20, init_params(cfg, jax.random.PRNGKey(key)))
    return MemberModel(cfg, params, name)


@pytest.fixture(scope="module")
def model():
    return member(0, "m")


@pytest.fixture(scope="module")
def tokens():
    return np.asarray(jax.random.randint(jax.random.PRNGKey(1), (5, 7), 0, 11))


def test_hook_points_are_named_and_shaped_as_in_transformer_lens(model, tokens):
    logits, cache = model.run_with_cache(tokens)
    np.testing.assert_allclose(logits, model(tokens), **TOL)
    assert list(cache) == model.hook_names and len(cache) == 2 + 2 * 16 + 1
    b, t, h, hd, d = 5, 7, 2, 8, 16
    shapes = {"hook_embed": (b, t, d), "hook_pos_embed": (b, t, d), "blocks.1.hook_resid_pre": (b, t, d),
              "blocks.1.ln1.hook_normalized": (b, t, d), "blocks.1.attn.hook_q": (b, t, h, hd),
              "blocks.1.attn.hook_k": (b, t, h, hd), "blocks.1.attn.hook_v": (b, t, h, hd),
              "blocks.1.attn.hook_attn_scores": (b, h, t, t), "blocks.1.attn.hook_pattern": (b, h, t, t),
              "blocks.1.attn.hook_z": (b, t, h, hd), "blocks.1.attn.hook_result": (b, t, h, d),
              "blocks.1.hook_attn_out": (b, t, d), "blocks.1.hook_resid_mid": (b, t, d),
              "blocks.1.ln2.hook_normalized": (b, t, d), "blocks.1.mlp.hook_pre": (b, t, 24),
              "blocks.1.mlp.hook_post": (b, t, 24), "blocks.1.hook_mlp_out": (b, t, d),
              "blocks.1.hook_resid_post": (b, t, d), "ln_final.hook_normalized": (b, t, d)}
    assert {name: cache[name].shape for name in shapes} == shapes
    # The activations are the forward pass's: the same as its captured intermediates, and consistent.
    _, inter = Transformer(CFG).apply({"params": model.params}, tokens, capture=True)
    np.testing.assert_allclose(cache["blocks.1.attn.hook_pattern"], inter["attn_weights"][1], **TOL)
    np.testing.assert_allclose(cache["result", 0], inter["head_out"][0], **TOL)
    np.testing.assert_allclose(cache.stack("resid_post"), inter["residual"][1:], **TOL)
    np.testing.assert_array_equal(cache["blocks.0.hook_resid_post"], cache["blocks.1.hook_resid_pre"])
    np.testing.assert_allclose(cache["hook_embed"] + cache["hook_pos_embed"], cache["resid_pre", 0], **TOL)
    np.testing.assert_allclose(jax.nn.softmax(cache["attn_scores", 0]), cache["pattern", 0], **TOL)
    np.testing.assert_allclose(cache["pattern", 1][:, :, 2, 3:], 0, atol=1e-6)  # causal
    with pytest.raises(KeyError, match="hook_patern"):
        cache["blocks.0.attn.hook_patern"]
    # Without LayerNorm there are no LayerNorm hook points.
    plain = member(0, "p", ModelConfig(**{**CFG.__dict__, "layer_norm": False}))
    assert not [n for n in plain.hook_names if "ln" in n] and len(plain.hook_names) == 2 + 2 * 14


def test_names_filter_keeps_exactly_what_it_selects(model, tokens):
    full = model.run_with_cache(tokens)[1]
    for names_filter, expected in [
        ("blocks.0.attn.hook_pattern", ["blocks.0.attn.hook_pattern"]),
        (["blocks.1.hook_resid_post", "hook_embed"], ["hook_embed", "blocks.1.hook_resid_post"]),
        (lambda name: name.endswith("hook_z"), ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"]),
    ]:
        logits, cache = model.run_with_cache(tokens, names_filter=names_filter)
        assert list(cache) == expected
        for name in expected:
            np.testing.assert_allclose(cache[name], full[name], **TOL)
        np.testing.assert_allclose(logits, model(tokens), **TOL)
    with pytest.raises(UserError, match=r"no hook point 'blocks.0.attn.hook_patern'.*did you mean "
                                        r"blocks.0.attn.hook_pattern"):
        model.run_with_cache(tokens, names_filter=["blocks.0.attn.hook_patern"])


def test_zeroing_a_heads_z_in_a_hook_equals_ablating_the_head(model, tokens):
    zeroed = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_z",
                                                      lambda z, hook: z.at[:, :, 1].set(0.0))])
    ablated = model(tokens, ablate=Ablation(heads=[(0, 1)]))
    assert not np.allclose(ablated, model(tokens), atol=1e-2)
    np.testing.assert_allclose(zeroed, ablated, **TOL)
    # Zeroing a head's result (its contribution) is the same ablation; so is zeroing MLP neurons' hook_post.
    np.testing.assert_allclose(model.run_with_hooks(tokens, [("blocks.0.attn.hook_result",
                                                              lambda r, hook: r.at[:, :, 1].set(0.0))]), ablated, **TOL)
    np.testing.assert_allclose(model.run_with_hooks(tokens, [("blocks.1.mlp.hook_post",
                                                              lambda h, hook: h.at[..., 3].set(0.0))]),
                               model(tokens, ablate=Ablation(neurons=[(1, 3)])), **TOL)


def test_hooks_edit_read_and_chain(model, tokens):
    seen = []

    def note(x, hook):  # runs when the pass is traced: a hook sees its name and its activation's shape
        seen.append((hook.name, hook.layer(), x.shape))

    logits = model.run_with_hooks(tokens, [(lambda name: name.endswith("hook_resid_pre"), note)])
    np.testing.assert_allclose(logits, model(tokens), **TOL)
    assert seen == [("blocks.0.hook_resid_pre", 0, (5, 7, 16)), ("blocks.1.hook_resid_pre", 1, (5, 7, 16))]
    # Steering the residual stream shows downstream, and the cache sees the steered activation.
    steer = np.zeros(16, np.float32)
    steer[3] = 50.0
    hooks = [("blocks.1.hook_resid_pre", lambda x, hook: x + jnp.asarray(steer))]
    logits, cache = model.run_with_cache(tokens, fwd_hooks=hooks)
    plain = model.run_with_cache(tokens)[1]
    np.testing.assert_array_equal(cache["blocks.0.hook_resid_post"], plain["blocks.0.hook_resid_post"])
    np.testing.assert_allclose(cache["blocks.1.hook_resid_pre"], plain["blocks.1.hook_resid_pre"] + steer, **TOL)
    assert not np.allclose(logits, model(tokens), atol=1e-2)
    # Patching a position from another forward pass: clean activation at position 2 only.
    other = np.asarray(jax.random.randint(jax.random.PRNGKey(9), (5, 7), 0, 11))
    clean = model.run_with_cache(other, names_filter="blocks.1.hook_resid_pre")[1]["blocks.1.hook_resid_pre"]
    patched = model.run_with_cache(tokens, fwd_hooks=[(
        "blocks.1.hook_resid_pre", lambda x, hook: x.at[:, 2].set(clean[:, 2]))])[1]
    np.testing.assert_allclose(patched["blocks.1.hook_resid_pre"][:, 2], clean[:, 2], **TOL)
    np.testing.assert_array_equal(patched["blocks.1.hook_resid_pre"][:, 3], plain["blocks.1.hook_resid_pre"][:, 3])


def test_mismatched_hooks_and_patches_are_one_clear_error(model, tokens):
    _, small = model.run_with_cache(tokens[:3])
    with pytest.raises(UserError, match=r"returned shape \[3, 7, 16\]; the activation there has shape \[5, 7, 16\]"):
        model.run_with_hooks(tokens, [("blocks.0.hook_resid_post", lambda x, hook: small[hook.name])])
    with pytest.raises(UserError, match=r"hook function at blocks.0.hook_resid_post failed on its activation of "
                                        r"shape \[5, 7, 16\]"):
        model.run_with_hooks(tokens, [("blocks.0.hook_resid_post", lambda x, hook: x + small[hook.name])])
    with pytest.raises(UserError, match=r"holds contributions of shape \[2, 3, 7\].*these tokens need \[2, 5, 7\]"):
        model(tokens, patch=Patch(small, heads=[(0, 1)]))
    _, filtered = model.run_with_cache(tokens, names_filter="hook_embed")
    with pytest.raises(UserError, match="lacks attn.hook_result or hook_mlp_out"):
        model(tokens, patch=Patch(filtered, mlps=[0]))
    with pytest.raises(UserError, match="have 9 positions; the model reads at most 7"):
        model(np.zeros((2, 9), np.int32))
    with pytest.raises(UserError, match=r"token ids must be in 0 \.\. 10"):
        model(np.full((2, 3), 11))


def test_a_stack_of_members_equals_each_member_alone(model, tokens):
    models = [model, member(3, "n"), member(4, "o")]
    stack = MemberStack(models)
    assert len(stack) == 3 and stack.params["block_0"]["attn"]["query"]["kernel"].shape[0] == 3
    heads = Ablation(heads=[(0, 1)], neurons=[(1, 2)])
    np.testing.assert_allclose(stack(tokens), np.stack([m(tokens) for m in models]), **TOL)
    np.testing.assert_allclose(stack(tokens, ablate=heads), np.stack([m(tokens, ablate=heads) for m in models]), **TOL)
    each = [Ablation(heads=[(0, 1)]), Ablation(), Ablation(neurons=[(0, 5)], directions={1: np.ones(16)})]
    np.testing.assert_allclose(stack(tokens, ablate=each),
                               np.stack([m(tokens, ablate=a) for m, a in zip(models, each)]), **TOL)
    per_member = np.stack([tokens, tokens[::-1], (tokens + 1) % 11])
    np.testing.assert_allclose(stack(per_member), np.stack([m(t) for m, t in zip(models, per_member)]), **TOL)
    hooks = [("blocks.0.attn.hook_z", lambda z, hook: z.at[:, :, 1].set(0.0))]
    np.testing.assert_allclose(stack.run_with_hooks(tokens, hooks),
                               np.stack([m.run_with_hooks(tokens, hooks) for m in models]), **TOL)
    _, cache = stack.run_with_cache(tokens, names_filter=lambda n: "pattern" in n or "result" in n or "mlp_out" in n)
    assert cache.members == ["m", "n", "o"] and cache["pattern", 1].shape == (3, 5, 2, 7, 7)
    for i, m in enumerate(models):
        np.testing.assert_allclose(cache["pattern", 1][i], m.run_with_cache(tokens)[1]["pattern", 1], **TOL)
    sets = (tokens, np.arange(5) % 11)
    np.testing.assert_allclose(stack.accuracy(sets), [m.accuracy(sets) for m in models])
    # Patches: every member's own contributions from a stack's cache, or one model's for all.
    everything = dict(heads=[(layer, h) for layer in range(2) for h in range(2)], mlps=[0, 1])
    np.testing.assert_allclose(stack(tokens, patch=Patch(cache, **everything)), stack(tokens), **TOL)
    _, first = model.run_with_cache(tokens)
    np.testing.assert_allclose(stack(tokens, patch=Patch(first, heads=[(1, 0)])),
                               np.stack([m(tokens, patch=Patch(first, heads=[(1, 0)])) for m in models]), **TOL)
    with pytest.raises(UserError, match="is of a stack of 3 members"):
        model(tokens, patch=Patch(cache, heads=[(1, 0)]))
    with pytest.raises(UserError, match="one Ablation or one per member; got 2 for 3"):
        stack(tokens, ablate=each[:2])
    with pytest.raises(UserError, match="2 model shapes"):
        MemberStack([model, member(0, "wide", ModelConfig(**{**CFG.__dict__, "d_model": 32}))])


def test_every_tasks_vocabulary_round_trips(tmp_path):
    from fttrace.answer.tasks.registry import build_task
    from fttrace.answer.tasks.tracr_task import TracrTask
    from fttrace.lm.tokenizer import train_tokenizer

    pcfg = build_task(tiny_config()).vocabulary()
    text = "<counter> t3 t1 t3 <pad> <ans>"
    ids = pcfg.to_tokens(text)
    assert ids.shape == (1, 6) and pcfg.to_str_tokens(ids[0]) == text.split()
    assert pcfg.to_string(ids[0]) == "<counter> t3 t1 t3 <ans>"  # pad dropped
    assert pcfg.to_str_tokens(np.arange(len(pcfg)))[-1] == "<none>"
    with pytest.raises(UserError, match="'t99' not in the vocabulary of the PCFG"):
        pcfg.to_tokens("<counter> t99")
    tracr = TracrTask("counter", "count_b").vocabulary()
    ids = tracr.to_tokens(["a b c", "d"])  # BOS first, the shorter text padded
    assert tracr.to_str_tokens(ids) == [["BOS", "a", "b", "c"], ["BOS", "d", "compiler_pad", "compiler_pad"]]
    sp = train_tokenizer(["Once upon a time there was a cat.", "The cat sat on a mat.\nThe end."] * 20, 60)
    vocab = sp.vocabulary()
    ids = vocab.to_tokens("The cat sat.")
    assert ids[0, 0] == vocab.bos and "".join(vocab.to_str_tokens(ids[0])[1:]) == "The cat sat."
    assert vocab.to_string(ids[0]) == "The cat sat."
    with pytest.raises(UserError, match="no vocabulary attached"):
        member(0, "m").to_str_tokens([1, 2])


def test_log_spaced_steps_are_the_first_evaluations_at_or_after_log_spaced_targets():
    # 25 x 60^(j/7), j = 0 .. 7: 25, 45, 81, 145, 261, 466, 836, 1500
    assert sorted(log_spaced_steps(range(0, 1501, 25), 1500, 8)) == [25, 50, 100, 150, 275, 475, 850, 1500]
    assert log_spaced_steps(range(0, 81, 10), 80, 4) == {10, 20, 40, 80}
    assert log_spaced_steps(range(0, 31, 10), 80, 4) == {10, 20}  # only the steps reached so far
    assert log_spaced_steps(range(0, 81, 10), 80, 0) == set()


def test_a_phase_keeps_its_log_spaced_checkpoints_besides_the_newest(tmp_path):
    state = {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3)}
    records = lambda steps: [(s, {"acc": jnp.full((2,), s / 100, jnp.float32)}) for s in steps]  # noqa: E731
    run = Checkpoints(tmp_path / "checkpoints", "run-a", Placement(), every_chunks=3, keep=1, keep_log_spaced=4)
    with run.phase("g0-finetune") as phase:
        for last in range(10, 81, 10):
            phase.after_chunk(state, records(range(0, last + 1, 10)), final_step=80)
        assert phase.steps() == [10, 20, 40, 80]  # 30 and 60 were due by the interval; only the newest is kept


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hooks") / "run"
    config = tiny_config(NO_EVALS, "sweep.seeds=2", "pretrain.steps=80", "checkpoint.every_chunks=0",
                         "checkpoint.keep=1", "checkpoint.keep_log_spaced=4")
    run_study(config, workdir, quiet=True)
    return fttrace.open(workdir)


def test_mid_training_models_are_kept_at_log_spaced_steps(study):
    assert study.steps("pt0") == [10, 20, 40, 80]
    sets = study.heldout()
    early, late = study.model("pt0", step=10), study.model("pt0")
    assert not np.array_equal(early.params["embed"]["embedding"], late.params["embed"]["embedding"])
    curve = study.curve("pt0", "pt_acc")
    assert list(curve.columns) == ["phase", "step", "value"] and set(curve.phase) == {"pretrain"}
    assert list(curve.step) == list(range(0, 81, 10)) and curve.value.notna().all()
    # The model at a kept step answers the held-out set as the run logged it at that step.
    for step, model in ((10, early), (80, late)):
        assert model.accuracy(sets["pt"]) == pytest.approx(curve.value[curve.step == step].item(), abs=1e-9)
    with pytest.raises(UserError, match="no checkpoint at step 30; it has steps 10, 20, 40, 80"):
        study.model("pt0", step=30)
    with pytest.raises(UserError, match="has no metric 'nope'"):
        study.curve("pt0", "nope")


def test_run_models_evaluate_members_at_once_and_speak_the_tasks_tokens(study):
    sets = study.heldout()
    members = list(study.members.member)
    stack = study.models()
    assert stack.members == [str(m) for m in members]
    np.testing.assert_allclose(stack.accuracy(sets["pt"]), [study.model(m).accuracy(sets["pt"]) for m in members])
    ablate = Ablation(heads=[(0, 1)])
    tokens = sets["ft"][0][:16]
    np.testing.assert_allclose(stack(tokens, ablate=ablate),
                               np.stack([study.model(m)(tokens, ablate=ablate) for m in members]), **TOL)
    early = study.models(["pt0", "pt1"], step=10)
    np.testing.assert_array_equal(early[0].params["embed"]["embedding"],
                                  study.model("pt0", step=10).params["embed"]["embedding"])
    words = study.model("ft0").to_str_tokens(tokens[0])
    assert words[0] in ("<counter>", "<index>") and words[-1] == "<ans>"
    np.testing.assert_array_equal(stack.to_tokens(" ".join(words)), tokens[:1])
