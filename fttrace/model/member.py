"""One member's model, ready to apply (`fttrace.open(workdir).model(member)`): logits, the activations of a forward
pass, accuracy on held-out sets, and interventions in the forward pass — ablating MLP neurons, attention heads or
residual-stream directions, and patching heads' or MLPs' contributions in from another forward pass (of another
member on the same inputs, e.g. the parent).

    model = run.model("ft3")
    logits, cache = model.run_with_cache(tokens)   # residual [L+1, B, T, d], attn_weights [L, B, H, T, T], ...
    model.accuracy(sets["pt"], ablate=Ablation(neurons=[(1, 7)], heads=[(0, 2)]))
    model.logits(tokens, patch=Patch(parent_cache, heads=[(1, 0)], mlps=[1]))

A unit is a (layer, index) pair or, as the pruning results name them, a flat index (layer x units per layer +
index). Every array goes in and comes out as numpy; each kind of forward pass compiles once per input shape.
"""
from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from fttrace.version import __version__
from fttrace.errors import UserError
from fttrace.model.transformer import ModelConfig, Transformer

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
    """Contributions to write into a forward pass: those of `source` (another forward pass's `run_with_cache`
    cache on the same tokens) for the given heads ((layer, head) pairs or flat indices) and MLPs (layers)."""
    source: dict
    heads: tuple = ()
    mlps: tuple = ()

    def spec(self, cfg: ModelConfig) -> dict:
        heads, mlps = np.zeros((cfg.n_layers, cfg.n_heads), np.float32), np.zeros(cfg.n_layers, np.float32)
        for layer, head in _pairs(self.heads, cfg.n_heads, cfg.n_layers, "head"):
            heads[layer, head] = 1.0
        for layer in self.mlps:
            if not 0 <= int(layer) < cfg.n_layers:
                raise UserError(f"MLP {layer} does not exist: the model has {cfg.n_layers} layer(s)")
            mlps[int(layer)] = 1.0
        return {"heads": heads, "head_out": np.asarray(self.source["head_out"]), "mlp": mlps,
                "mlp_out": np.asarray(self.source["mlp_out"])}


@functools.lru_cache(maxsize=None)
def _forward(cfg: ModelConfig, capture: bool, answer_only: bool):
    def apply(params, tokens, masks, residual_maps, patch):
        return Transformer(cfg).apply({"params": params}, tokens, masks=masks, capture=capture,
                                      answer_only=answer_only, patch=patch, residual_maps=residual_maps)
    return jax.jit(apply)


class MemberModel:
    """A model config and one member's parameters (numpy), with the description of the member (`info`)."""

    def __init__(self, cfg: ModelConfig, params, member: str = "", info: dict | None = None):
        self.cfg, self.params, self.member, self.info = cfg, params, member, dict(info or {})

    def __repr__(self) -> str:
        c = self.cfg
        return (f"MemberModel({self.member or '?'}: d_model {c.d_model}, {c.n_layers} layer(s) of {c.n_heads} heads "
                f"and {c.mlp} MLP units, vocabulary {c.vocab_size})")

    def _apply(self, tokens, ablate: Ablation | None, patch: Patch | None, capture: bool, answer_only: bool):
        ablate = ablate or Ablation()
        out = _forward(self.cfg, capture, answer_only)(
            self.params, jnp.asarray(tokens, jnp.int32), ablate.masks(self.cfg), ablate.residual_maps(self.cfg),
            None if patch is None else patch.spec(self.cfg))
        return jax.tree.map(np.asarray, out)

    def logits(self, tokens, ablate: Ablation | None = None, patch: Patch | None = None) -> np.ndarray:
        """Logits [B, T, V] of tokens [B, T]."""
        return self._apply(tokens, ablate, patch, capture=False, answer_only=False)

    def run_with_cache(self, tokens, ablate: Ablation | None = None, patch: Patch | None = None):
        """(logits [B, T, V], cache): residual [L+1, B, T, d] (after the embeddings and each block), attn_out
        [L, B, T, d], attn_weights [L, B, H, T, T], head_out [L, B, T, H, d] (each head's contribution), mlp_hidden
        [L, B, T, d_mlp], mlp_out [L, B, T, d] — all under the given interventions."""
        return self._apply(tokens, ablate, patch, capture=True, answer_only=False)

    def predict(self, tokens, ablate: Ablation | None = None, patch: Patch | None = None) -> np.ndarray:
        """The answer [B] the model gives at the last position."""
        logits = self._apply(tokens, ablate, patch, capture=False, answer_only=patch is None)
        return (logits if patch is None else logits[:, -1]).argmax(-1)

    def accuracy(self, heldout, ablate: Ablation | None = None, patch: Patch | None = None) -> float:
        """Share of the (tokens, answers) set answered correctly at the last position."""
        tokens, answers = heldout
        return float(np.mean(self.predict(tokens, ablate, patch) == np.asarray(answers)))

    def export(self, path) -> str:
        """Write the parameters and the description (model config, member, fttrace version) to one .npz file."""
        flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(self.params).items()}
        info = dict(model=dataclasses.asdict(self.cfg), member=self.member, info=self.info,
                    fttrace=__version__)
        path = str(path)
        with open(path, "wb") as f:
            np.savez(f, **flat, **{EXPORT_INFO: np.asarray(json.dumps(info, default=str))})
        return path


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
