"""The TinyStories-Instruct record: a story, the features it was asked to show, a summary and three words.

In training text a record is its instruction header followed by the story:

    Features: Dialogue, Twist
    Words: ball, run, happy
    Summary: Tom finds a ball and shares it.
    Story: Once upon a time, ...

A record carries two feature sets. `features` is what the header *asks for*; `labels` is what the story
*contains* (the ground truth a probe or an evaluation reads). They are equal in the data as generated or
published and diverge only under the data protocols (`protocols.py`), e.g. a header asking for Twist over a
story without one.

The public files (TinyStories-Instruct-train.txt and -valid.txt of the Hugging Face dataset
roneneldan/TinyStoriesInstruct) are plain text in which each record is a block of `Name: value` lines ended by
a line `<|endoftext|>`. The parser assumes:
  - the fields are `Features:`, `Words:`, `Summary:`, `Random sentence:` and `Story:`, each at the start of a
    line, in any order, each but `Story:` possibly absent (a story with no feature has no `Features:` line);
    the lines after `Story:` (several lines, paragraphs) are the story up to the end marker or to the next
    field line (some records put a field after the story), so a story line that itself starts with a field
    name would be misread;
  - features are comma-separated names among FEATURES; spaces and case are ignored (`Bad Ending` and
    `badending` read as BadEnding); `Words:` is comma-separated;
  - outside the story, a line that starts with no known field continues the previous field;
  - blank lines between records and a missing end marker after the last record are tolerated;
  - some blocks are not records (the validation file is said to open with the tail of a truncated record);
    the parsers raise FormatError on them, or skip them through `on_error`.
`Random sentence:` is kept in `extra`, not rendered by default: the study's header has the other three fields.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

FEATURES = ("Dialogue", "Twist", "BadEnding", "MoralValue", "Foreshadowing", "Conflict")
END_OF_TEXT = "<|endoftext|>"
HEADER_FIELDS = ("Features", "Words", "Summary")
_KNOWN_FIELDS = ("Features", "Words", "Summary", "Random sentence", "Story")
_FIELD_LINE = re.compile(r"^(Features|Words|Summary|Random sentence|Story):[ \t]?(.*)$")
_CANONICAL = {name.lower(): name for name in FEATURES}


class FormatError(ValueError):
    """A record that does not follow the TinyStories-Instruct text format; the message says where."""


def canonical_features(names: Iterable[str]) -> tuple[str, ...]:
    """Feature names in FEATURES order, without duplicates; unknown names raise ValueError."""
    seen = set()
    for name in names:
        key = re.sub(r"[\s_-]+", "", name).lower()
        if key not in _CANONICAL:
            raise ValueError(f"unknown story feature {name!r}; known: {', '.join(FEATURES)}")
        seen.add(_CANONICAL[key])
    return tuple(f for f in FEATURES if f in seen)


@dataclasses.dataclass(frozen=True)
class StoryRecord:
    """One story with its instruction. `labels` defaults to `features` (see the module docstring)."""

    story: str
    features: tuple[str, ...] = ()
    summary: str = ""
    words: tuple[str, ...] = ()
    labels: tuple[str, ...] | None = None
    extra: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "features", canonical_features(self.features))
        labels = self.features if self.labels is None else canonical_features(self.labels)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "words", tuple(self.words))

    def has(self, feature: str) -> bool:
        """Whether the story contains `feature` (its label, not its header)."""
        return feature in self.labels

    def asks(self, feature: str) -> bool:
        """Whether the header asks for `feature`."""
        return feature in self.features

    def replace(self, **changes) -> StoryRecord:
        return dataclasses.replace(self, **changes)


def feature_vector(features: Sequence[str]) -> list[bool]:
    """One flag per FEATURES entry."""
    return [f in features for f in FEATURES]


def render_header(record: StoryRecord) -> str:
    """The instruction header, ending with `Story: ` (the story follows directly).

    Fields come in one fixed order (Features, Words, Summary), whatever their order in the source; empty fields
    are left out, so a record without features has no `Features:` line (as in the public files).
    """
    lines = []
    if record.features:
        lines.append("Features: " + ", ".join(record.features))
    if record.words:
        lines.append("Words: " + ", ".join(record.words))
    if record.summary:
        lines.append("Summary: " + record.summary)
    lines.append("Story: ")
    return "\n".join(lines)


def render_text(record: StoryRecord) -> str:
    """Header and story: the text a language model is trained on (without the end marker)."""
    return render_header(record) + record.story


def render_file(records: Iterable[StoryRecord]) -> str:
    """Records in the public file format, each followed by an `<|endoftext|>` line."""
    return "".join(render_text(r) + "\n" + END_OF_TEXT + "\n" for r in records)


def _split_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def parse_record(text: str, where: str = "record") -> StoryRecord:
    """One record from its text (field lines and the story); `where` names it in errors."""
    fields: dict[str, str] = {}
    story_lines: list[str] | None = None
    current = None
    for number, line in enumerate(text.split("\n")):
        match = _FIELD_LINE.match(line)
        if match:
            current, value = match.group(1), match.group(2)
            if current in fields or (current == "Story" and story_lines is not None):
                raise FormatError(f"{where}: field {current!r} appears twice (line {number + 1} of the record)")
            if current == "Story":
                story_lines = [value]
            else:
                fields[current] = value.strip()
        elif current == "Story":
            story_lines.append(line)
        elif not line.strip():
            continue
        elif current is not None:
            fields[current] += " " + line.strip()
        else:
            raise FormatError(f"{where}: line {number + 1} of the record starts with no known field "
                              f"({', '.join(_KNOWN_FIELDS)}): {line[:60]!r}")
    if story_lines is None:
        raise FormatError(f"{where}: no 'Story:' field")
    story = "\n".join(story_lines).strip()
    if not story:
        raise FormatError(f"{where}: empty story")
    try:
        features = canonical_features(_split_list(fields.get("Features", "")))
    except ValueError as error:
        raise FormatError(f"{where}: {error}") from None
    extra = tuple((k, v) for k, v in fields.items() if k not in HEADER_FIELDS)
    return StoryRecord(story=story, features=features, summary=fields.get("Summary", ""),
                       words=tuple(_split_list(fields.get("Words", ""))), extra=extra)


OnError = Callable[[FormatError], None] | None


def _records(lines: Iterable[str], source: str, on_error: OnError) -> Iterator[StoryRecord]:
    block: list[str] = []
    start = 1

    def parse():
        try:
            return parse_record("\n".join(block), f"{source}:{start}")
        except FormatError as error:
            if on_error is None:
                raise
            on_error(error)
            return None

    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if line.strip() == END_OF_TEXT:
            if any(part.strip() for part in block) and (record := parse()) is not None:
                yield record
            block, start = [], number + 1
        else:
            block.append(line)
    if any(part.strip() for part in block) and (record := parse()) is not None:
        yield record


def parse_text(text: str, source: str = "<text>", on_error: OnError = None) -> Iterator[StoryRecord]:
    """Records of a TinyStories-Instruct text (records separated by `<|endoftext|>` lines).

    A malformed record raises FormatError, or, given `on_error`, is passed to it and skipped.
    """
    return _records(text.split("\n"), source, on_error)


def parse_file(path, on_error: OnError = None) -> Iterator[StoryRecord]:
    """Records of a TinyStories-Instruct file, streamed line by line (the public train file is ~2.7 GB).

    Bytes that are not UTF-8 become U+FFFD (the public train file holds a few truncated sequences).
    """
    with open(path, encoding="utf-8", errors="replace") as handle:
        yield from _records(handle, str(path), on_error)
