"""Procedural children's stories in the TinyStories-Instruct record format, seeded, with no downloads.

A story is a short plot assembled from template sentences: an opening (a hero with an object), a place and a
friend, an episode (they play, the object gets lost, or they help an animal) and an ending. Each feature of
FEATURES is realised by its own constructions, which appear in a story exactly when the feature is in its
labels, so `detectors.py` recovers the labels without error:

  Dialogue       quoted speech (`"Can I play too?" asked Tom.`); without it, speech is reported, never quoted
  Twist          an unexpected turn: `But then, the box turned out to be ...`, `... was really ...`
  BadEnding      a sad, unresolved ending (`... lost forever`, `... could not fix it`, `... went home alone`)
  MoralValue     a stated lesson: `The lesson is that ...`, `... learned that ...`
  Foreshadowing  a hint of what comes: `Little did she know ...`, `... something big would happen soon`
  Conflict       a quarrel over the object: `... started to fight`, `... did not want to share`

Features are drawn independently with the rates of `GeneratorConfig` (any combination can occur). The words of
the `Words:` field (a verb, a noun and an adjective) appear in the story verbatim. Record `i` of a stream
depends only on (seed, stream, i), not on how many records are drawn, so train and validation streams are
disjoint draws and a larger set extends a smaller one. Randomness here is Python's `random.Random` seeded by a
string (hashed with SHA-512, stable across runs and platforms); it prepares data and never feeds training.
"""
from __future__ import annotations

import dataclasses
import random

from fttrace.stories.record import FEATURES, StoryRecord

DEFAULT_RATES = {"Dialogue": 0.5, "Twist": 0.3, "BadEnding": 0.2, "MoralValue": 0.3,
                 "Foreshadowing": 0.25, "Conflict": 0.3}


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Probability of each feature in a story (independent draws); missing features get DEFAULT_RATES."""

    rates: tuple[tuple[str, float], ...] = tuple(DEFAULT_RATES.items())

    def __post_init__(self):
        rates = dict(DEFAULT_RATES)
        for name, rate in dict(self.rates).items():
            if name not in FEATURES:
                raise ValueError(f"unknown story feature {name!r}; known: {', '.join(FEATURES)}")
            if not 0.0 <= float(rate) <= 1.0:
                raise ValueError(f"rate of {name} must lie in [0, 1], got {rate}")
            rates[name] = float(rate)
        object.__setattr__(self, "rates", tuple((f, rates[f]) for f in FEATURES))

    def rate(self, feature: str) -> float:
        return dict(self.rates)[feature]


GIRLS = ("Lily", "Mia", "Anna", "Zoe", "Emma", "Lucy", "Sara", "Ella", "Ruby", "Amy", "Nora", "Rosa",
         "Maya", "Kim", "Sue", "Ivy", "Lola", "Jenny", "Daisy", "Molly")
BOYS = ("Tom", "Ben", "Sam", "Max", "Leo", "Jack", "Tim", "Finn", "Noah", "Jake", "Kai", "Owen", "Bob",
        "Dan", "Joe", "Luke", "Ned", "Oscar", "Pete", "Ray")
KINDS = ("girl", "boy", "puppy", "kitten", "bunny", "bear", "bird", "frog", "duck", "mouse", "fox", "pig")
PLACES = ("park", "garden", "forest", "beach", "farm", "pond", "hill", "kitchen", "backyard", "school",
          "river", "meadow", "zoo", "town", "library", "playground", "lake", "field", "barn", "shop")
OBJECTS = ("ball", "kite", "box", "toy car", "stone", "book", "hat", "balloon", "cookie", "flower", "shell",
           "drum", "blanket", "apple", "boat", "doll", "truck", "cup", "key", "feather", "bell", "spoon",
           "train", "crayon", "basket", "sock", "leaf", "jar", "rope", "map")
ADJECTIVES = ("big", "small", "shiny", "soft", "red", "blue", "old", "tiny", "bright", "green", "yellow",
              "fluffy", "round", "smooth", "pretty", "funny", "heavy", "purple", "striped", "sparkly")
VERBS = ("play", "run", "jump", "dance", "sing", "dig", "swim", "paint", "read", "climb", "build", "skip",
         "draw", "hop", "bake", "explore", "hide", "roll", "splash", "spin")
SURPRISES = ("a magic wand", "a sleeping kitten", "a door to a secret garden", "a nest full of baby birds",
             "a map to a hidden treasure", "a gift from grandma", "a little robot", "a talking frog",
             "full of chocolate", "a home for a tiny snail", "a wishing machine", "the key to the old shed")
MORALS = ("sharing is caring", "it is good to be kind", "friends help each other",
          "you should always tell the truth", "it is important to listen to your mom",
          "being patient is good", "it is nice to say sorry", "you should take care of your things",
          "working together makes things easier", "it is good to be brave")
LANDMARKS = ("big tree", "old bench", "little bridge", "red gate", "tall fence", "big rock", "sandbox",
             "flower bed", "swing", "wooden shed")
ANIMALS = ("bird", "kitten", "puppy", "squirrel", "turtle", "bee", "snail", "lamb", "chick", "hedgehog")
WEATHER = ("The sun was shining.", "The sky was blue and clear.", "The wind was soft and warm.",
           "Birds were singing in the trees.", "It was a warm day.", "The grass was green and soft.",
           "There were many flowers everywhere.", "It was a quiet morning.")


@dataclasses.dataclass
class _Cast:
    name: str
    kind: str
    he: str
    his: str
    friend: str
    friend_he: str
    place: str
    thing: str
    adjective: str
    verb: str


def _person(rng: random.Random) -> tuple[str, str, str]:
    girl = rng.random() < 0.5
    return rng.choice(GIRLS if girl else BOYS), ("she" if girl else "he"), ("her" if girl else "his")


def _kind_for(rng: random.Random, he: str) -> str:
    kind = rng.choice(KINDS)
    if kind in ("girl", "boy"):
        kind = "girl" if he == "she" else "boy"
    return kind


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _opening(rng, c: _Cast) -> list[str]:
    a = rng.choice([
        f"Once upon a time, there was a little {c.kind} named {c.name}.",
        f"There once was a {c.kind} called {c.name}.",
        f"{c.name} was a little {c.kind} who lived near the {c.place}.",
        f"Once upon a time, in a small town, lived a {c.kind} named {c.name}.",
    ])
    b = rng.choice([
        f"{_cap(c.he)} had a {c.adjective} {c.thing} and loved to {c.verb} with it.",
        f"{c.name} loved to {c.verb} every day, and {c.his} favorite toy was a {c.adjective} {c.thing}.",
        f"Every morning, {c.name} took {c.his} {c.adjective} {c.thing} outside to {c.verb}.",
        f"{_cap(c.his)} best thing in the world was a {c.adjective} {c.thing}, and {c.he} liked to {c.verb}.",
    ])
    return [a, b]


def _foreshadowing(rng, c: _Cast) -> str:
    return rng.choice([
        f"Little did {c.he} know, this day would be very different.",
        f"{c.name} did not know that something big would happen soon.",
        f"Little did {c.name} know that the {c.thing} would change everything.",
        "The clouds moved fast, as if something was about to happen.",
    ])


def _meeting(rng, c: _Cast) -> list[str]:
    go = rng.choice([
        f"One day, {c.name} went to the {c.place}.",
        f"One morning, {c.name} walked to the {c.place} with the {c.thing}.",
        f"Later, {c.name} went to play at the {c.place}.",
    ])
    meet = rng.choice([
        f"There, {c.he} met {c.friend}.",
        f"At the {c.place}, {c.he} saw {c.friend}.",
        f"{c.friend} was there too.",
    ])
    return [go] + ([rng.choice(WEATHER)] if rng.random() < 0.6 else []) + [meet]


def _talk(rng, c: _Cast, dialogue: bool) -> list[str]:
    if dialogue:
        return rng.choice([
            [f"\"Hi, {c.name}! Can I {c.verb} with you?\" asked {c.friend}.",
             f"\"Yes, let's {c.verb} together!\" said {c.name}."],
            [f"\"Look at my {c.thing}!\" said {c.name}.", f"\"Wow, it is so {c.adjective}!\" said {c.friend}."],
            [f"{c.friend} smiled and said, \"Hello! What are you doing?\"", f"\"I want to {c.verb},\" said {c.name}."],
        ])
    return rng.choice([
        [f"{c.friend} asked if {c.friend_he} could {c.verb} too.", f"{c.name} said yes."],
        [f"{c.name} showed the {c.thing} to {c.friend}.", f"{c.friend} thought it was very {c.adjective}."],
        [f"{c.friend} waved at {c.name}.", f"They wanted to {c.verb} together."],
    ])


PLOTS = ("play", "lost", "help")


def _episode(rng, c: _Cast, plot: str, animal: str) -> list[str]:
    spot = rng.choice(LANDMARKS)
    if plot == "play":
        return [rng.choice([
            f"They decided to {c.verb} near the {spot}.",
            f"Together they ran to the {spot} to {c.verb}.",
            f"They took turns with the {c.thing} by the {spot}.",
        ])]
    if plot == "lost":
        return [f"{c.name} put the {c.thing} down by the {spot}.",
                rng.choice([f"When {c.he} came back, the {c.thing} was not there!",
                            f"Later, {c.he} looked for it, but it was gone from its place."]),
                rng.choice(["They looked everywhere for it.",
                            f"{c.name} and {c.friend} searched behind every tree and bush."])]
    return [f"On the way, they found a little {animal} that was stuck near the {spot}.",
            rng.choice([f"{c.name} used the {c.thing} to help it get out.",
                        f"They moved the branches gently, and the {animal} was free."]),
            rng.choice([f"The {animal} was very thankful.", f"The little {animal} hopped around them."])]


def _conflict(rng, c: _Cast, dialogue: bool) -> list[str]:
    lines = [rng.choice([
        f"But {c.friend} wanted the {c.thing} too, and {c.name} did not want to share.",
        f"Soon {c.friend} grabbed the {c.thing}, and the two friends started to fight.",
        f"{c.name} and {c.friend} both wanted the {c.thing}, so they argued about it.",
    ])]
    if dialogue:
        lines.append(rng.choice([f"\"It is mine!\" shouted {c.name}.", f"\"Give it back!\" cried {c.name}."]))
    return lines


def _twist(rng, c: _Cast) -> str:
    surprise = rng.choice(SURPRISES)
    return rng.choice([
        f"But then, the {c.thing} turned out to be {surprise}!",
        f"But then, something strange happened: the {c.thing} was really {surprise}.",
        f"To everyone's surprise, the {c.thing} turned out to be {surprise}.",
    ])


def _ending(rng, c: _Cast, bad: bool, conflict: bool, plot: str) -> list[str]:
    if bad:
        return rng.choice([
            [f"The {c.thing} fell into the water and was lost forever.", f"{c.name} was sad for a long time."],
            [f"The {c.thing} broke into many pieces, and nobody could fix it.", f"{c.name} cried."],
            [f"{c.friend} ran away with the {c.thing}, and {c.name} went home alone."],
            [f"A big dog took the {c.thing}, and {c.name} never saw it again."],
        ])
    lines = [f"At last, they found the {c.thing} under a leaf."] if plot == "lost" else []
    if conflict:
        lines.append(f"{c.name} and {c.friend} said sorry and shared the {c.thing}.")
    return lines + [rng.choice([
        "They played together all day and were very happy.",
        f"In the end, {c.name} and {c.friend} became best friends.",
        f"{c.name} smiled and went home with a happy heart.",
        "It was the best day ever, and they laughed a lot.",
    ])]


def _moral(rng, c: _Cast) -> str:
    moral = rng.choice(MORALS)
    return rng.choice([f"The lesson is that {moral}.", f"{c.name} learned that {moral}.",
                       f"The moral of the story is that {moral}."])


def _summary(rng, c: _Cast, labels: set[str], plot: str, animal: str) -> str:
    text = f"{c.name} brings a {c.adjective} {c.thing} to the {c.place} and meets {c.friend}"
    text += {"play": "", "lost": f", but the {c.thing} gets lost", "help": f", and they help a {animal}"}[plot]
    if "Conflict" in labels:
        text += ", and they quarrel over it"
    if "Twist" in labels:
        text += rng.choice([", but the toy is not what it seems", ", and it holds a surprise"])
    text += "."
    if "BadEnding" in labels:
        text += rng.choice([" The story ends sadly.", " It does not end well."])
    elif "MoralValue" in labels:
        text += " Everyone learns something."
    return text


def generate_story(seed: int, index: int, config: GeneratorConfig = GeneratorConfig(),
                   stream: str = "train") -> StoryRecord:
    """Record `index` of the stream `stream` for `seed` (independent of every other index)."""
    rng = random.Random(f"fttrace-stories/{seed}/{stream}/{index}")
    labels = {f for f in FEATURES if rng.random() < config.rate(f)}
    name, he, his = _person(rng)
    friend, friend_he, _ = _person(rng)
    while friend == name:
        friend, friend_he, _ = _person(rng)
    c = _Cast(name=name, kind=_kind_for(rng, he), he=he, his=his, friend=friend, friend_he=friend_he,
              place=rng.choice(PLACES), thing=rng.choice(OBJECTS), adjective=rng.choice(ADJECTIVES),
              verb=rng.choice(VERBS))
    first = _opening(rng, c)
    if "Foreshadowing" in labels:
        first.append(_foreshadowing(rng, c))
    plot, animal = rng.choice(PLOTS), rng.choice(ANIMALS)
    second = _meeting(rng, c) + _talk(rng, c, "Dialogue" in labels)
    if "Conflict" in labels:
        second += _conflict(rng, c, "Dialogue" in labels)
    second += _episode(rng, c, plot, animal)
    third = [_twist(rng, c)] if "Twist" in labels else []
    third += _ending(rng, c, "BadEnding" in labels, "Conflict" in labels, plot)
    if "MoralValue" in labels:
        third.append(_moral(rng, c))
    story = "\n\n".join(" ".join(p) for p in (first, second, third))
    words = [c.verb, c.thing.split()[-1], c.adjective]
    rng.shuffle(words)
    return StoryRecord(story=story, features=tuple(labels), summary=_summary(rng, c, labels, plot, animal),
                       words=tuple(words))


def generate_records(count: int, seed: int = 0, config: GeneratorConfig = GeneratorConfig(),
                     stream: str = "train") -> list[StoryRecord]:
    """The first `count` records of a stream."""
    return [generate_story(seed, i, config, stream) for i in range(count)]
