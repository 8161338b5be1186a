"""A prepared builder to tokenizer and token arrays, both cached beside the dataset and reused.

The tokenizer is trained once per dataset and vocabulary size on the *unmodified* training split, so every
data variant of a study (pretraining data, deletion variants, recovery set) shares one vocabulary. Token arrays
are cached per split, variant (with its options) and tokenizer.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import tensorflow_datasets as tfds

from fttrace.stories.builders import data_source, iter_records
from fttrace.stories.variants import Variant
from fttrace.stories.record import render_text
from fttrace.lm.tokenizer import Tokenizer, keyed_path, load_or_train
from fttrace.lm.tokens import TokenArrays, load_token_arrays, save_token_arrays
from fttrace.stories.tokens import encode_records


def tokenizer_path(builder: tfds.core.DatasetBuilder, vocab_size: int, max_texts: int = 200_000,
                   **train_options) -> Path:
    """Where `tokenizer_for` keeps the tokenizer: keyed on the dataset (its name, config and version), the number of
    records and the training options."""
    source = dict(dataset=builder.info.full_name, config=str(builder.builder_config), max_texts=max_texts,
                  options=train_options)
    return keyed_path(builder.data_dir, vocab_size, source)


def tokenizer_for(builder: tfds.core.DatasetBuilder, vocab_size: int, max_texts: int = 200_000,
                  **train_options) -> Tokenizer:
    """The dataset's tokenizer of `vocab_size` pieces, trained on its first `max_texts` training records."""
    def texts():
        count = min(max_texts, len(data_source(builder, "train")))
        return (render_text(r) for r in iter_records(builder, "train", range(count)))
    return load_or_train(tokenizer_path(builder, vocab_size, max_texts, **train_options), texts, vocab_size,
                         **train_options)


def variant_key(variant: Variant | None) -> str:
    if variant is None:
        return "none"
    digest = hashlib.sha256(repr(variant.options).encode()).hexdigest()[:8]
    return f"{variant.name}-{variant.options.feature}-{digest}"


def token_arrays(builder: tfds.core.DatasetBuilder, split: str, tokenizer: Tokenizer,
                 variant: Variant | None = None, limit: int | None = None) -> TokenArrays:
    """The split's records (its first `limit` if given), as `variant` if given, as token arrays (cached as
    .npz beside the dataset)."""
    model = hashlib.sha256(tokenizer.model).hexdigest()[:8]
    count = len(data_source(builder, split))
    count = count if limit is None else min(limit, count)
    path = Path(builder.data_dir) / (f"tokens-{split}-n{count}-{variant_key(variant)}-spm{tokenizer.vocab_size}"
                                     f"-{model}.npz")
    if path.exists():
        return load_token_arrays(path)
    records = list(iter_records(builder, split, range(count)))
    if variant is not None:
        records = variant(records)
    arrays = encode_records(records, tokenizer)
    save_token_arrays(path, arrays)
    return arrays
