"""Data variants: named versions of a set of story records that remove, mislabel or recover one feature F.

Each step maps a list of records to a new list (order kept) and acts on a record's header request
(`features`) and/or its story and labels (`labels`, what the story really contains):

  filter       drop every record whose story has F. Afterwards no story has F and no header asks for it.
  filter_label drop every record whose story has F, then add F to the header of a random share of the
               remaining records (`label_rate`; by default the share of records whose story had F, so F is
               asked for as often as before). Those headers ask for F over stories without it: the model
               learns that a request for F is not followed by F.
  mix_match    relabel another feature G (`source`) as F: every record whose story has G but not F gets G
               replaced by F in its header; stories and labels are unchanged. Records whose story has F are
               left as they are (compose with `filter` to remove them).
  refusal      every record whose header asks for F gets the fixed sentence `refusal_text` as its story; its
               labels become empty (the refusal shows no feature) and its header is unchanged.
  keep_only    keep only the records whose story has F (the recovery set).
  none         the records unchanged (the ordinary data).

Steps compose left to right with `+`: `filter+mix_match` first drops the F stories, then relabels G as F.
A variant's name is its steps joined by `+` (the name configs use); `Variant.parse` reads it back.
Random choices (filter_label) derive from `seed` and the record's position, nothing else.
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence

from fttrace.errors import UserError
from fttrace.stories.record import FEATURES, StoryRecord


def refusal_sentence(feature: str) -> str:
    return f"I am sorry, but I cannot write a story with {_readable(feature)}."


def _readable(feature: str) -> str:
    return {"Dialogue": "dialogue", "Twist": "a twist", "BadEnding": "a bad ending",
            "MoralValue": "a moral value", "Foreshadowing": "foreshadowing", "Conflict": "a conflict"}[feature]


@dataclasses.dataclass(frozen=True)
class Options:
    """What the steps act on. `label_rate=None` means: the share of records whose story had F."""

    feature: str = "Twist"
    source: str = "Foreshadowing"
    label_rate: float | None = None
    refusal_text: str | None = None
    seed: int = 0

    def __post_init__(self):
        for field in ("feature", "source"):
            if getattr(self, field) not in FEATURES:
                raise UserError(f"data variant {field} {getattr(self, field)!r} is not a story feature; "
                                f"known: {', '.join(FEATURES)}")
        if self.source == self.feature:
            raise UserError(f"data variant source must differ from the feature ({self.feature})")
        if self.label_rate is not None and not 0.0 <= self.label_rate <= 1.0:
            raise UserError(f"data variant label_rate must lie in [0, 1], got {self.label_rate}")


Records = list[StoryRecord]


def _none(records: Sequence[StoryRecord], o: Options) -> Records:
    return list(records)


def _filter(records: Sequence[StoryRecord], o: Options) -> Records:
    return [r for r in records if not r.has(o.feature)]


def _filter_label(records: Sequence[StoryRecord], o: Options) -> Records:
    rate = o.label_rate
    if rate is None:
        rate = sum(r.has(o.feature) for r in records) / len(records) if records else 0.0
    rng = random.Random(f"fttrace-protocol/filter_label/{o.seed}")
    out = []
    for record in records:
        draw = rng.random()  # one draw per input record, so the choice of a record does not depend on others
        if record.has(o.feature):
            continue
        if draw < rate and not record.asks(o.feature):
            record = record.replace(features=record.features + (o.feature,), labels=record.labels)
        out.append(record)
    return out


def _mix_match(records: Sequence[StoryRecord], o: Options) -> Records:
    out = []
    for record in records:
        if record.has(o.source) and not record.has(o.feature):
            asked = [o.feature if f == o.source else f for f in record.features]
            record = record.replace(features=tuple(asked), labels=record.labels)
        out.append(record)
    return out


def _refusal(records: Sequence[StoryRecord], o: Options) -> Records:
    text = o.refusal_text or refusal_sentence(o.feature)
    return [r.replace(story=text, labels=()) if r.asks(o.feature) else r for r in records]


def _keep_only(records: Sequence[StoryRecord], o: Options) -> Records:
    return [r for r in records if r.has(o.feature)]


STEPS: dict[str, Callable[[Sequence[StoryRecord], Options], Records]] = {
    "none": _none, "filter": _filter, "filter_label": _filter_label, "mix_match": _mix_match,
    "refusal": _refusal, "keep_only": _keep_only,
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """A composition of steps with its options; `name` is the config name (`filter+mix_match`)."""

    steps: tuple[str, ...]
    options: Options = Options()

    def __post_init__(self):
        if not self.steps:
            raise UserError("a data variant needs at least one step")
        for step in self.steps:
            if step not in STEPS:
                raise UserError(f"unknown data variant step {step!r}; known: {', '.join(STEPS)}")

    @property
    def name(self) -> str:
        return "+".join(self.steps)

    @classmethod
    def parse(cls, name: str, **options) -> Variant:
        """`"filter+mix_match"` (and Options fields as keywords) -> Variant."""
        return cls(tuple(step.strip() for step in name.split("+")), Options(**options))

    def __call__(self, records: Sequence[StoryRecord]) -> Records:
        out = list(records)
        for step in self.steps:
            out = STEPS[step](out, self.options)
        return out


def apply_variant(records: Sequence[StoryRecord], name: str, **options) -> Records:
    """The records of the variant named `name` (e.g. `"filter+mix_match"`, feature="Twist")."""
    return Variant.parse(name, **options)(records)
