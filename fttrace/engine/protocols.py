"""Fine-tuning protocols: which parameters fine-tuning may move, and how.

A config that sweeps `sweep.protocol` names protocols defined in `protocols.named` (name -> settings):
  full   every parameter trains (the default fine-tuning)
  l2sp   every parameter trains, with the L2-SP penalty (strength/2) ||w - w_pretrained||^2 added to the loss
         (`strength` >= 0; 0 is full fine-tuning, bit for bit)
  top_k  only the top `top_k` blocks and the parameters above them (final LayerNorm, unembedding) train;
         0 <= top_k <= model.n_layers (0: the output head only)
  lora   the base weights stay frozen; each target matrix W (`protocols.targets`) gets a trainable low-rank
         update: W_eff = W + (lora_alpha / rank) A B with A [in, rank] random, B [rank, out] zero at the start
  svf    singular-value fine-tuning: W = U diag(s) V^T from the pretrained W's SVD; only a shift ds of the
         singular values trains: W_eff = U diag(s + ds) V^T = W + U diag(ds) V^T

Every protocol is one parameterisation so that all of them run in one vmapped program: a member's trainable tree
is {"model": the plain parameters, "lora": per target {a, b}, "lora_scale", "svf": per target {u, ds, vh}} (the
"lora" / "svf" parts only where a member of the group uses them, LoRA at the group's largest rank), and a
per-member 0/1 mask over the flattened tree says which entries train: the mask zeroes the gradients (before
clipping) and the updates (so weight decay leaves frozen entries alone too). `effective_params` merges a tree into
the plain parameters the model reads; evaluations after fine-tuning see only the merged parameters. A config
without `sweep.protocol` never builds a tree: its members train exactly as before.

Members carry `protocol` (the name), `protocol_kind`, `lora_rank`, `top_k_layers` and `l2sp` (NaN where the
setting does not apply) as hyperparameter columns.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import flax
import jax
import jax.flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
import pandas as pd

from fttrace.engine import train

from fttrace.model import trees
from fttrace.model.transformer import ModelConfig, init_params
from fttrace.errors import UserError

KINDS = ("full", "l2sp", "top_k", "lora", "svf")
KIND_CODES = {kind: i for i, kind in enumerate(KINDS)}
SETTINGS = {"full": None, "l2sp": "strength", "top_k": "top_k", "lora": "rank", "svf": None}  # each kind's one setting
# Block matrices that LoRA and SVF may adapt (in every block), with how many leading kernel axes are the input.
MATRIX_INPUT_AXES = {"attn.query": 1, "attn.key": 1, "attn.value": 1, "attn.out": 2, "mlp.fc_in": 1,
                     "mlp.fc_out": 1}
COLUMNS = ("protocol", "protocol_kind", "lora_rank", "top_k_layers", "l2sp")


def in_sweep(config) -> bool:
    return bool(config.sweep.get("protocol", ()))


@flax.struct.dataclass
class UpdateSpec:
    """One member's protocol as the optimiser sees it (see apply_gradients): which flat entries train, the L2-SP
    strength and the pretrained flat vector it pulls toward."""
    mask: jax.Array  # [P] 0/1
    l2sp: jax.Array  # scalar
    anchor: jax.Array  # [P]


# ---------------------------------------------------------------------------------------------- config and members

def validate(config, n_layers: int, block_params) -> None:
    """Check `sweep.protocol` and `protocols.*`; `block_params` is one block's parameter shapes (a nested dict)."""
    def require(ok, key, message):
        if not ok:
            raise UserError(f"config key {key!r}: {message}")
    sweep = config.sweep.get("protocol", ())
    require(isinstance(sweep, tuple), "sweep.protocol", "must be a tuple of protocol names")
    if not sweep:
        return
    require("protocols" in config, "protocols", "missing section (needed by sweep.protocol)")
    named = config.protocols.get("named", {})
    for name in sweep:
        require(name in named, "sweep.protocol", f"unknown protocol {name!r}; defined in protocols.named: "
                                                 f"{', '.join(named) or 'none'}")
    for name, p in named.items():
        key = f"protocols.named.{name}"
        kind = p.get("kind")
        require(kind in KINDS, f"{key}.kind", f"unknown protocol kind {kind!r}; known: {', '.join(KINDS)}")
        for setting in p:
            require(setting in ("kind", SETTINGS[kind]), f"{key}.{setting}",
                    f"not a setting of a {kind!r} protocol" + (f" (its setting: {SETTINGS[kind]})" if SETTINGS[kind]
                                                               else " (it has none)"))
        if kind == "lora":
            rank = p.get("rank")
            require(isinstance(rank, int) and not isinstance(rank, bool) and rank > 0, f"{key}.rank",
                    f"must be a positive integer, got {rank!r}")
        if kind == "top_k":
            k = p.get("top_k")
            require(isinstance(k, int) and not isinstance(k, bool) and 0 <= k <= n_layers, f"{key}.top_k",
                    f"must be an integer in [0, {n_layers}] (the model's layer count), got {k!r}")
        if kind == "l2sp":
            s = p.get("strength")
            require(isinstance(s, (int, float)) and not isinstance(s, bool) and s >= 0 and math.isfinite(s),
                    f"{key}.strength", f"must be a non-negative number, got {s!r}")
    targets = config.protocols.get("targets", ())
    require(isinstance(targets, tuple) and len(targets) > 0, "protocols.targets", "must be a non-empty tuple")
    for target in targets:
        node = block_params
        for part in target.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        kernel = node.get("kernel") if isinstance(node, dict) else None
        require(target in MATRIX_INPUT_AXES and kernel is not None and len(kernel.shape) >= 2, "protocols.targets",
                f"{target!r} is not a weight matrix of a block; matrices: {', '.join(MATRIX_INPUT_AXES)}")
    alpha = config.protocols.get("lora_alpha", 1.0)
    require(isinstance(alpha, (int, float)) and alpha > 0, "protocols.lora_alpha", "must be positive")


def member_columns(config, name: str) -> dict:
    """The hyperparameter columns of a member fine-tuned with protocol `name`."""
    p = config.protocols.named[name]
    kind = p["kind"]
    return dict(protocol=name, protocol_kind=kind,
                lora_rank=float(p["rank"]) if kind == "lora" else np.nan,
                top_k_layers=float(p["top_k"]) if kind == "top_k" else np.nan,
                l2sp=float(p["strength"]) if kind == "l2sp" else np.nan)


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a group's trees hold: the adapted matrices, LoRA's rank (0: no LoRA part), whether an SVF part."""
    targets: tuple
    n_layers: int
    lora_rank: int
    svf: bool
    lora_alpha: float


def group_layout(config, n_layers: int, members: pd.DataFrame) -> Layout:
    ranks = members.lora_rank[members.protocol_kind == "lora"]
    return Layout(tuple(config.protocols.targets), n_layers, int(ranks.max()) if len(ranks) else 0,
                  bool((members.protocol_kind == "svf").any()), float(config.protocols.get("lora_alpha", 1.0)))


def member_arrays(members: pd.DataFrame) -> dict:
    """Per-member numbers of the protocols (kind code, LoRA rank, top k, L2-SP strength) as arrays."""
    return dict(kind=members.protocol_kind.map(KIND_CODES).to_numpy(np.int32),
                rank=members.lora_rank.fillna(0).to_numpy(np.int32),
                top_k=members.top_k_layers.fillna(0).to_numpy(np.int32),
                l2sp=members.l2sp.fillna(0.0).to_numpy(np.float32))


# -------------------------------------------------------------------------------------------------- the trees

def matrices(layout: Layout):
    """(block-relative path, path of the kernel in the parameters, input axes) of every adapted matrix."""
    out = []
    for i in range(layout.n_layers):
        for target in layout.targets:
            path = (f"block_{i}", *target.split("."))
            out.append((path, path + ("kernel",), MATRIX_INPUT_AXES[target]))
    return out


def _as_matrix(kernel, input_axes: int):
    return kernel.reshape(math.prod(kernel.shape[:input_axes]), -1)


def wrap(layout: Layout, params, key):
    """One member's trainable tree, equal in effect to `params`: LoRA B = 0, SVF ds = 0."""
    tree = {"model": params}
    if layout.lora_rank:
        lora = {}
        for j, (path, kernel_path, axes) in enumerate(matrices(layout)):
            w = _as_matrix(trees.get(params, kernel_path), axes)
            # Column by column, so that a member's first `rank` columns do not depend on the group's largest rank.
            columns = jax.vmap(lambda c, k=jax.random.fold_in(key, j), n=w.shape[0]: jax.random.normal(
                jax.random.fold_in(k, c), (n,)))(jnp.arange(layout.lora_rank))
            a = columns.T / math.sqrt(w.shape[0])
            lora = trees.replace(lora, path, create=True,
                                 value={"a": a, "b": jnp.zeros((layout.lora_rank, w.shape[1]))})
        tree["lora"] = lora
        tree["lora_scale"] = jnp.zeros(())  # set per member by `with_lora_scale`
    if layout.svf:
        svf = {}
        for path, kernel_path, axes in matrices(layout):
            u, s, vh = jnp.linalg.svd(_as_matrix(trees.get(params, kernel_path), axes), full_matrices=False)
            svf = trees.replace(svf, path, create=True, value={"u": u, "ds": jnp.zeros_like(s), "vh": vh})
        tree["svf"] = svf
    return tree


def effective_params(layout: Layout, tree):
    """The plain parameters a tree stands for (what the model reads)."""
    params = tree["model"]
    for path, kernel_path, axes in matrices(layout):
        kernel = trees.get(params, kernel_path)
        w = _as_matrix(kernel, axes)
        if "lora" in tree:
            lora = trees.get(tree["lora"], path)
            w = w + tree["lora_scale"] * (lora["a"] @ lora["b"])
        if "svf" in tree:
            svf = trees.get(tree["svf"], path)
            w = w + (svf["u"] * svf["ds"]) @ svf["vh"]
        params = trees.replace(params, kernel_path, w.reshape(kernel.shape))
    return params


def _top_k_trains(path: tuple, n_layers: int, top_k):
    """Whether parameter `path` (of the model) trains under top-k fine-tuning (a traced bool)."""
    first = path[0]
    if first.startswith("block_"):
        return int(first.split("_")[1]) >= n_layers - top_k
    return jnp.asarray(first in ("ln_f", "unembed"))


def update_mask(layout: Layout, tree, kind, rank, top_k):
    """One member's 0/1 mask over its flattened tree: the entries its protocol trains."""
    dense = (kind == KIND_CODES["full"]) | (kind == KIND_CODES["l2sp"])
    model = flax.traverse_util.flatten_dict(tree["model"])
    mask = {"model": flax.traverse_util.unflatten_dict({
        path: jnp.broadcast_to(dense | ((kind == KIND_CODES["top_k"]) & _top_k_trains(path, layout.n_layers, top_k)),
                               x.shape).astype(jnp.float32) for path, x in model.items()})}
    if "lora" in tree:
        on = (kind == KIND_CODES["lora"]) & (jnp.arange(layout.lora_rank) < rank)
        mask["lora"] = {}
        for path, _, _ in matrices(layout):
            lora = trees.get(tree["lora"], path)
            mask["lora"] = trees.replace(mask["lora"], path, create=True, value={
                "a": jnp.broadcast_to(on[None, :], lora["a"].shape).astype(jnp.float32),
                "b": jnp.broadcast_to(on[:, None], lora["b"].shape).astype(jnp.float32)})
        mask["lora_scale"] = jnp.zeros(())
    if "svf" in tree:
        on = (kind == KIND_CODES["svf"]).astype(jnp.float32)
        mask["svf"] = jax.tree_util.tree_map_with_path(
            lambda p, x: jnp.broadcast_to(on if p[-1].key == "ds" else 0.0, x.shape).astype(jnp.float32),
            tree["svf"])
    return jax.flatten_util.ravel_pytree(mask)[0]


def prepare(layout: Layout, params, key, rank):
    """One fine-tuning member's trainable tree, from its pretrained parameters (equal to them in effect)."""
    tree = wrap(layout, params, jax.random.fold_in(key, 0x10A))
    if "lora_scale" in tree:
        tree["lora_scale"] = jnp.where(rank > 0, layout.lora_alpha / jnp.maximum(rank, 1), 0.0).astype(jnp.float32)
    return tree


def update_spec(layout: Layout, tree, kind, rank, top_k, l2sp) -> UpdateSpec:
    """One member's UpdateSpec; `tree` is its tree before fine-tuning (the L2-SP anchor)."""
    return UpdateSpec(mask=update_mask(layout, tree, kind, rank, top_k), l2sp=jnp.asarray(l2sp, jnp.float32),
                      anchor=jax.flatten_util.ravel_pytree(tree)[0])


def fan_out(parent, parent_index, phase, lrs, keys, layout: Layout, members: pd.DataFrame, placement=None,
            hyper=None):
    """Fine-tuning members of a protocol sweep: (state whose params are the members' trees, their UpdateSpec).

    Like train.fan_out, with each child's parameters wrapped into its tree; `members` is the children's table
    (protocol columns). placement: where member-stacked arrays go (the study's Placement; None: as they are).
    hyper: the members' optimiser hyperparameters (train.init_members).
    """
    arrays = member_arrays(members)
    if placement is not None:
        arrays = placement.place(arrays)
    wrap_all = jax.jit(jax.vmap(functools.partial(prepare, layout)))
    state = train.fan_out(parent, parent_index, phase, lrs, keys, wrap=lambda p: wrap_all(p, keys, arrays["rank"]),
                          hyper=hyper)
    spec = jax.jit(jax.vmap(functools.partial(update_spec, layout)))(state.params, arrays["kind"], arrays["rank"],
                                                                      arrays["top_k"], arrays["l2sp"])
    return state, spec


def merge(layout: Layout, state):
    """`state` with its member-stacked trees merged into plain parameters (what evaluations read)."""
    return state.replace(params=jax.jit(jax.vmap(functools.partial(effective_params, layout)))(state.params))


class Reparameterised:
    """A Transformer whose `apply` takes a protocol tree: it merges the tree into plain parameters first."""

    def __init__(self, model, layout: Layout):
        self.model, self.layout, self.cfg = model, layout, model.cfg

    def apply(self, variables, *args, **kwargs):
        return self.model.apply({"params": effective_params(self.layout, variables["params"])}, *args, **kwargs)


# Fine-tuning protocols a config may name in `sweep.protocol` (fttrace/engine/protocols.py): name -> kind and setting.
PROTOCOLS = dict(
    full=dict(kind="full"),
    l2sp_1e_1=dict(kind="l2sp", strength=1e-1),
    l2sp_1=dict(kind="l2sp", strength=1.0),
    top1=dict(kind="top_k", top_k=1),
    lora2=dict(kind="lora", rank=2),
    svf=dict(kind="svf"),
    # Defined for overrides (--config.sweep.protocol=...): in a pilot of configs/protocols.py at the large LR,
    # l2sp_1e_2 matched full fine-tuning and lora4 matched lora2 within their intervals.
    l2sp_1e_2=dict(kind="l2sp", strength=1e-2),
    lora4=dict(kind="lora", rank=4),
)


def protocols_section(phase: str | None = None) -> ml_collections.ConfigDict:
    """The `protocols` section: the named protocols, the block matrices LoRA and SVF adapt (every block's; all else
    stays frozen for them), LoRA's alpha (its update is (lora_alpha / rank) A B); for a language-model study also
    `phase`, the fine-tuning phase whose members `sweep.protocol` parameterises."""
    section = dict(named=PROTOCOLS, targets=("attn.query", "attn.key", "attn.value", "attn.out", "mlp.fc_in",
                                             "mlp.fc_out"), lora_alpha=8.0)
    if phase is not None:
        section["phase"] = phase
    return ml_collections.ConfigDict(section)


def validate_for_model(config, model) -> None:
    """`sweep.protocol` and the `protocols` section against the model (`config.model`, or a ModelConfig)."""
    layers = [model.n_layers, *config.sweep.get("shapes", {}).get("n_layers", ())]  # top_k must fit every depth
    if isinstance(model, ModelConfig):
        cfg = model
    else:  # the vocabulary, context and dtype do not change which matrices a block has
        cfg = ModelConfig.from_config(dict(model, vocab_size=model.get("vocab_size") or 8,
                                           max_len=model.get("max_len") or 8, dtype="float32"))
    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
    validate(config, min(layers), jax.tree.map(lambda x: x, shapes["block_0"]))
