"""Sampling from a member with a key/value cache, vmapped over members.

`Transformer` recomputes every position on each call; sampling a story of a few hundred tokens that way costs a
full forward pass per token. `step_logits` evaluates the same parameters one position at a time, keeping each
layer's keys and values, so a new token costs one position's work. It implements the layout of `model.py`
(pre-LayerNorm or none, learned positions, tanh-GELU or ReLU MLP, unembedding without bias) in the model's compute
dtype as `Transformer` does (matrix products, residual stream and cache in `cfg.dtype`; LayerNorm, attention scores
and softmax, logits and the draw in float32, so bfloat16 never decides a sample's softmax), without masks; tests
check it against `Transformer.apply` in both dtypes.

Prompts of different lengths are decoded in lock step: at step t every row reads its token at position t (its
prompt while t is inside the prompt, else its own last sample), so the cache is written at one position for all
rows. Sampling is deterministic given the key: the draw at position t uses `fold_in(key, t)`.

Reading the cache is most of a step's work at the stories' shapes, so a step reads only the positions written so
far, rounded up to a window of `WINDOW` positions: the loop runs window by window, each over a cache of static
length that grows by `WINDOW` between windows (keys are stored positions-last, which makes the score one
contraction over the head dimension for every position). No draw is made while every row is still reading its
prompt. Neither changes a sample.
`fttrace bench --config.objective=decode` measures it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fttrace.engine.members import map_members
from fttrace.model.transformer import ACTIVATIONS, DTYPES, ModelConfig
from fttrace.lm.tokenizer import EOS, PAD

LN_EPSILON = 1e-6  # flax.linen.LayerNorm's default


def _layer_norm(x, p):
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + LN_EPSILON) * p["scale"] + p["bias"]


def _dense(x, p, spec, dtype):
    """flax's Dense in `dtype`: input, kernel and bias cast to it (the master weights stay float32)."""
    out = jnp.einsum(spec, x.astype(dtype), p["kernel"].astype(dtype))
    return out + p["bias"].astype(dtype) if "bias" in p else out


WINDOW = 32  # positions a step's attention reads are rounded up to a multiple of this


def empty_cache(cfg: ModelConfig, batch: int, length: int = 0) -> dict:
    """Keys [B, H, hd, S] and values [B, H, S, hd] of the first S = `length` positions (0: the whole context), one
    of each per layer, all zero, in the model's compute dtype."""
    length = length or cfg.max_len
    zeros = lambda shape: jnp.zeros(shape, DTYPES[cfg.dtype])  # noqa: E731
    return {"k": tuple(zeros((batch, cfg.n_heads, cfg.hd, length)) for _ in range(cfg.n_layers)),
            "v": tuple(zeros((batch, cfg.n_heads, length, cfg.hd)) for _ in range(cfg.n_layers))}


def grow_cache(cache: dict, length: int) -> dict:
    """The cache with room for `length` positions: zeros appended on the position axis."""
    def pad(c, axis):
        widths = [(0, 0)] * c.ndim
        widths[axis] = (0, length - c.shape[axis])
        return jnp.pad(c, widths)
    return {"k": tuple(pad(c, 3) for c in cache["k"]), "v": tuple(pad(c, 2) for c in cache["v"])}


def step_logits(cfg: ModelConfig, params, tokens, t, cache):
    """Logits [B, V] for the position after t, given the tokens [B] at position t; returns the updated cache.
    Attention reads the cache's positions up to t (t must be below the cache's length)."""
    dt = DTYPES[cfg.dtype]
    norm = (lambda x, p: _layer_norm(x.astype(jnp.float32), p)) if cfg.layer_norm else (lambda x, p: x)
    x = (params["embed"]["embedding"][tokens] + params["pos_embed"][t]).astype(dt)
    visible = jnp.arange(cache["v"][0].shape[2]) <= t
    ks, vs = list(cache["k"]), list(cache["v"])
    for i in range(cfg.n_layers):
        p = params[f"block_{i}"]
        h = norm(x, p.get("ln1"))
        a = p["attn"]
        q = _dense(h, a["query"], "bd,dhk->bhk", dt)
        ks[i] = jax.lax.dynamic_update_slice_in_dim(ks[i], _dense(h, a["key"], "bd,dhk->bhk", dt)[..., None], t,
                                                    axis=3)
        vs[i] = jax.lax.dynamic_update_slice_in_dim(vs[i], _dense(h, a["value"], "bd,dhk->bhk", dt)[:, :, None], t,
                                                    axis=2)
        scores = jnp.einsum("bhk,bhks->bhs", q, ks[i]).astype(jnp.float32) / jnp.sqrt(jnp.float32(cfg.hd))
        weights = jax.nn.softmax(jnp.where(visible, scores, jnp.finfo(jnp.float32).min), axis=-1)
        x = x + _dense(jnp.einsum("bhs,bhsk->bhk", weights.astype(dt), vs[i]), a["out"], "bhk,hkd->bd", dt)
        m = p["mlp"]
        hidden = ACTIVATIONS[cfg.activation](_dense(norm(x, p.get("ln2")), m["fc_in"], "bd,df->bf", dt))
        x = x + _dense(hidden, m["fc_out"], "bf,fd->bd", dt)
    if cfg.layer_norm:
        x = _layer_norm(x.astype(jnp.float32), params["ln_f"])
    logits = x.astype(dt) @ params["unembed"]["kernel"].astype(dt)
    return logits.astype(jnp.float32), {"k": tuple(ks), "v": tuple(vs)}


def choose(key, logits, temperature: float, top_k: int):
    """One token per row: the argmax for temperature 0 (greedy), else a draw among the top_k (0: all) at
    temperature."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def generate(cfg: ModelConfig, params, prompts, prompt_lengths, key, max_new: int, temperature: float = 1.0,
             top_k: int = 0, window: int = WINDOW):
    """Continuations of `prompts` [B, P] (PAD after each row's `prompt_lengths`): tokens [B, max_new].

    A row stops after its EOS (which is kept) or after `max_new` tokens or at the model's context end; what
    follows is PAD. window: attention reads the positions so far rounded up to a multiple of this (the context:
    every position at every step; the samples are the same).
    """
    batch, width = prompts.shape
    size = width + max_new
    buffer = jnp.zeros((batch, size), jnp.int32).at[:, :width].set(prompts)
    prompt_lengths = jnp.asarray(prompt_lengths, jnp.int32)
    last = min(cfg.max_len, size) - 1  # positions fed: 0 .. last-1

    def draw(t, logits):  # no row writes at t while every row is still inside its prompt: no draw is needed
        return jax.lax.cond((t + 1 >= prompt_lengths).any(),
                            lambda: choose(jax.random.fold_in(key, t), logits, temperature, top_k),
                            lambda: jnp.zeros(batch, jnp.int32))

    def body(t, carry):
        buffer, cache, done = carry
        logits, cache = step_logits(cfg, params, buffer[:, t], t, cache)
        new = draw(t, logits)
        made = t + 1 - prompt_lengths  # how many tokens this row has generated before this one
        generating = (made >= 0) & (made < max_new)
        token = jnp.where(done, PAD, new)
        buffer = buffer.at[:, t + 1].set(jnp.where(generating, token, buffer[:, t + 1]))
        done = done | (generating & (new == EOS))
        return buffer, cache, done

    carry = (buffer, empty_cache(cfg, batch, min(window, last)), jnp.zeros(batch, bool))
    for start in range(0, last, window):  # window by window: the cache holds the positions up to the window's end
        end = min(start + window, last)
        buffer, cache, done = carry
        carry = jax.lax.fori_loop(start, end, body, (buffer, grow_cache(cache, end), done))
    buffer = carry[0]
    index = prompt_lengths[:, None] + jnp.arange(max_new)[None, :]
    out = jnp.take_along_axis(buffer, jnp.minimum(index, size - 1), axis=1)
    return jnp.where(index < cfg.max_len, out, PAD)


def generate_members(cfg: ModelConfig, params, prompts, prompt_lengths, keys, max_new: int,
                     temperature: float = 1.0, top_k: int = 0, member_batch: int = 0, window: int = WINDOW):
    """`generate` for every member (leading axis of `params` and `keys`) on the same prompts: [M, B, max_new].

    member_batch: members decoded together (their caches live at once); 0: all of them.
    """
    one = lambda p, k: generate(cfg, p, prompts, prompt_lengths, k, max_new, temperature, top_k,  # noqa: E731
                                window)
    if member_batch:
        return map_members(one, params, keys, batch=member_batch)
    return jax.vmap(one)(params, keys)
