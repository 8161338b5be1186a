"""A model's token ids as strings and back, as TransformerLens's `to_tokens`, `to_str_tokens` and `to_string` do it.

Every task gives one (`fttrace.open(workdir).vocabulary`, and each opened model's `vocab`): a PCFG task names its ids
(`counter t3 t7 <pad> <ans>`), a Tracr program its input tokens (`BOS a b c`), a language-model study its
SentencePiece pieces. Text is encoded by the task's own encoder (whitespace-separated names for the first two);
`to_tokens` of several texts pads the shorter ones on the right with the pad id.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fttrace.errors import UserError


class Vocabulary:
    """ids <-> strings. names: the string of each id; pad: the id that fills; bos: the id a sequence starts with
    (None: none); encode / decode: text -> ids / ids -> text (default: whitespace-separated names)."""

    def __init__(self, names: Sequence[str], pad: int, bos: int | None = None,
                 encode: Callable[[str], list[int]] | None = None, decode: Callable[[Sequence[int]], str] | None = None,
                 name: str = ""):
        self.names, self.pad, self.bos, self.name = list(names), int(pad), bos, name
        self._ids = {n: i for i, n in reversed(list(enumerate(self.names)))}
        self._encode, self._decode = encode, decode

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"Vocabulary({self.name or '?'}: {len(self)} ids)"

    def encode(self, text: str) -> list[int]:
        """The ids of `text` (no BOS added)."""
        if self._encode is not None:
            return list(self._encode(text))
        unknown = [t for t in text.split() if t not in self._ids]
        if unknown:
            some = ", ".join(self.names[:12])
            raise UserError(f"{', '.join(map(repr, unknown))} not in the vocabulary of {self.name or 'this task'} "
                            f"({some}{', ...' if len(self) > 12 else ''})")
        return [self._ids[t] for t in text.split()]

    def to_tokens(self, text: str | Sequence[str], prepend_bos: bool = True) -> np.ndarray:
        """Token ids [B, T] (int32) of a text (B = 1) or a list of texts, BOS first if the task has one."""
        texts = [text] if isinstance(text, str) else list(text)
        rows = [([self.bos] if prepend_bos and self.bos is not None else []) + self.encode(t) for t in texts]
        out = np.full((len(rows), max(map(len, rows), default=0)), self.pad, np.int32)
        for row, ids in zip(out, rows):
            row[:len(ids)] = ids
        return out

    def _name(self, i) -> str:
        i = int(i)
        if not 0 <= i < len(self):
            raise UserError(f"token id {i} is not in the vocabulary of {self.name or 'this task'} (ids 0 to "
                            f"{len(self) - 1})")
        return self.names[i]

    def to_str_tokens(self, tokens, prepend_bos: bool = True) -> list:
        """The string of each token: of a text (encoded first), of ids [T] (a list) or of ids [B, T] (a list per
        row)."""
        if isinstance(tokens, str):
            tokens = self.to_tokens(tokens, prepend_bos)[0]
        ids = np.asarray(tokens)
        if ids.ndim == 1:
            return [self._name(i) for i in ids]
        return [self.to_str_tokens(row) for row in ids]

    def to_string(self, tokens) -> str | list[str]:
        """The text of ids [T] (pad dropped), or a list of texts of ids [B, T]."""
        ids = np.asarray(tokens)
        if ids.ndim > 1:
            return [self.to_string(row) for row in ids]
        if self._decode is not None:
            return self._decode([int(i) for i in ids])
        return " ".join(self._name(i) for i in ids if int(i) != self.pad)
