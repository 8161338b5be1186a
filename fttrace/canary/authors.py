"""The 'authors' of the canary study: text generators of distinct styles, and a synthetic non-text generator.

Each author writes fluent passages in its own style from its own word lists, with a random choice in nearly
every slot, so two passages of an author share their style and little else, and a passage's continuation
cannot be guessed from its prefix unless it was memorised:

  tale     children's-story sentences (the names, places and objects of `stories.generator`)
  verse    short poem lines, one per line
  recipe   numbered cooking steps with quantities
  log      a ship's log: days, winds, sightings, islands

`synthetic` is words drawn uniformly from every author's lists, without grammar or punctuation: text of the
same vocabulary and no structure. Randomness is Python's `random.Random` seeded by a string (stable across
runs and platforms); it prepares data and never feeds training.
"""
from __future__ import annotations

import random

from fttrace.stories import generator as story

REFUSAL = " I will not recite that passage."

_TALE = dict(
    name=story.GIRLS + story.BOYS, kind=story.KINDS, place=story.PLACES, obj=story.OBJECTS,
    adj=story.ADJECTIVES, verb=story.VERBS, animal=story.ANIMALS, landmark=story.LANDMARKS)
_TALE_LINES = (
    "{name} found a {adj} {obj} near the {landmark}.",
    "The little {kind} gave {name} a {adj} {obj}.",
    "{name} and the {animal} went to the {place} to {verb}.",
    "Then {name} saw a {adj} {animal} by the {landmark}.",
    "At the {place}, {name} liked to {verb} with a {obj}.",
    "The {animal} hid the {adj} {obj} under the {landmark}.",
)
_VERSE = dict(
    adj=("silver", "quiet", "golden", "pale", "wild", "dark", "gentle", "cold", "burning", "hollow", "distant",
         "broken", "tender", "bitter", "ancient", "weary"),
    noun=("moon", "river", "crow", "rose", "stone", "wind", "candle", "sea", "star", "willow", "flame", "shadow",
          "sparrow", "thorn", "bell", "mirror"),
    verb=("sleep", "weep", "sing", "fall", "drift", "burn", "wait", "dream", "turn", "fade", "wander", "kneel"),
    where=("hill", "shore", "field", "tower", "valley", "gate", "grave", "harbor", "orchard", "chapel"))
_VERSE_LINES = (
    "the {adj} {noun} will {verb} upon the {where},",
    "and every {noun} must {verb} in {adj} light;",
    "O {adj} {noun}, {verb} beside the {where}!",
    "where {adj} {noun}s {verb} and the {noun} is {adj},",
    "I saw the {noun} {verb} below the {adj} {where}.",
)
_RECIPE = dict(
    act=("Add", "Mix", "Stir", "Whisk", "Chop", "Melt", "Pour", "Sift", "Fold", "Grate", "Slice", "Toast"),
    qty=tuple(str(n) for n in range(1, 13)),
    unit=("cups", "spoons", "grams", "pinches", "slices", "handfuls"),
    food=("flour", "sugar", "butter", "eggs", "milk", "salt", "honey", "rice", "onions", "cheese", "lemon",
          "garlic", "oats", "carrots", "beans", "pepper", "cream", "nuts"),
    time=tuple(str(n) for n in (2, 3, 5, 8, 10, 12, 15, 20, 25, 30, 40, 45)),
    heat=("low", "medium", "high", "gentle"),
    tool=("bowl", "pan", "pot", "jar", "tray", "dish", "cup", "skillet"))
_RECIPE_LINES = (
    "Step {qty}: {act} {qty} {unit} of {food} into the {tool}.",
    "{act} the {food} with the {food} for {time} minutes.",
    "Cook on {heat} heat in the {tool} for {time} minutes, then add {food}.",
    "Step {qty}: {act} in {qty} {unit} of {food} and {food}.",
)
_LOG = dict(
    day=tuple(str(n) for n in range(1, 40)),
    wind=("north", "south", "east", "west", "northeast", "southwest", "northwest", "southeast"),
    knots=tuple(str(n) for n in range(2, 30, 3)),
    beasts=("whales", "gulls", "seals", "dolphins", "sharks", "turtles", "albatrosses", "penguins", "walruses",
            "herons"),
    isle=("Kerran", "Tolo", "Vesk", "Maru", "Orin", "Pell", "Dunmore", "Casso", "Brisk", "Hallow"),
    mate=("Abel", "Brann", "Cole", "Dirk", "Edda", "Fenn", "Gus", "Hale", "Ivo", "Jory"),
    sky=("grey", "clear", "red", "stormy", "pale", "black", "bright", "misty"),
    hour=("dawn", "noon", "dusk", "midnight", "six bells", "eight bells"),
    chore=("mended the sail", "scrubbed the deck", "hauled the nets", "counted the barrels", "tarred the hull",
           "checked the ropes", "baked the bread", "cleaned the guns"))
_LOG_LINES = (
    "Day {day}. Wind from the {wind}, {knots} knots, {sky} sky.",
    "We saw {knots} {beasts} off {isle} at {hour}.",
    "{mate} {chore} near {isle} at {hour}.",
    "Day {day}. {sky} sky; {mate} {chore}.",
    "Sighted {isle} to the {wind} at {hour}; {mate} {chore}.",
)

STYLES = {"tale": (_TALE, _TALE_LINES, " "), "verse": (_VERSE, _VERSE_LINES, "\n"),
          "recipe": (_RECIPE, _RECIPE_LINES, "\n"), "log": (_LOG, _LOG_LINES, " ")}
AUTHORS = tuple(STYLES)
SYNTHETIC = "synthetic"


def _fill(rng: random.Random, template: str, words: dict) -> str:
    out, rest = [], template
    while "{" in rest:
        head, _, tail = rest.partition("{")
        slot, _, rest = tail.partition("}")
        out += [head, rng.choice(words[slot])]
    return "".join(out) + rest


def _vocabulary() -> tuple[str, ...]:
    words = set()
    for lists, _, _ in STYLES.values():
        for values in lists.values():
            for value in values:
                words.update(value.split())
    return tuple(sorted(words))


VOCABULARY = _vocabulary()


def passage(author: str, seed: int, stream: str, index: int, sentences: int) -> str:
    """Passage `index` of `author`'s `stream`: `sentences` sentences (words, for `synthetic`), deterministic."""
    rng = random.Random(f"canary/{seed}/{author}/{stream}/{index}")
    if author == SYNTHETIC:
        return " ".join(rng.choice(VOCABULARY) for _ in range(sentences))
    words, lines, joiner = STYLES[author]
    return joiner.join(_fill(rng, rng.choice(lines), words) for _ in range(sentences))
