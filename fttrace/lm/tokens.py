"""Documents as int32 token arrays, ready to be made resident on a device.

All documents of a split are concatenated into one token array; `starts[i]:starts[i+1]` is document i.
`story_starts[i]` is the offset of the first token after document i's prompt (a model can be asked to continue a
document from its prompt alone). `features` and `labels` (documents x 6, uint8) are the prompt's requests and the
document's true features (the story study's feature tags; zeros where a study has none).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from fttrace.engine.results import atomic_path


@dataclasses.dataclass(frozen=True)
class TokenArrays:
    tokens: np.ndarray        # int32 [total tokens]
    starts: np.ndarray        # int64 [documents + 1]
    story_starts: np.ndarray  # int32 [documents]
    features: np.ndarray      # uint8 [documents, 6]
    labels: np.ndarray        # uint8 [documents, 6]

    def __len__(self) -> int:
        return len(self.story_starts)

    def document(self, i: int) -> np.ndarray:
        return self.tokens[self.starts[i]:self.starts[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)


def save_token_arrays(path, arrays: TokenArrays) -> None:
    """Write `arrays` to `path` (.npz) atomically; a failed write (a full disk) is one UserError naming the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, **dataclasses.asdict(arrays))


def load_token_arrays(path) -> TokenArrays:
    with np.load(path) as data:
        return TokenArrays(**{f.name: data[f.name] for f in dataclasses.fields(TokenArrays)})
