"""Feature detectors: one construction-matching regular expression per story feature.

On generated stories (`generator.py`) each detector is exact: a construction appears in a story if and only if
its feature is among the labels. On real TinyStories they are heuristics whose agreement with the published
labels `agreement` measures (precision and recall per feature). `shares` gives the share of a set of stories
(a model's samples, say) showing each feature. BadEnding is looked for in the closing characters of a story
only, since a sad turn in the middle does not make a bad ending.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from fttrace.stories.record import FEATURES, StoryRecord

ENDING_CHARS = 400

PATTERNS = {
    "Dialogue": r"[\"“”]",
    "Twist": r"\b(?:turned out to be|turned out that|(?:was|were) really|to (?:everyone's|his|her|their|our) "
             r"surprise|plot twist)\b",
    "BadEnding": r"\b(?:lost forever|gone forever|(?:could not|couldn't|nobody could|no one could) fix it|"
                 r"never saw (?:it|him|her|them) again|went home alone|was sad for a long time|never came back|"
                 r"died)\b",
    "MoralValue": r"\b(?:the lesson (?:is|was)|learned (?:a lesson|that|to)|"
                  r"the moral(?: of the story)? (?:is|was))\b",
    "Foreshadowing": r"\b(?:little did \w+ know|would happen soon|(?:was|were) about to happen|"
                     r"did not know that|didn't know that|would soon)\b",
    "Conflict": r"\b(?:started to fight|began to fight|argued|argue|fought|quarrel(?:l?ed)?|got angry|"
                r"did not want to share|didn't want to share)\b",
}
_COMPILED = {name: re.compile(pattern, re.IGNORECASE) for name, pattern in PATTERNS.items()}


def detect_feature(story: str, feature: str) -> bool:
    """Whether `story` shows `feature`'s construction."""
    text = story[-ENDING_CHARS:] if feature == "BadEnding" else story
    return _COMPILED[feature].search(text) is not None


def detect(story: str) -> tuple[str, ...]:
    """The features whose constructions `story` shows, in FEATURES order."""
    return tuple(f for f in FEATURES if detect_feature(story, f))


def shares(stories: Iterable[str]) -> dict[str, float]:
    """Per feature, the share of `stories` (e.g. a model's samples) whose construction the detector finds."""
    counts = dict.fromkeys(FEATURES, 0)
    total = 0
    for story in stories:
        total += 1
        for feature in detect(story):
            counts[feature] += 1
    return {f: counts[f] / total if total else float("nan") for f in FEATURES}


@dataclasses.dataclass(frozen=True)
class Agreement:
    """Detector against labels for one feature, over a set of stories."""

    feature: str
    true_pos: int
    false_pos: int
    false_neg: int
    true_neg: int

    @property
    def precision(self) -> float:
        found = self.true_pos + self.false_pos
        return self.true_pos / found if found else float("nan")

    @property
    def recall(self) -> float:
        present = self.true_pos + self.false_neg
        return self.true_pos / present if present else float("nan")

    @property
    def accuracy(self) -> float:
        total = self.true_pos + self.false_pos + self.false_neg + self.true_neg
        return (self.true_pos + self.true_neg) / total if total else float("nan")


def agreement(records: Iterable[StoryRecord]) -> dict[str, Agreement]:
    """Per feature, how the detector's verdicts compare with the records' labels."""
    counts = {f: [0, 0, 0, 0] for f in FEATURES}
    for record in records:
        for feature in FEATURES:
            found, present = detect_feature(record.story, feature), record.has(feature)
            counts[feature][(0 if present else 1) if found else (2 if present else 3)] += 1
    return {f: Agreement(f, *c) for f, c in counts.items()}
