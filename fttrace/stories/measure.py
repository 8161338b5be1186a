"""What a story model does with a request for feature F: how often its stories show F, and whether the request
is linearly readable from its residual stream.

  feature rates  the share of sampled stories in which the detector (`stories.detectors`) finds F, over prompts
                 (validation headers, up to `Story:`) that ask for F, and over prompts that do not; and the share
                 of samples that are the refusal sentence of the `refusal` data variant
  probes         per layer, the LM probe (`fttrace.lm.measure.probe_members`) on the mean of the header's last
                 `positions` hidden states, trained on frozen activations to read "the header asks for F"; its
                 accuracy on held-out headers (balanced, so chance is 0.5). The probed headers (`probe_records`)
                 state the request only in their `Features:` line, away from the probed positions: what the
                 embeddings (layer 0) read there is the input's share, what deeper layers add is the model carrying
                 the request to where its story begins
  story probes   the same probe on the *story text* (header stripped: BOS + story, `story_probe_set`), on the mean
                 of its last `positions` hidden states, for "this story has F" -- and, as its null, for a control
                 target with the same input statistics (an arbitrary balanced property of a word the story
                 contains); the selectivity, accuracy(F) - accuracy(control), is what the model adds beyond reading
                 its input, read also on the untrained models and on the control pretrained without F
"""
from __future__ import annotations

import hashlib

import numpy as np

from fttrace.errors import UserError
from fttrace.lm.measure import Prompts
from fttrace.lm.tokenizer import BOS, PAD, Tokenizer
from fttrace.lm.tokens import TokenArrays
from fttrace.stories import detectors
from fttrace.stories.record import FEATURES, StoryRecord
from fttrace.stories.variants import refusal_sentence


def prompts_of(arrays: TokenArrays, feature: str, asking: int, other: int, key: str) -> Prompts:
    """The first `asking` headers of `arrays` that ask for `feature`, then the first `other` that do not; too few is
    an error naming config key `key` (which sets the counts)."""
    column = FEATURES.index(feature)
    asks = arrays.features[:, column].astype(bool)
    chosen = np.concatenate([np.flatnonzero(asks)[:asking], np.flatnonzero(~asks)[:other]])
    if len(chosen) < asking + other:
        raise UserError(f"config key {key!r}: asks for {asking} headers asking for {feature} and {other} not, but the "
                        f"validation stories hold {int(asks.sum())} and {int((~asks).sum())} (data.validation_size)")
    lengths = arrays.story_starts[chosen].astype(np.int32)
    tokens = np.full((len(chosen), int(lengths.max())), PAD, np.int32)
    for row, doc in enumerate(chosen):
        tokens[row, :lengths[row]] = arrays.tokens[arrays.starts[doc]:arrays.starts[doc] + lengths[row]]
    return Prompts(tokens, lengths, asks[chosen])


def probe_records(records: list[StoryRecord]) -> list[StoryRecord]:
    """Headers for the probes: records that ask for some feature, without their summary.

    A summary retells the plot, F included ("... and it holds a surprise"), right before `Story:`, so with it a
    probe on the header's last positions reads F from the input tokens at every layer, even from an untrained
    model. Without it, the only statement of the request is the `Features:` line, which every probed header has.
    """
    return [r.replace(summary="") for r in records if r.features]


def control_label(record: StoryRecord) -> bool:
    """The story probe's control target: the parity of a stable hash of a word the story contains (its first
    `Words:` entry in alphabetical order, else its last word): balanced, arbitrary, and as present in the input as F's
    construction."""
    word = sorted(record.words)[0] if record.words else record.story.split()[-1]
    return int(hashlib.sha256(word.lower().encode()).hexdigest(), 16) % 2 == 1


def story_probe_set(records: list[StoryRecord], tokenizer: Tokenizer, feature: str, count: int, max_len: int,
                    key: str) -> tuple[Prompts, np.ndarray]:
    """Story texts for the story probes: the first `count` // 2 of `records` whose story has `feature`, then as many
    without, each BOS + story cut to `max_len` tokens. Returns the prompts (asks: the story has F) and the control
    labels; too few stories is an error naming config key `key`."""
    half = count // 2
    has = np.array([r.has(feature) for r in records])
    chosen = np.concatenate([np.flatnonzero(has)[:half], np.flatnonzero(~has)[:half]])
    if len(chosen) < 2 * half:
        raise UserError(f"config key {key!r}: asks for {half} stories with {feature} and {half} without, but the "
                        f"validation stories hold {int(has.sum())} and {int((~has).sum())} (data.validation_size)")
    bodies = tokenizer.encode_batch([" " + records[i].story for i in chosen])
    rows = [[BOS, *body][:max_len] for body in bodies]
    tokens = np.full((len(rows), max(map(len, rows))), PAD, np.int32)
    for r, row in enumerate(rows):
        tokens[r, :len(row)] = row
    prompts = Prompts(tokens, np.array([len(r) for r in rows], np.int32), has[chosen])
    return prompts, np.array([control_label(records[i]) for i in chosen])


def feature_rate(texts: list[str], feature: str) -> float:
    return detectors.shares(texts)[feature]


def refusal_rate(texts: list[str], feature: str) -> float:
    sentence = refusal_sentence(feature)
    return float(np.mean([t.strip() == sentence for t in texts])) if texts else float("nan")
