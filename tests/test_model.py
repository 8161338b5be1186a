import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fttrace.model.transformer import ModelConfig, Transformer, full_masks, init_params

CFG = ModelConfig(vocab_size=20, max_len=12, d_model=16, n_layers=3, n_heads=2, d_mlp=32)


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.PRNGKey(0))


def tokens(key=1, batch=3, length=10):
    return jax.random.randint(jax.random.PRNGKey(key), (batch, length), 0, CFG.vocab_size)


def test_shapes_and_captured_intermediates(params):
    logits, inter = Transformer(CFG).apply({"params": params}, tokens(), capture=True)
    assert logits.shape == (3, 10, 20) and logits.dtype == jnp.float32
    assert inter["residual"].shape == (4, 3, 10, 16)
    assert inter["attn_out"].shape == (3, 3, 10, 16)
    assert inter["attn_weights"].shape == (3, 3, 2, 10, 10)
    assert inter["mlp_hidden"].shape == (3, 3, 10, 32)
    np.testing.assert_allclose(inter["attn_weights"].sum(-1), 1.0, rtol=1e-5)


def test_residual_stream_is_the_sum_of_block_outputs():
    cfg = ModelConfig(**{**CFG.__dict__, "layer_norm": False})
    params = init_params(cfg, jax.random.PRNGKey(0))
    _, inter = Transformer(cfg).apply({"params": params}, tokens(), capture=True)
    r = inter["residual"]
    # Without LayerNorm: r[i+1] - r[i] = attention output + MLP output of block i.
    for i in range(cfg.n_layers):
        mlp_out = r[i + 1] - r[i] - inter["attn_out"][i]
        h = inter["mlp_hidden"][i]
        p = params[f"block_{i}"]["mlp"]["fc_out"]
        np.testing.assert_allclose(mlp_out, h @ p["kernel"] + p["bias"], atol=1e-5)


def test_causal_masking(params):
    x = tokens()
    y = x.at[:, 7:].set(0)
    a = Transformer(CFG).apply({"params": params}, x)
    b = Transformer(CFG).apply({"params": params}, y)
    np.testing.assert_allclose(a[:, :7], b[:, :7], atol=1e-5)
    assert not np.allclose(a[:, 7:], b[:, 7:])


def test_non_causal_sees_the_future():
    cfg = ModelConfig(**{**CFG.__dict__, "causal": False})
    params = init_params(cfg, jax.random.PRNGKey(0))
    x = tokens()
    a = Transformer(cfg).apply({"params": params}, x)
    b = Transformer(cfg).apply({"params": params}, x.at[:, 9].set(0))
    assert not np.allclose(a[:, 0], b[:, 0])


def test_masks_identity_and_effect(params):
    x = tokens()
    model = Transformer(CFG)
    plain = model.apply({"params": params}, x)
    np.testing.assert_allclose(model.apply({"params": params}, x, masks=full_masks(CFG)), plain, atol=1e-6)
    masks = full_masks(CFG)
    masks["neurons"] = masks["neurons"].at[1, :].set(0)
    masks["heads"] = masks["heads"].at[0, 1].set(0)
    logits, inter = model.apply({"params": params}, x, masks=masks, capture=True)
    assert not np.allclose(logits, plain)
    assert np.all(inter["mlp_hidden"][1] == 0)


def test_no_layernorm_has_no_norm_params():
    cfg = ModelConfig(**{**CFG.__dict__, "layer_norm": False})
    params = init_params(cfg, jax.random.PRNGKey(0))
    assert "ln_f" not in params and "ln1" not in params["block_0"]
    assert "ln_f" in init_params(CFG, jax.random.PRNGKey(0))


def test_bfloat16_compute_keeps_float32_params_and_logits():
    cfg = ModelConfig(**{**CFG.__dict__, "dtype": "bfloat16"})
    params = init_params(cfg, jax.random.PRNGKey(0))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    logits = Transformer(cfg).apply({"params": params}, tokens())
    assert logits.dtype == jnp.float32
    ref = Transformer(CFG).apply({"params": params}, tokens())
    np.testing.assert_allclose(logits, ref, atol=0.05)


@pytest.mark.parametrize("layer_norm,causal", [(True, True), (False, False)])
def test_answer_only_equals_the_last_position_of_the_full_pass(layer_norm, causal):
    cfg = ModelConfig(vocab_size=20, max_len=12, d_model=16, n_layers=3, n_heads=2, d_mlp=32,
                      layer_norm=layer_norm, causal=causal)
    p = init_params(cfg, jax.random.PRNGKey(2))
    masks = full_masks(cfg)
    masks["neurons"] = masks["neurons"].at[2, :5].set(0)  # masks act on the answer-only path too
    model = Transformer(cfg)
    full = model.apply({"params": p}, tokens(), masks=masks)
    last = model.apply({"params": p}, tokens(), masks=masks, answer_only=True)
    assert last.shape == (3, 20)
    np.testing.assert_allclose(last, full[:, -1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="capture"):
        model.apply({"params": p}, tokens(), capture=True, answer_only=True)


def test_head_contributions_add_up_to_the_attention_output(params):
    _, inter = Transformer(CFG).apply({"params": params}, tokens(), capture=True)
    assert inter["head_out"].shape == (3, 3, 10, 2, 16) and inter["mlp_out"].shape == (3, 3, 10, 16)
    for i in range(CFG.n_layers):
        bias = params[f"block_{i}"]["attn"]["out"]["bias"]
        np.testing.assert_allclose(inter["head_out"][i].sum(-2) + bias, inter["attn_out"][i], atol=1e-5)


def test_patching_swaps_exactly_the_patched_sites(params):
    other = init_params(CFG, jax.random.PRNGKey(5))
    model, x = Transformer(CFG), tokens()
    plain, mine = model.apply({"params": params}, x, capture=True)
    theirs_logits, theirs = model.apply({"params": other}, x, capture=True)
    zeros = {"heads": jnp.zeros((3, 2)), "head_out": theirs["head_out"], "mlp": jnp.zeros(3),
             "mlp_out": theirs["mlp_out"]}
    np.testing.assert_allclose(model.apply({"params": params}, x, patch=zeros), plain, atol=1e-5)
    # Patching every site of every block gives the other model's residual stream exactly (embeddings aside).
    everything = dict(zeros, heads=jnp.ones((3, 2)), mlp=jnp.ones(3))
    _, patched = model.apply({"params": params}, x, patch=everything, capture=True)
    for i in range(CFG.n_layers):
        np.testing.assert_allclose(patched["head_out"][i], theirs["head_out"][i], atol=1e-5)
        np.testing.assert_allclose(patched["mlp_out"][i], theirs["mlp_out"][i], atol=1e-5)
    # One head of block 0: block 0's other head keeps its own contribution; the patched one is theirs.
    one = dict(zeros, heads=jnp.zeros((3, 2)).at[0, 1].set(1.0))
    _, single = model.apply({"params": params}, x, patch=one, capture=True)
    np.testing.assert_allclose(single["head_out"][0, ..., 0, :], mine["head_out"][0, ..., 0, :], atol=1e-6)
    np.testing.assert_allclose(single["head_out"][0, ..., 1, :], theirs["head_out"][0, ..., 1, :], atol=1e-6)
    assert not np.allclose(single["residual"][1], mine["residual"][1])
    with pytest.raises(ValueError, match="patch"):
        model.apply({"params": params}, x, patch=zeros, answer_only=True)
