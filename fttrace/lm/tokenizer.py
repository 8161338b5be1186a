"""A SentencePiece tokenizer trained on a training split's text, saved once and reused.

Text is kept byte for byte: no normalisation, whitespace kept as is, newlines as one piece of their own
(`\n` is a user-defined symbol), no dummy prefix. Hence `decode(encode(text)) == text` for any text made of
characters seen in training (and for any text at all with `byte_fallback=True`, which costs 256 ids and suits
the real data's vocabulary of 8,192 rather than the generator's few hundred). Ids: pad 0, unk 1, bos 2, eos 3.
A vocabulary larger than the text supports is refused with the largest size that would do: generated stories
use some 440 distinct words, which BPE exhausts at about 1,900 pieces.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from fttrace.engine.results import atomic_path
from fttrace.errors import UserError
from fttrace.model.vocab import Vocabulary

PAD, UNK, BOS, EOS = 0, 1, 2, 3


class Tokenizer:
    """Encode/decode with a trained SentencePiece model."""

    def __init__(self, model: bytes, path: Path | None = None):
        self.model = model
        self.path = path
        self._sp = spm.SentencePieceProcessor(model_proto=model)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts))

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids if int(i) not in (PAD, BOS, EOS)])

    def pieces(self, text: str) -> list[str]:
        return self._sp.encode(text, out_type=str)

    def vocabulary(self) -> Vocabulary:
        """The pieces as a model's vocabulary, each named by its text (SentencePiece's "▁" as the space it
        stands for); to_tokens starts with BOS, as the study's documents do."""
        names = [self._sp.id_to_piece(i).replace("▁", " ") for i in range(self.vocab_size)]
        return Vocabulary(names, pad=PAD, bos=BOS, encode=self.encode, decode=self.decode,
                          name=f"the SentencePiece tokenizer {self.path.name if self.path else ''}".strip())

    @classmethod
    def load(cls, path) -> Tokenizer:
        path = Path(path)
        return cls(path.read_bytes(), path)


def _lines(texts: Iterable[str]) -> Iterable[str]:
    # SentencePiece trains on sentences; newlines are restored at encoding time by the `\n` symbol.
    for text in texts:
        for line in text.split("\n"):
            if line:
                yield line


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, model_type: str = "bpe",
                    byte_fallback: bool = False, max_lines: int = 2_000_000) -> Tokenizer:
    """A new tokenizer from `texts` (the first `max_lines` non-empty lines are used)."""
    model = io.BytesIO()
    lines = _lines(texts)
    capped = (line for line, _ in zip(lines, range(max_lines)))
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=capped, model_writer=model, vocab_size=vocab_size, model_type=model_type,
            character_coverage=1.0, byte_fallback=byte_fallback, normalization_rule_name="identity",
            remove_extra_whitespaces=False, add_dummy_prefix=False, split_digits=True,
            user_defined_symbols=["\n"], pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
            max_sentence_length=1 << 16, num_threads=2, minloglevel=2)
    except RuntimeError as error:
        limit = re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", str(error))
        if not limit:
            raise
        raise UserError(f"a tokenizer of {vocab_size} pieces cannot be trained on this text (it has too few "
                        f"distinct pieces); choose a vocab_size of at most {limit.group(1)}") from None
    return Tokenizer(model.getvalue())


def keyed_path(directory, vocab_size: int, source: dict) -> Path:
    """Where the tokenizer of `vocab_size` pieces trained on `source` (a JSON-able description of everything it was
    trained from: data, sizes, options) is kept: a tokenizer trained on other data never answers for it."""
    digest = hashlib.sha256(json.dumps(source, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return Path(directory) / f"spm{vocab_size}-{digest}.model"


def load_or_train(path, texts: Iterable[str] | Callable[[], Iterable[str]], vocab_size: int,
                  **train_options) -> Tokenizer:
    """The tokenizer saved at `path`, or a new one trained on `texts` and saved there (atomically).

    `texts` may be a callable returning the texts, so that nothing is read when the model exists. A saved model
    of another vocabulary size is an error, not silently reused.
    """
    path = Path(path)
    if path.exists():
        tokenizer = Tokenizer.load(path)
        if tokenizer.vocab_size != vocab_size:
            raise UserError(f"{path} holds a tokenizer of {tokenizer.vocab_size} pieces, not {vocab_size}; "
                             "remove it or choose another path")
        return tokenizer
    tokenizer = train_tokenizer(texts() if callable(texts) else texts, vocab_size, **train_options)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # a failed write (a full disk) is one UserError naming the file
        tmp.write_bytes(tokenizer.model)
    tokenizer.path = path
    return tokenizer
