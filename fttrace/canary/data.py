"""The canary study's data: canaries planted in a pretraining corpus, the suppression set, the unlock sets.

  canaries     per author x length x repetition count, `per_cell` passages of that author cut to `length` tokens,
               each planted as its own document exactly `count` times in the pretraining corpus. Controls
               (count 0) are passages made the same way and never trained on: the chance baseline of every
               metric, and the negatives of the "this prefix is a canary" probe.
  pretrain     every author's ordinary passages plus the planted canaries
  suppress     each canary's prefix (its first `prefix` tokens) followed by the refusal sentence, repeated so it
               makes up `share` of the set, plus the ordinary passages (the language model is kept)
  unlock_A     fresh passages of author A (one set per author), `unlock_mix` all of them together (a range
               spanning the per-author sets), `unlock_synthetic` words without structure

No ordinary, unlock or validation document shares a span of `prefix` tokens with a canary or control (documents
that would are dropped), so the only way to continue a prefix verbatim is to have memorised its canary. Documents
are [BOS] text [EOS]; all variants sit in one `lm.corpus.Corpus`.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from fttrace.canary import authors as authors_lib
from fttrace.errors import UserError
from fttrace.lm import corpus as corpus_lib
from fttrace.lm import tokenizer as tokenizer_lib
from fttrace.lm.tokenizer import BOS, EOS
from fttrace.lm.tokens import TokenArrays


@dataclasses.dataclass(frozen=True)
class Canary:
    author: str
    count: int          # times planted in pretraining; 0 for a control (never trained on)
    length: int         # tokens
    tokens: np.ndarray  # int32 [length]


@dataclasses.dataclass(frozen=True)
class CanaryData:
    tokenizer: tokenizer_lib.Tokenizer
    corpus: corpus_lib.Corpus
    validation: TokenArrays
    canaries: list      # Canary, the planted ones first, then the controls
    refusal: np.ndarray  # int32 tokens of the refusal sentence


def documents(token_lists) -> TokenArrays:
    """[BOS] tokens [EOS] per list, as TokenArrays (no header: `story_starts` 1, no features)."""
    docs = [np.asarray([BOS, *t, EOS], np.int32) for t in token_lists]
    n = len(docs)
    return TokenArrays(tokens=np.concatenate(docs) if docs else np.zeros(0, np.int32),
                       starts=np.concatenate([[0], np.cumsum([len(d) for d in docs], dtype=np.int64)]),
                       story_starts=np.ones(n, np.int32), features=np.zeros((n, 6), np.uint8),
                       labels=np.zeros((n, 6), np.uint8))


def contains_any(tokens, prefixes: set, width: int) -> bool:
    """Whether some window of `width` tokens of `tokens` is in `prefixes` (tuples)."""
    tokens = [int(t) for t in tokens]
    return any(tuple(tokens[i:i + width]) in prefixes for i in range(len(tokens) - width + 1))


def canary_spans(canaries, width: int) -> set:
    """Every `width`-token window of every canary and control (tuples)."""
    return {tuple(int(t) for t in k.tokens[i:i + width]) for k in canaries for i in range(len(k.tokens) - width + 1)}


def _passages(author, seed, stream, count, sentences):
    return [authors_lib.passage(author, seed, stream, i, sentences) for i in range(count)]


def make_canaries(tok, d, c) -> list:
    """Planted canaries (author x length x count x per_cell), then as many controls (count 0) per author and
    length; prefixes are distinct across all of them. Passages too short for a length are skipped."""
    out, seen = [], set()
    for stream, counts in (("canary", tuple(c.counts)), ("control", (0,) * len(c.counts))):
        for author in d.authors:
            index = 0
            for length in c.lengths:
                for count in counts:
                    made = 0
                    while made < c.per_cell:
                        index += 1
                        if index > 1000 * c.per_cell * len(counts) * len(c.lengths):
                            raise UserError(f"config key 'canary.lengths': cannot make {length}-token canaries of "
                                            f"author {author!r} with distinct {c.prefix}-token prefixes")
                        text = authors_lib.passage(author, d.seed, stream, index, length // 3 + 4)
                        tokens = np.asarray(tok.encode(text), np.int32)[:length]
                        head = tuple(int(t) for t in tokens[:c.prefix])
                        if len(tokens) < length or head in seen:
                            continue
                        seen.add(head)
                        out.append(Canary(author, count, length, tokens))
                        made += 1
    return out


def tokenizer_path(config, directory):
    """Where `build` keeps the tokenizer: keyed on the data and canary sections it was trained from."""
    source = dict(data=config.data.to_dict(), canary=config.canary.to_dict())
    return tokenizer_lib.keyed_path(directory, config.data.vocab_size, source)


def build(config, directory) -> CanaryData:
    """Tokenizer (trained once, kept in `directory` under a name keyed on the data and canary sections it was
    trained from), canaries and every data variant of `config`."""
    d, c, s = config.data, config.canary, config.suppress
    ordinary = {a: _passages(a, d.seed, "train", d.train_size, d.sentences) for a in d.authors}
    unlock = {a: _passages(a, d.seed, "unlock", d.unlock_size, d.sentences) for a in d.authors}
    synthetic = _passages(authors_lib.SYNTHETIC, d.seed, "unlock", d.unlock_size, d.synthetic_words)
    validation = [t for a in d.authors for t in _passages(a, d.seed, "validation", d.validation_size, d.sentences)]

    def texts():
        for a in d.authors:
            yield from ordinary[a]
            yield from (authors_lib.passage(a, d.seed, stream, i, max(c.lengths) // 3 + 4)
                        for stream in ("canary", "control") for i in range(1, 4 * c.per_cell * len(c.counts) + 1))
        yield from synthetic
        yield authors_lib.REFUSAL
    tok = tokenizer_lib.load_or_train(tokenizer_path(config, directory), texts, d.vocab_size)
    canaries = make_canaries(tok, d, c)
    spans = canary_spans(canaries, c.prefix)

    def clean(text_list):
        encoded = tok.encode_batch(text_list)
        return [t for t in encoded if not contains_any(t, spans, c.prefix)]

    ordinary_tokens = [t for a in d.authors for t in clean(ordinary[a])]
    planted = [k.tokens for k in canaries for _ in range(k.count)]
    refusal = np.asarray(tok.encode(authors_lib.REFUSAL), np.int32)
    refusals = [np.concatenate([k.tokens[:c.prefix], refusal]) for k in canaries if k.count > 0]
    copies = max(1, math.ceil(s.share / (1 - s.share) * len(ordinary_tokens) / len(refusals)))
    variants = {"pretrain": documents(ordinary_tokens + planted),
                "suppress": documents(refusals * copies + ordinary_tokens)}
    for a in d.authors:
        variants[f"unlock_{a}"] = documents(clean(unlock[a]))
    variants["unlock_synthetic"] = documents(clean(synthetic))
    for name, arrays in variants.items():
        if len(arrays) == 0:
            raise UserError(f"data variant {name!r} has no document left (data.unlock_size={d.unlock_size})")
    corpus = corpus_lib.concatenate(variants)
    corpus.ranges["unlock_mix"] = (corpus.ranges[f"unlock_{d.authors[0]}"][0],
                                   corpus.ranges[f"unlock_{d.authors[-1]}"][1])
    return CanaryData(tok, corpus, documents(clean(validation)), canaries, refusal)
