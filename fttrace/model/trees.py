"""Nested parameter dicts addressed by a path of keys: read the entry at a path, or a copy with it replaced."""
from __future__ import annotations


def get(tree, path):
    """The entry of nested dicts `tree` at `path` (a sequence of keys)."""
    for key in path:
        tree = tree[key]
    return tree


def replace(tree, path, value, create: bool = False):
    """A copy of `tree` whose entry at `path` is `value` (the dicts on the path copied, the rest shared); with
    `create`, missing dicts on the path are made."""
    if not path:
        return value
    key, below = path[0], tree.get(path[0], {}) if create else tree[path[0]]
    return {**tree, key: replace(below, path[1:], value, create)}
