"""One member's model, ready to apply (`fttrace.open(workdir).model(member)`), and a stack of members applied at once
(`run.models([...])`, vmapped over the member axis): logits, the activations of a forward pass at TransformerLens's
hook points, user hooks, accuracy on held-out sets, and interventions in the forward pass — ablating MLP neurons,
attention heads or residual-stream directions, and patching heads' or MLPs' contributions in from another forward
pass (of another member on the same inputs, e.g. the parent).

    model = run.model("ft3")
    logits = model(tokens)
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    cache["blocks.0.attn.hook_pattern"]                 # [B, H, T, T]; model.hook_names lists every point
    model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_z", lambda z, hook: z.at[:, :, 2].set(0))])
    model.accuracy(sets["pt"], ablate=Ablation(neurons=[(1, 7)], heads=[(0, 2)]))
    model.logits(tokens, patch=Patch(parent_cache, heads=[(1, 0)], mlps=[1]))
    model.to_str_tokens(tokens[0])                      # the task's vocabulary

A unit is a (layer, index) pair or, as the pruning results name them, a flat index (layer x units per layer +
index). Every array goes in and comes out as numpy; each kind of forward pass compiles once per input shape (and
set of hook functions).
"""
from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from flax import traverse_util

from fttrace.version import __version__
from fttrace.errors import UserError
from fttrace.model.hooks import ActivationCache, Hooks, edits_of, select
from fttrace.model.transformer import ModelConfig, Transformer, full_masks, hook_names
from fttrace.model.vocab import Vocabulary

EXPORT_INFO = "__fttrace__"  # the key of an export's JSON description (model config, member, version)


def _pairs(units, per_layer: int, layers: int, kind: str) -> list[tuple[int, int]]:
    out = []
    for unit in units:
        layer, index = (int(unit[0]), int(unit[1])) if np.ndim(unit) else divmod(int(unit), per_layer)
        if not (0 <= layer < layers and 0 <= index < per_layer):
            raise UserError(f"{kind} unit {unit} does not exist: the model has {layers} layer(s) of {per_layer}")
        out.append((layer, index))
    return out


@dataclasses.dataclass
class Ablation:
    """Units switched off in a forward pass.

    neurons, heads: (layer, index) pairs or flat indices. directions: {position: [k, d] array}: the span of those
    directions is projected out of the residual stream at that position (0: after the embeddings; i + 1: after
    block i), for every token.
    """
    neurons: tuple = ()
    heads: tuple = ()
    directions: dict = dataclasses.field(default_factory=dict)

    def masks(self, cfg: ModelConfig) -> dict | None:
        if not len(self.neurons) and not len(self.heads):
            return None
        neurons, heads = np.ones((cfg.n_layers, cfg.mlp), np.float32), np.ones((cfg.n_layers, cfg.n_heads), np.float32)
        for layer, index in _pairs(self.neurons, cfg.mlp, cfg.n_layers, "neuron"):
            neurons[layer, index] = 0.0
        for layer, index in _pairs(self.heads, cfg.n_heads, cfg.n_layers, "head"):
            heads[layer, index] = 0.0
        return {"heads": heads, "neurons": neurons}

    def residual_maps(self, cfg: ModelConfig) -> np.ndarray | None:
        if not self.directions:
            return None
        maps = np.broadcast_to(np.eye(cfg.d_model, dtype=np.float32), (cfg.n_layers + 1, cfg.d_model, cfg.d_model))
        maps = maps.copy()
        for position, directions in self.directions.items():
            if not 0 <= int(position) <= cfg.n_layers:
                raise UserError(f"residual position {position} does not exist: 0 (after the embeddings) to "
                                f"{cfg.n_layers} (after the last block)")
            u = np.atleast_2d(np.asarray(directions, np.float32))
            if u.shape[-1] != cfg.d_model:
                raise UserError(f"directions at position {position} have width {u.shape[-1]}, the residual stream "
                                f"{cfg.d_model}")
            basis = np.linalg.qr(u.T)[0]  # orthonormal columns spanning the directions
            maps[int(position)] = maps[int(position)] @ (np.eye(cfg.d_model, dtype=np.float32) - basis @ basis.T)
        return maps


@dataclasses.dataclass
class Patch:
    """Contributions to write into a forward pass: those of `source` (the cache of another forward pass's
    `run_with_cache` on the same tokens) for the given heads ((layer, head) pairs or flat indices) and MLPs (layers).
    The source needs each layer's `attn.hook_result` and `hook_mlp_out`."""
    source: Mapping
    heads: tuple = ()
    mlps: tuple = ()

    def spec(self, cfg: ModelConfig, tokens_shape: tuple, members: int | None = None) -> tuple[dict, bool]:
        """(the Transformer's `patch` for tokens of `tokens_shape` ([B, T], or [M, B, T] in a stack of `members`),
        whether its contributions carry a member axis)."""
        heads, mlps = np.zeros((cfg.n_layers, cfg.n_heads), np.float32), np.zeros(cfg.n_layers, np.float32)
        for layer, head in _pairs(self.heads, cfg.n_heads, cfg.n_layers, "head"):
            heads[layer, head] = 1.0
        for layer in self.mlps:
            if not 0 <= int(layer) < cfg.n_layers:
                raise UserError(f"MLP {layer} does not exist: the model has {cfg.n_layers} layer(s)")
            mlps[int(layer)] = 1.0
        source = self.source if isinstance(self.source, ActivationCache) else ActivationCache(self.source)
        try:
            head_out, mlp_out = source.stack("result"), source.stack("mlp_out")
        except KeyError:
            raise UserError("the patch's source cache lacks attn.hook_result or hook_mlp_out of some layer (keep "
                            "them in run_with_cache's names_filter)") from None
        stacked = source.members is not None
        batch = tuple(tokens_shape[-2:])
        expected = (cfg.n_layers,) + ((len(source.members),) if stacked else ()) + batch
        if head_out.shape[:len(expected)] != expected or head_out.ndim != len(expected) + 2:
            got = list(head_out.shape[:-2])
            raise UserError(f"the patch's source cache holds contributions of shape {got} (layers, "
                            f"{'members, ' if stacked else ''}batch, positions) and these tokens need "
                            f"{list(expected)}: patch from a run_with_cache of the same tokens"
                            f"{' and members' if stacked else ''}")
        if stacked and members is None:
            raise UserError(f"the patch's source cache is of a stack of {len(source.members)} members; patch one "
                            "member from one member's cache, or patch the stack (run.models) from it")
        if stacked and len(source.members) != members:
            raise UserError(f"the patch's source cache is of {len(source.members)} members and this stack has "
                            f"{members}")
        if stacked:  # the member axis first, as the vmapped pass takes it
            head_out, mlp_out = np.moveaxis(head_out, 1, 0), np.moveaxis(mlp_out, 1, 0)
        return {"heads": heads, "head_out": head_out, "mlp": mlps, "mlp_out": mlp_out}, stacked


@functools.lru_cache(maxsize=64)
def _program(cfg: ModelConfig, answer_only: bool, record: frozenset, edits: tuple, axes):
    """The jitted forward pass (vmapped over members with `axes`, the in_axes of (params, tokens, masks, residual
    maps, patch)): (logits, {hook point: activation} of the `record` names), with the `edits` ((name, fn), ...)."""
    by_name = {}
    for name, fn in edits:
        by_name.setdefault(name, []).append(fn)
    by_name = {name: tuple(fns) for name, fns in by_name.items()}

    def apply(params, tokens, masks, residual_maps, patch):
        hooks = Hooks(record, by_name) if record or by_name else None
        logits = Transformer(cfg).apply({"params": params}, tokens, masks=masks, answer_only=answer_only,
                                        patch=patch, residual_maps=residual_maps, hooks=hooks)
        return logits, ({} if hooks is None else hooks.cache)
    if axes is None:
        return jax.jit(apply)
    return jax.jit(jax.vmap(apply, in_axes=tuple(dict(a) if isinstance(a, tuple) else a for a in axes)))


class _Forward:
    """What one member's model and a stack of members share: the forward pass under interventions and hooks, named
    as TransformerLens names it. A subclass says how many members it holds (`_members`: None for one)."""

    cfg: ModelConfig
    params: dict
    vocab: Vocabulary | None
    _members: int | None = None

    @property
    def hook_names(self) -> list[str]:
        """Every hook point of the model, in the order a forward pass reaches them."""
        return list(hook_names(self.cfg))

    def _tokens(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens)
        if tokens.ndim == 1:
            tokens = tokens[None]
        ranks = (2,) if self._members is None else (2, 3)
        if tokens.ndim not in ranks or not np.issubdtype(tokens.dtype, np.integer):
            shapes = "[B, T]" if self._members is None else "[B, T] (shared) or [M, B, T] (per member)"
            raise UserError(f"tokens must be integer ids {shapes}; got {tokens.dtype} of shape {list(tokens.shape)}")
        if tokens.ndim == 3 and tokens.shape[0] != self._members:
            raise UserError(f"tokens of shape {list(tokens.shape)} give {tokens.shape[0]} members' inputs; the stack "
                            f"has {self._members} members")
        if tokens.shape[-1] > self.cfg.max_len:
            raise UserError(f"tokens of shape {list(tokens.shape)} have {tokens.shape[-1]} positions; the model reads "
                            f"at most {self.cfg.max_len}")
        if tokens.size and not (0 <= tokens.min() and tokens.max() < self.cfg.vocab_size):
            raise UserError(f"token ids must be in 0 .. {self.cfg.vocab_size - 1} (the model's vocabulary); got "
                            f"{tokens.min()} .. {tokens.max()}")
        return tokens.astype(np.int32)

    def _ablation(self, ablate) -> tuple:
        """(masks, residual maps, whether they carry a member axis): one Ablation for every member, or (in a stack)
        a list of one per member."""
        if ablate is None or isinstance(ablate, Ablation):
            ablate = ablate or Ablation()
            return ablate.masks(self.cfg), ablate.residual_maps(self.cfg), False
        ablations = list(ablate)
        if self._members is None or len(ablations) != self._members:
            raise UserError(f"ablate takes one Ablation{'' if self._members is None else ' or one per member'}; got "
                            f"{len(ablations)} for {self._members or 1} member(s)")
        masks = [a.masks(self.cfg) for a in ablations]
        maps = [a.residual_maps(self.cfg) for a in ablations]
        identity = np.broadcast_to(np.eye(self.cfg.d_model, dtype=np.float32),
                                   (self.cfg.n_layers + 1, self.cfg.d_model, self.cfg.d_model))
        stacked_masks = None if all(m is None for m in masks) else jax.tree.map(
            lambda *x: np.stack(x), *[m if m is not None else jax.tree.map(np.asarray, full_masks(self.cfg))
                                      for m in masks])
        stacked_maps = None if all(m is None for m in maps) else np.stack(
            [m if m is not None else identity for m in maps])
        return stacked_masks, stacked_maps, True

    def _apply(self, tokens, ablate=None, patch: Patch | None = None, record=frozenset(), edits=(),
               answer_only=False):
        tokens = self._tokens(tokens)
        masks, maps, per_member = self._ablation(ablate)
        spec, patch_members = (None, False) if patch is None else patch.spec(self.cfg, tokens.shape, self._members)
        axes = None
        if self._members is not None:
            patch_axes = None if spec is None else {"heads": None, "mlp": None, "head_out": 0 if patch_members else
                                                    None, "mlp_out": 0 if patch_members else None}
            axes = (0, 0 if tokens.ndim == 3 else None, 0 if per_member else None, 0 if per_member else None,
                    patch_axes)
        out = _program(self.cfg, answer_only, frozenset(record), tuple(edits),
                       None if axes is None else _frozen(axes))(self.params, tokens, masks, maps, spec)
        return jax.tree.map(np.asarray, out)

    def __call__(self, tokens, ablate=None, patch: Patch | None = None) -> np.ndarray:
        """Logits [(M,) B, T, V] of tokens [B, T] (as `logits`)."""
        return self.logits(tokens, ablate, patch)

    def logits(self, tokens, ablate=None, patch: Patch | None = None) -> np.ndarray:
        """Logits [(M,) B, T, V] of tokens [B, T]."""
        return self._apply(tokens, ablate, patch)[0]

    def run_with_cache(self, tokens, names_filter=None, ablate=None, patch: Patch | None = None, fwd_hooks=()):
        """(logits, ActivationCache) of tokens [B, T]: the activations at the hook points `names_filter` selects
        (None: all; a name, a list of names or a predicate), under the given interventions and hooks."""
        names = self.hook_names
        logits, cache = self._apply(tokens, ablate, patch, select(names, names_filter), edits_of(names, fwd_hooks))
        return logits, ActivationCache({n: cache[n] for n in names if n in cache}, self._member_names())

    def run_with_hooks(self, tokens, fwd_hooks=(), ablate=None, patch: Patch | None = None) -> np.ndarray:
        """Logits of tokens [B, T] with `fwd_hooks` [(name or filter, fn), ...] applied: `fn(activation, hook)`
        returns the activation to go on with (`hook.name` names the point); jitted, so fn is a pure function of
        arrays (jax.numpy)."""
        return self._apply(tokens, ablate, patch, edits=edits_of(self.hook_names, fwd_hooks))[0]

    def predict(self, tokens, ablate=None, patch: Patch | None = None) -> np.ndarray:
        """The answer [(M,) B] the model gives at the last position."""
        if patch is None:
            return self._apply(tokens, ablate, answer_only=True)[0].argmax(-1)
        return self._apply(tokens, ablate, patch)[0][..., -1, :].argmax(-1)

    def accuracy(self, heldout, ablate=None, patch: Patch | None = None):
        """Share of the (tokens, answers) set answered correctly at the last position (one per member in a stack)."""
        tokens, answers = heldout
        right = np.mean(self.predict(tokens, ablate, patch) == np.asarray(answers), axis=-1)
        return float(right) if self._members is None else right

    def _member_names(self) -> list | None:
        return None

    # -- tokens as strings (the task's vocabulary)

    def _vocab(self) -> Vocabulary:
        if self.vocab is None:
            raise UserError("this model has no vocabulary attached; open it with fttrace.open(workdir).model(member)")
        if not isinstance(self.vocab, Vocabulary):  # a function that reads it, called on first use
            self.vocab = self.vocab()
        return self.vocab

    def to_tokens(self, text, prepend_bos: bool = True) -> np.ndarray:
        """Token ids [B, T] of a text or a list of texts, in the task's vocabulary (Vocabulary.to_tokens)."""
        return self._vocab().to_tokens(text, prepend_bos)

    def to_str_tokens(self, tokens, prepend_bos: bool = True) -> list:
        """The string of each token of a text or of ids [T] / [B, T] (Vocabulary.to_str_tokens)."""
        return self._vocab().to_str_tokens(tokens, prepend_bos)

    def to_string(self, tokens):
        """The text of ids [T] (or of each row of [B, T])."""
        return self._vocab().to_string(tokens)


def _frozen(axes):
    """in_axes made hashable (dicts as sorted item tuples), for the program cache (`_program` undoes it)."""
    return tuple(tuple(sorted(a.items())) if isinstance(a, dict) else a for a in axes)


class MemberModel(_Forward):
    """A model config and one member's parameters (numpy), with the description of the member (`info`) and the
    task's vocabulary (`vocab`: a Vocabulary, a function that returns one when first needed, or None)."""

    def __init__(self, cfg: ModelConfig, params, member: str = "", info: dict | None = None,
                 vocab: Vocabulary | None = None):
        self.cfg, self.params, self.member, self.info, self.vocab = cfg, params, member, dict(info or {}), vocab

    def __repr__(self) -> str:
        c = self.cfg
        return (f"MemberModel({self.member or '?'}: d_model {c.d_model}, {c.n_layers} layer(s) of {c.n_heads} heads "
                f"and {c.mlp} MLP units, vocabulary {c.vocab_size})")

    def export(self, path) -> str:
        """Write the parameters and the description (model config, member, fttrace version) to one .npz file."""
        flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(self.params).items()}
        info = dict(model=dataclasses.asdict(self.cfg), member=self.member, info=self.info,
                    fttrace=__version__)
        path = str(path)
        with open(path, "wb") as f:
            np.savez(f, **flat, **{EXPORT_INFO: np.asarray(json.dumps(info, default=str))})
        return path


class MemberStack(_Forward):
    """Several members of one model shape, their parameters stacked on a leading member axis: every call of a
    MemberModel, evaluated for all of them at once (vmapped), with the member axis first in what it returns
    (logits [M, B, T, V], accuracy [M], a cache's arrays [M, ...]). Tokens are shared ([B, T]) or per member
    ([M, B, T]); `ablate` is one Ablation for all or a list of one per member; a Patch takes the cache of one model
    (the same contributions for all) or of a stack of as many members (each its own)."""

    def __init__(self, models: Sequence[MemberModel]):
        models = list(models)
        if not models:
            raise UserError("a stack of members needs at least one member")
        shapes = {m.cfg for m in models}
        if len(shapes) > 1:
            raise UserError(f"members {', '.join(m.member for m in models[:6])} have {len(shapes)} model shapes; "
                            "stack members of one shape (one group)")
        self.models = models
        self.cfg, self.vocab = models[0].cfg, models[0].vocab
        self.members = [m.member for m in models]
        self.params = jax.tree.map(lambda *x: np.stack(x), *[m.params for m in models])
        self._members = len(models)

    def __len__(self) -> int:
        return len(self.models)

    def __getitem__(self, index) -> MemberModel:
        return self.models[index]

    def __repr__(self) -> str:
        c = self.cfg
        shown = ", ".join(self.members[:4]) + (", ..." if len(self) > 4 else "")
        return f"MemberStack({len(self)} members: {shown}; d_model {c.d_model}, {c.n_layers} layer(s))"

    @property
    def info(self) -> list[dict]:
        return [m.info for m in self.models]

    def _member_names(self) -> list:
        return list(self.members)


def load_export(path) -> MemberModel:
    """The MemberModel that `MemberModel.export` wrote to `path`."""
    try:
        with np.load(str(path), allow_pickle=False) as data:
            info = json.loads(str(data[EXPORT_INFO]))
            flat = {tuple(k.split("/")): data[k] for k in data.files if k != EXPORT_INFO}
        cfg = ModelConfig(**info["model"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not an fttrace member export ({e})") from None
    return MemberModel(cfg, traverse_util.unflatten_dict(flat), info["member"], info["info"])
