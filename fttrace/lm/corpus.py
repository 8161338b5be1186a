"""Every data variant of a study in one resident token array, and documents sampled from it on device.

The variants (the unmodified data, each deletion protocol, the recovery set) are token arrays of different sizes.
Concatenated into one array, each variant is a range of document indices, so members trained on different
variants differ only in two per-member integers (`lo`, `hi`) and can share one vmapped program.

A training example is one document, start-aligned (its BOS at position 0, so the header that asks for the
features is always in context), cut or padded to `length + 1` tokens; positions past the document's end are
PAD and carry no loss.
"""
from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np

from fttrace.lm.tokenizer import PAD
from fttrace.lm.tokens import TokenArrays


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Named variants concatenated: `arrays` holds all documents, `ranges[name]` the variant's [lo, hi)."""

    arrays: TokenArrays
    ranges: dict

    def variant(self, name: str) -> TokenArrays:
        lo, hi = self.ranges[name]
        a = self.arrays
        return TokenArrays(tokens=a.tokens[a.starts[lo]:a.starts[hi]], starts=a.starts[lo:hi + 1] - a.starts[lo],
                           story_starts=a.story_starts[lo:hi], features=a.features[lo:hi], labels=a.labels[lo:hi])


def concatenate(variants: dict) -> Corpus:
    """{name: TokenArrays} -> one Corpus (order of `variants` kept)."""
    tokens, starts, story_starts, features, labels, ranges = [], [np.zeros(1, np.int64)], [], [], [], {}
    offset, docs = 0, 0
    for name, a in variants.items():
        if len(a) == 0:
            raise ValueError(f"data variant {name!r} has no documents")
        tokens.append(a.tokens)
        starts.append(a.starts[1:] + offset)
        story_starts.append(a.story_starts)
        features.append(a.features)
        labels.append(a.labels)
        ranges[name] = (docs, docs + len(a))
        offset += len(a.tokens)
        docs += len(a)
    arrays = TokenArrays(tokens=np.concatenate(tokens), starts=np.concatenate(starts),
                         story_starts=np.concatenate(story_starts), features=np.concatenate(features),
                         labels=np.concatenate(labels))
    return Corpus(arrays, ranges)


@flax.struct.dataclass
class DeviceCorpus:
    tokens: jax.Array  # int32 [total tokens + length + 1]: padded so a window never reads past the end
    starts: jax.Array  # int32 [documents + 1]


def to_device(corpus: Corpus, length: int) -> DeviceCorpus:
    tokens = np.concatenate([corpus.arrays.tokens, np.full(length + 1, PAD, np.int32)])
    if len(tokens) >= 2**31:
        raise ValueError("corpus too large for int32 offsets")
    return DeviceCorpus(jnp.asarray(tokens, jnp.int32), jnp.asarray(corpus.arrays.starts, jnp.int32))


def document_windows(corpus: DeviceCorpus, docs: jax.Array, length: int):
    """Documents `docs` [B] as (inputs, targets, weights), each [B, length]; weight 0 past a document's end."""
    first = corpus.starts[docs][:, None]
    index = first + jnp.arange(length + 1)[None, :]
    inside = index < corpus.starts[docs + 1][:, None]
    tokens = jnp.where(inside, corpus.tokens[index], PAD)
    return tokens[:, :-1], tokens[:, 1:], inside[:, 1:].astype(jnp.float32)


def sample_windows(key: jax.Array, corpus: DeviceCorpus, lo, hi, batch: int, length: int):
    """`batch` documents drawn uniformly from [lo, hi), as `document_windows`."""
    docs = jax.random.randint(key, (batch,), lo, hi)
    return document_windows(corpus, docs, length)


def validation_batch(arrays: TokenArrays, length: int, batch_size: int):
    """The first `batch_size` documents of `arrays` as one fixed (inputs, targets, weights) batch."""
    resident = to_device(Corpus(arrays, {}), length)
    return document_windows(resident, jnp.arange(min(batch_size, len(arrays))), length)
