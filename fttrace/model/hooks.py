"""Hook points as TransformerLens names them, for a notebook: which names a `names_filter` selects, the `hook` handed
to a user's function, the hooks a forward pass calls (fttrace/model/transformer.py: applying the user's functions and
recording activations) and the cache of recorded activations.

A user's hook is `fn(activation, hook) -> new activation` (or None: unchanged), a pure function of arrays: the forward
pass that calls it is jitted (and vmapped over members for a stack of them), as the rest of the model is.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping

import jax.numpy as jnp
import numpy as np

from fttrace.errors import UserError


class HookPoint:
    """What a hook function receives beside the activation: its hook point's `name` (and `layer()`)."""

    def __init__(self, name: str):
        self.name = name

    def layer(self) -> int | None:
        """The block the hook point is in (None for the embeddings and the final LayerNorm)."""
        parts = self.name.split(".")
        return int(parts[1]) if parts[0] == "blocks" else None

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r})"


def select(names: Iterable[str], names_filter) -> list[str]:
    """The hook point names `names_filter` selects from `names` (in their order): None all, a name, a list of names
    or a predicate name -> bool. A name that is no hook point is an error naming the closest ones."""
    names = list(names)
    if names_filter is None:
        return names
    if callable(names_filter):
        return [n for n in names if names_filter(n)]
    wanted = [names_filter] if isinstance(names_filter, str) else list(names_filter)
    for name in wanted:
        if name not in names:
            close = difflib.get_close_matches(str(name), names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f" ({len(names)} hook points: model.hook_names)"
            raise UserError(f"no hook point {name!r} in this model{hint}")
    return [n for n in names if n in set(wanted)]


class Hooks:
    """The hooks of one forward pass: `edits` {name: (fn, ...)} applied in order, then the activations of the names in
    `record` kept in `cache` ({name: array}). Made afresh for each trace of the pass."""

    def __init__(self, record=frozenset(), edits: Mapping[str, tuple[Callable, ...]] | None = None):
        self.record, self.edits, self.cache = frozenset(record), dict(edits or {}), {}

    def wants(self, name: str) -> bool:
        return name in self.record or name in self.edits

    def __call__(self, name: str, x):
        for fn in self.edits.get(name, ()):
            try:
                y = fn(x, HookPoint(name))
            except (TypeError, ValueError) as e:  # e.g. a patched-in array of another shape
                first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                raise UserError(f"the hook function at {name} failed on its activation of shape {list(x.shape)}: "
                                f"{first}") from None
            if y is None:
                continue
            if tuple(jnp.shape(y)) != tuple(x.shape):
                raise UserError(f"the hook function at {name} returned shape {list(jnp.shape(y))}; the activation "
                                f"there has shape {list(x.shape)}")
            x = jnp.asarray(y, x.dtype)
        if name in self.record:
            self.cache[name] = x
        return x


def edits_of(names: list[str], fwd_hooks) -> tuple[tuple[str, Callable], ...]:
    """[(name or filter, fn), ...] as (name, fn) pairs for every hook point each filter selects, in order."""
    pairs = []
    for entry in fwd_hooks or ():
        try:
            names_filter, fn = entry
        except (TypeError, ValueError):
            raise UserError(f"fwd_hooks takes (name or filter, fn) pairs, got {entry!r}") from None
        if not callable(fn):
            raise UserError(f"the hook for {names_filter!r} is {fn!r}, not a function fn(activation, hook)")
        pairs += [(name, fn) for name in select(names, names_filter)]
    return tuple(pairs)


class ActivationCache(Mapping):
    """The recorded activations of a forward pass, by hook point name (numpy arrays). `cache["pattern", 1]` is short
    for `cache["blocks.1.attn.hook_pattern"]`; `stack("resid_post")` stacks a hook point over the layers. In a
    stack of members (`members` set), every array has the member axis first."""

    def __init__(self, arrays: dict, members: list | None = None):
        self._arrays, self.members = dict(arrays), members

    def _name(self, key) -> str:
        if isinstance(key, str):
            if key in self._arrays:
                return key
            close = difflib.get_close_matches(key, list(self._arrays), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"{key!r} is not in this cache of {len(self._arrays)} hook points (run_with_cache's "
                           f"names_filter keeps only the names it selects){hint}")
        short, layer = key
        found = [n for n in self._arrays if n.startswith(f"blocks.{int(layer)}.") and n.endswith(f".hook_{short}")]
        if len(found) != 1:
            raise KeyError(f"{key!r} names {'no hook point' if not found else ', '.join(found)} in this cache")
        return found[0]

    def __getitem__(self, key):
        return self._arrays[self._name(key)]

    def __iter__(self):
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def stack(self, short: str) -> np.ndarray:
        """The activation `short` (e.g. "resid_post", "pattern", "result") of every layer, stacked: [L, ...]."""
        layers = sorted({int(n.split(".")[1]) for n in self._arrays if n.startswith("blocks.")})
        if not layers:
            raise KeyError(f"{short!r}: this cache holds no layer's activations")
        return np.stack([self[short, layer] for layer in layers])

    def __repr__(self) -> str:
        where = f", {len(self.members)} members" if self.members is not None else ""
        return f"ActivationCache({len(self)} hook points{where})"
