"""A prepared builder to tokenizer and token arrays, both cached beside the dataset and reused.

The tokenizer is trained once per dataset and vocabulary size on the *unmodified* training split, so every
protocol of a study (pretraining data, fine-tuning variants, recovery set) shares one vocabulary. Token arrays
are cached per split, protocol (with its options) and tokenizer.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import tensorflow_datasets as tfds

from fttrace.stories.builders import data_source, iter_records
from fttrace.stories.protocols import Protocol
from fttrace.stories.record import render_text
from fttrace.stories.tokenizer import Tokenizer, load_or_train
from fttrace.stories.tokens import TokenArrays, encode_records, load_token_arrays, save_token_arrays


def tokenizer_path(builder: tfds.core.DatasetBuilder, vocab_size: int) -> Path:
    return Path(builder.data_dir) / f"spm{vocab_size}.model"


def tokenizer_for(builder: tfds.core.DatasetBuilder, vocab_size: int, max_texts: int = 200_000,
                  **train_options) -> Tokenizer:
    """The dataset's tokenizer of `vocab_size` pieces, trained on its first `max_texts` training records."""
    def texts():
        count = min(max_texts, len(data_source(builder, "train")))
        return (render_text(r) for r in iter_records(builder, "train", range(count)))
    return load_or_train(tokenizer_path(builder, vocab_size), texts, vocab_size, **train_options)


def protocol_key(protocol: Protocol | None) -> str:
    if protocol is None:
        return "none"
    digest = hashlib.sha256(repr(protocol.options).encode()).hexdigest()[:8]
    return f"{protocol.name}-{protocol.options.feature}-{digest}"


def token_arrays(builder: tfds.core.DatasetBuilder, split: str, tokenizer: Tokenizer,
                 protocol: Protocol | None = None, limit: int | None = None) -> TokenArrays:
    """The split's records (its first `limit` if given), under `protocol` if given, as token arrays (cached as
    .npz beside the dataset)."""
    model = hashlib.sha256(tokenizer.model).hexdigest()[:8]
    count = len(data_source(builder, split))
    count = count if limit is None else min(limit, count)
    path = Path(builder.data_dir) / (f"tokens-{split}-n{count}-{protocol_key(protocol)}-spm{tokenizer.vocab_size}"
                                     f"-{model}.npz")
    if path.exists():
        return load_token_arrays(path)
    records = list(iter_records(builder, split, range(count)))
    if protocol is not None:
        records = protocol(records)
    arrays = encode_records(records, tokenizer)
    save_token_arrays(path, arrays)
    return arrays
