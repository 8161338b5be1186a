"""A small decoder-only transformer (Flax linen).

Pre-LayerNorm by default; with `layer_norm=False` the residual stream is untouched between blocks, which is the
layout Tracr-compiled weights expect. The forward pass can return every intermediate the microscope needs:
the residual stream after the embeddings and after each block, each block's attention output and weights, each
head's and each MLP's contribution to the residual stream, and the MLP hidden units. Optional multiplicative masks
switch off MLP neurons and attention heads (pruning); an optional patch replaces chosen heads' and MLPs'
contributions with given ones (activation patching between models); an optional linear map of the residual stream
after the embeddings and after each block (`residual_maps`) projects directions out of it.

Optional `hooks` name the activations as TransformerLens does (`hook_embed`, `blocks.{l}.attn.hook_pattern`,
`blocks.{l}.hook_resid_post`, `ln_final.hook_normalized`, ...: `hook_names`) and may read or replace each of them
(fttrace/model/hooks.py records and edits through them). Without hooks not one operation differs from the plain pass.

Layers are a Python loop, not a `lax.scan`: on XLA:CPU the unrolled form is about twice as fast for these tiny
models, and the layer count is small enough that compile time stays low.

Training and evaluation only read the logits at the answer (last) position. `answer_only=True` computes just
what those need: the last block's keys and values at every position but its query, attention output and MLP at
the last position only, and the unembedding there. That removes about half of the last block's work and most
of the unembedding; the values are those of the full forward pass at that position.

Numbers: parameters are float32 (the master weights); `dtype` is the compute dtype of the matrix products and the
residual stream, LayerNorm, softmax and the logits stay float32. "auto" is bfloat16 where the backend is a GPU or
TPU and float32 on a CPU (`resolve_dtype`). Attention that needs no weights (no capture, no patch: training and
evaluation) goes through `jax.nn.dot_product_attention` on an accelerator, cuDNN's fused kernel on a GPU where it
takes the shape and dtype; on a CPU it keeps the einsum form, whose floats the stored results were computed with
(`attention_path`).

Shapes: a local's name ends in its shape where it helps (`x_BxTxD`), in the letters B batch, T positions, Q query
positions (1 at the answer only), H heads, K head size, D the residual width (d_model), F the MLP's hidden units.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ACCELERATORS = ("gpu", "tpu")
ATTENTION_PATHS = ("auto", "einsum", "fused")


def resolve_dtype(name: str, backend: str | None = None) -> str:
    """The compute dtype that `name` means on `backend` (default: JAX's): "auto" is bfloat16 on a GPU or TPU,
    float32 elsewhere; any other name is itself."""
    if name != "auto":
        return name
    return "bfloat16" if (backend or jax.default_backend()) in ACCELERATORS else "float32"


def attention_path(name: str, backend: str | None = None) -> str:
    """Which form computes attention that needs no weights: "einsum" (the weights materialised, as on a CPU) or
    "fused" (`jax.nn.dot_product_attention`); "auto" is fused on a GPU or TPU, the einsum on a CPU."""
    if name != "auto":
        return name
    return "fused" if (backend or jax.default_backend()) in ACCELERATORS else "einsum"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    max_len: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    head_dim: int = 0  # 0: d_model // n_heads
    d_mlp: int = 0  # 0: 4 * d_model
    layer_norm: bool = True
    causal: bool = True
    activation: str = "gelu"
    use_bias: bool = True
    dtype: str = "float32"  # compute dtype ("auto": by backend, resolve_dtype); parameters stay float32
    attention: str = "auto"  # attention without weights: "einsum", "fused" or "auto" (by backend, attention_path)

    def __post_init__(self):
        object.__setattr__(self, "dtype", resolve_dtype(self.dtype))

    @property
    def hd(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    @property
    def mlp(self) -> int:
        return self.d_mlp or 4 * self.d_model

    @classmethod
    def from_config(cls, cfg: Any) -> "ModelConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(cfg).items() if k in fields})


_init = nn.initializers.normal(stddev=0.02)


class Scope:
    """Hook points under a name prefix: `hooks` (an object with `wants(name)` and `__call__(name, x) -> x`) seen
    from inside a block or sublayer. `at(name, x)` passes x through the hook named prefix + name, if wanted."""

    def __init__(self, hooks, prefix: str = ""):
        self.hooks, self.prefix = hooks, prefix

    def sub(self, prefix: str) -> "Scope":
        return Scope(self.hooks, self.prefix + prefix)

    def wants(self, name: str) -> bool:
        return self.hooks.wants(self.prefix + name)

    def at(self, name: str, x):
        return self.hooks(self.prefix + name, x) if self.wants(name) else x


def _scope(hooks: Scope | None, prefix: str) -> Scope | None:
    return None if hooks is None else hooks.sub(prefix)


def einsum_attention(q_BxQxHxK, k_BxTxHxK, v_BxTxHxK, causal: bool, hooks: Scope | None = None):
    """Attention of the queries over the keys and values with its weights materialised: (heads [B, Q, H, K],
    weights [B, H, Q, T] float32). Scores and softmax in float32; `hooks` sees the scores and the pattern."""
    scale = jnp.sqrt(q_BxQxHxK.shape[-1]).astype(jnp.float32)
    logits_BxHxQxT = jnp.einsum("bqhd,bkhd->bhqk", q_BxQxHxK, k_BxTxHxK).astype(jnp.float32) / scale
    if causal:
        t = k_BxTxHxK.shape[-3]
        logits_BxHxQxT = jnp.where(jnp.tril(jnp.ones((t, t), bool)), logits_BxHxQxT, jnp.finfo(jnp.float32).min)
    if hooks is not None:
        logits_BxHxQxT = hooks.at("hook_attn_scores", logits_BxHxQxT)
    weights_BxHxQxT = jax.nn.softmax(logits_BxHxQxT, axis=-1)
    if hooks is not None:
        weights_BxHxQxT = hooks.at("hook_pattern", weights_BxHxQxT)
    return jnp.einsum("bhqk,bkhd->bqhd", weights_BxHxQxT.astype(v_BxTxHxK.dtype), v_BxTxHxK), weights_BxHxQxT


def fused_attention(q_BxQxHxK, k_BxTxHxK, v_BxTxHxK, causal: bool, implementation: str | None = None):
    """`einsum_attention`'s heads without the weights, through `jax.nn.dot_product_attention` (scores in float32).

    implementation None: on a GPU cuDNN's fused kernel, where it takes these shapes and dtype (bfloat16 or float16,
    head size a multiple of 8; under vmap the member axis folds into the batch), else XLA's (which JAX's own default,
    None, always picks). Any other value goes to JAX as it is ("xla", "cudnn")."""
    def attend(impl):
        return jax.nn.dot_product_attention(q_BxQxHxK, k_BxTxHxK, v_BxTxHxK, is_causal=causal, implementation=impl)

    if implementation is None and jax.default_backend() == "gpu":
        try:  # cuDNN refuses what it cannot take while tracing, before anything is built
            return attend("cudnn")
        except (NotImplementedError, ValueError, RuntimeError):
            pass
    return attend(implementation)


class Attention(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BxTxD, head_mask=None, last_query_only=False, per_head=False, patch=None, hooks=None):
        """x [B, T, D] -> output [B, Q, D], weights [B, H, Q, T] (None where fused: `attention_path`) and (with
        `per_head`, `patch` or a wanted `hook_result`) each head's contribution [B, Q, H, D] (else None); Q is 1
        with `last_query_only`, else T.

        patch: (weights [H], contributions [B, Q, H, D]): head h's contribution becomes
        w_h x the given one + (1 - w_h) x its own.
        hooks: a Scope: hook_q, hook_k, hook_v [B, T, H, K], hook_attn_scores, hook_pattern [B, H, Q, T], hook_z
        [B, T, H, K] (after the head mask), hook_result [B, T, H, D] (each head's contribution, after the patch).
        """
        c = self.cfg
        dt = DTYPES[c.dtype]
        proj = lambda name: nn.DenseGeneral(  # noqa: E731
            (c.n_heads, c.hd), use_bias=c.use_bias, kernel_init=_init, dtype=dt, name=name)
        q_BxQxHxK = proj("query")(x_BxTxD[..., -1:, :] if last_query_only else x_BxTxD)
        k_BxTxHxK, v_BxTxHxK = proj("key")(x_BxTxD), proj("value")(x_BxTxD)
        if hooks is not None:
            q_BxQxHxK = hooks.at("hook_q", q_BxQxHxK)
            k_BxTxHxK, v_BxTxHxK = hooks.at("hook_k", k_BxTxHxK), hooks.at("hook_v", v_BxTxHxK)
        causal = c.causal and not last_query_only  # the last query sees every position anyway
        if hooks is None and not per_head and patch is None and attention_path(c.attention) == "fused":
            heads_BxQxHxK, weights_BxHxQxT = fused_attention(q_BxQxHxK, k_BxTxHxK, v_BxTxHxK, causal), None
        else:
            heads_BxQxHxK, weights_BxHxQxT = einsum_attention(q_BxQxHxK, k_BxTxHxK, v_BxTxHxK, causal, hooks)
        if head_mask is not None:
            heads_BxQxHxK = heads_BxQxHxK * head_mask[:, None].astype(dt)
        if hooks is not None:
            heads_BxQxHxK = hooks.at("hook_z", heads_BxQxHxK)
        out_proj = nn.DenseGeneral(c.d_model, axis=(-2, -1), use_bias=c.use_bias, kernel_init=_init, dtype=dt,
                                   name="out")
        out_BxQxD = out_proj(heads_BxQxHxK)
        result = hooks is not None and hooks.wants("hook_result")
        if not (per_head or patch is not None or result):
            return out_BxQxD, weights_BxHxQxT, None
        kernel_HxKxD = out_proj.variables["params"]["kernel"].astype(dt)
        contrib_BxQxHxD = jnp.einsum("bqhe,hed->bqhd", heads_BxQxHxK, kernel_HxKxD)
        if patch is not None:
            w, given = patch
            w = w[:, None].astype(dt)
            out_BxQxD = out_BxQxD + jnp.einsum("h,bqhd->bqd", w[:, 0], given.astype(dt) - contrib_BxQxHxD)
            contrib_BxQxHxD = contrib_BxQxHxD + w * (given.astype(dt) - contrib_BxQxHxD)
        if result:  # the output follows the hooked contributions (unchanged ones add exactly zero)
            hooked_BxQxHxD = hooks.at("hook_result", contrib_BxQxHxD)
            out_BxQxD = out_BxQxD + (hooked_BxQxHxD - contrib_BxQxHxD).sum(-2)
            contrib_BxQxHxD = hooked_BxQxHxD
        return out_BxQxD, weights_BxHxQxT, contrib_BxQxHxD


class MLP(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BxTxD, neuron_mask=None, hooks=None):
        """x [B, T, D] -> (output [B, T, D], hidden units [B, T, F]). hooks: a Scope: hook_pre (before the
        activation), hook_post (after it and the neuron mask)."""
        c = self.cfg
        dt = DTYPES[c.dtype]
        fc_in = nn.Dense(c.mlp, use_bias=c.use_bias, kernel_init=_init, dtype=dt, name="fc_in")
        if hooks is None:
            h_BxTxF = ACTIVATIONS[c.activation](fc_in(x_BxTxD))
        else:
            h_BxTxF = ACTIVATIONS[c.activation](hooks.at("hook_pre", fc_in(x_BxTxD)))
        if neuron_mask is not None:
            h_BxTxF = h_BxTxF * neuron_mask.astype(dt)
        if hooks is not None:
            h_BxTxF = hooks.at("hook_post", h_BxTxF)
        fc_out = nn.Dense(c.d_model, use_bias=c.use_bias, kernel_init=_init, dtype=dt, name="fc_out")
        return fc_out(h_BxTxF), h_BxTxF


class Block(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, head_mask=None, neuron_mask=None, last_only=False, capture=False, patch=None, hooks=None):
        """last_only: the block's output at the last position only ([B, 1, d]).
        patch: {"heads": [H], "head_out": [B, T, H, d], "mlp": scalar, "mlp_out": [B, T, d]} (Transformer).
        hooks: a Scope at blocks.{l}.: ln1/ln2.hook_normalized, attn.*, hook_attn_out, hook_resid_mid, mlp.*,
        hook_mlp_out (hook_resid_pre and hook_resid_post are the Transformer's, around the residual maps)."""
        if self.cfg.layer_norm:
            layer_norm = lambda name: nn.LayerNorm(name=name, dtype=jnp.float32)  # noqa: E731
            norm = layer_norm if hooks is None else (
                lambda name: (lambda y: hooks.at(f"{name}.hook_normalized", layer_norm(name)(y))))
        else:
            norm = lambda name: (lambda y: y)  # noqa: E731
        head_patch = None if patch is None else (patch["heads"], patch["head_out"])
        attn_out, weights, head_out = Attention(self.cfg, name="attn")(norm("ln1")(x), head_mask, last_only,
                                                                       per_head=capture, patch=head_patch,
                                                                       hooks=_scope(hooks, "attn."))
        if hooks is not None:
            attn_out = hooks.at("hook_attn_out", attn_out)
        x = (x[..., -1:, :] if last_only else x) + attn_out
        if hooks is not None:
            x = hooks.at("hook_resid_mid", x)
        mlp_out, hidden = MLP(self.cfg, name="mlp")(norm("ln2")(x), neuron_mask, hooks=_scope(hooks, "mlp."))
        if patch is not None:
            mlp_out = mlp_out + patch["mlp"].astype(mlp_out.dtype) * (patch["mlp_out"].astype(mlp_out.dtype) - mlp_out)
        if hooks is not None:
            mlp_out = hooks.at("hook_mlp_out", mlp_out)
        x = x + mlp_out
        inner = dict(attn_out=attn_out, attn_weights=weights, mlp_hidden=hidden)
        return x, dict(inner, head_out=head_out, mlp_out=mlp_out) if capture else inner


class Transformer(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens, masks=None, capture: bool = False, answer_only: bool = False, patch=None,
                 residual_maps=None, hooks=None):
        """tokens [B, T] int -> logits [B, T, V] (float32).

        masks: optional {"heads": [L, H], "neurons": [L, d_mlp]} multiplicative masks.
        capture: also return {"residual": [L+1, B, T, d], "attn_out": [L, B, T, d],
                              "attn_weights": [L, B, H, T, T], "mlp_hidden": [L, B, T, d_mlp],
                              "head_out": [L, B, T, H, d] (each head's contribution to the residual stream),
                              "mlp_out": [L, B, T, d]}.
        answer_only: return only the logits at the last position, [B, V] (computed without the rest).
        patch: {"heads": [L, H], "head_out": [L, B, T, H, d], "mlp": [L], "mlp_out": [L, B, T, d]}: a weight of 1
            replaces that head's (MLP's) contribution by the given one (another model's `capture`), 0 keeps it.
        residual_maps: [L+1, d, d]: the residual stream after the embeddings (0) and after block i (i + 1) is
            multiplied by that matrix (the identity keeps it; I - U U^T ablates the orthonormal directions U).
        hooks: an object with `wants(name) -> bool` and `__call__(name, activation) -> activation`, called at each
            wanted hook point (`hook_names`) with that activation, which it may replace (same shape).
        """
        if (capture or patch is not None or hooks is not None) and answer_only:
            raise ValueError("capture, patch and hooks need every position; they cannot be combined with "
                             "answer_only=True")
        c = self.cfg
        t = tokens.shape[-1]
        hooks = None if hooks is None else Scope(hooks)
        x = nn.Embed(c.vocab_size, c.d_model, embedding_init=_init, name="embed")(tokens)
        if hooks is None:
            x = x + self.param("pos_embed", _init, (c.max_len, c.d_model))[:t]
        else:
            pos = self.param("pos_embed", _init, (c.max_len, c.d_model))[:t]
            x = hooks.at("hook_embed", x) + hooks.at("hook_pos_embed", jnp.broadcast_to(pos, x.shape))
        x = x.astype(DTYPES[c.dtype])
        edit = (lambda y, i: y) if residual_maps is None else (
            lambda y, i: (y @ residual_maps[i].astype(y.dtype)).astype(y.dtype))
        x = edit(x, 0)
        residual, captured = [x], []
        for i in range(c.n_layers):
            head_mask = None if masks is None else masks["heads"][i]
            neuron_mask = None if masks is None else masks["neurons"][i]
            last_only = answer_only and i == c.n_layers - 1
            layer_patch = None if patch is None else {k: v[i] for k, v in patch.items()}
            block = _scope(hooks, f"blocks.{i}.")
            if block is not None:
                x = block.at("hook_resid_pre", x)
            x, inner = Block(c, name=f"block_{i}")(x, head_mask, neuron_mask, last_only, capture, layer_patch,
                                                   block)
            x = edit(x, i + 1)
            if block is not None:
                x = block.at("hook_resid_post", x)
            residual.append(x)
            captured.append(inner)
        if answer_only:
            x = x[..., -1, :]
        if c.layer_norm:
            x = nn.LayerNorm(name="ln_f", dtype=jnp.float32)(x)
            if hooks is not None:
                x = hooks.at("ln_final.hook_normalized", x)
        logits = nn.Dense(c.vocab_size, use_bias=False, kernel_init=_init, dtype=DTYPES[c.dtype],
                          name="unembed")(x).astype(jnp.float32)
        if not capture:
            return logits
        stacked = {k: jnp.stack([inner[k] for inner in captured]) for k in captured[0]}
        return logits, dict(residual=jnp.stack(residual), **stacked)


class _Shapes:
    """Hooks that want every point and record its shape (`hook_names`)."""

    def __init__(self):
        self.shapes = {}

    def wants(self, name: str) -> bool:
        return True

    def __call__(self, name: str, x):
        self.shapes[name] = tuple(x.shape)
        return x


@functools.lru_cache(maxsize=None)
def hook_names(cfg: ModelConfig, batch: int = 1, length: int | None = None) -> dict[str, tuple[int, ...]]:
    """{hook point name: activation shape} of a forward pass of tokens [batch, length] (default max_len), in the
    order the pass reaches them."""
    recorder = _Shapes()
    tokens = jax.ShapeDtypeStruct((batch, length or cfg.max_len), jnp.int32)
    params = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
    jax.eval_shape(lambda p, t: Transformer(cfg).apply({"params": p}, t, hooks=recorder), params, tokens)
    return dict(recorder.shapes)


def full_masks(cfg: ModelConfig) -> dict:
    """Masks that keep every head and neuron (the identity for `Transformer(masks=...)`)."""
    return {"heads": jnp.ones((cfg.n_layers, cfg.n_heads)), "neurons": jnp.ones((cfg.n_layers, cfg.mlp))}


def init_params(cfg: ModelConfig, key: jax.Array):
    return Transformer(cfg).init(key, jnp.zeros((1, cfg.max_len), jnp.int32))["params"]
