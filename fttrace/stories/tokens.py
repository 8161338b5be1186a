"""Records as int32 token arrays, ready to be made resident on a device.

All documents of a split are concatenated into one token array; `starts[i]:starts[i+1]` is document i, laid out

    [BOS] header tokens ("Features: ...\nWords: ...\nSummary: ...\nStory:") story tokens (" Once upon ...") [EOS]

`story_starts[i]` is the offset of the first story token inside document i (the prompt is everything before it,
so a model can be asked for a story by its header alone). Header and story are encoded separately, so a header
given as a prompt tokenizes exactly as it did in training. `features` and `labels` (documents x FEATURES, uint8)
are the header's requests and the story's true features (see `record.py`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from fttrace.engine.results import atomic_path

from fttrace.stories.record import StoryRecord, feature_vector, render_header
from fttrace.stories.tokenizer import BOS, EOS, Tokenizer


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


def prompt_text(record: StoryRecord) -> str:
    """The header as a prompt: everything before the story, ending with `Story:`."""
    return render_header(record).rstrip(" ")


def encode_records(records: Iterable[StoryRecord], tokenizer: Tokenizer, chunk: int = 4096) -> TokenArrays:
    """Token arrays of `records`, encoded in chunks so a large split needs no more than its arrays."""
    pieces, story_starts, features, labels, lengths = [], [], [], [], []
    batch: list[StoryRecord] = []

    def flush():
        heads = tokenizer.encode_batch([prompt_text(r) for r in batch])
        bodies = tokenizer.encode_batch([" " + r.story for r in batch])
        for record, head, body in zip(batch, heads, bodies):
            doc = np.asarray([BOS, *head, *body, EOS], dtype=np.int32)
            pieces.append(doc)
            lengths.append(len(doc))
            story_starts.append(1 + len(head))
            features.append(feature_vector(record.features))
            labels.append(feature_vector(record.labels))
        batch.clear()

    for record in records:
        batch.append(record)
        if len(batch) == chunk:
            flush()
    if batch:
        flush()
    return TokenArrays(
        tokens=np.concatenate(pieces) if pieces else np.zeros(0, np.int32),
        starts=np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64),
        story_starts=np.asarray(story_starts, np.int32),
        features=np.asarray(features, np.uint8).reshape(-1, 6),
        labels=np.asarray(labels, np.uint8).reshape(-1, 6))


def save_token_arrays(path, arrays: TokenArrays) -> None:
    """Write `arrays` to `path` (.npz) atomically; a failed write (a full disk) is one UserError naming the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, **dataclasses.asdict(arrays))


def load_token_arrays(path) -> TokenArrays:
    with np.load(path) as data:
        return TokenArrays(**{f.name: data[f.name] for f in dataclasses.fields(TokenArrays)})
