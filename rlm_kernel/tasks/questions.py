"""A bank of synthetic TREC-coarse-style questions, one coarse label per question.

Why synthetic: OOLONG's ``trec_coarse`` split is built from the TREC question-classification set, which
we must not download or copy. What the benchmark needs from it is only this: short general-knowledge
questions whose coarse label (abbreviation, entity, description and abstract concept, human being,
location, numeric value) is clear from the *meaning* of the text, never from a tag in it. So each label
gets its own question templates and word lists (all written for this project), and the bank is their
full cross product: tens of thousands of distinct questions, more than a 131K-token context needs.

Two rules keep the benchmark honest:

- No question contains a label's name (``location``, ``entity``, ``numeric``...), so a model cannot
  grep its way to a label; it has to read each question (or ask a sub-model to).
- Templates of different labels never produce the same text, so the label map below is a function;
  :func:`label_map` checks this when it is built.

:func:`label_map` is the scripted sub-model's "knowledge": it lives in the package and never in a
context, so the scripted root model really has to make sub-calls to label rows.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

__all__ = [
    "LABELS",
    "LABEL_WORDS",
    "bank",
    "label_map",
    "label_of",
]

#: The six TREC coarse labels, in OOLONG's wording and order.
LABELS: tuple[str, ...] = (
    "abbreviation",
    "entity",
    "description and abstract concept",
    "human being",
    "location",
    "numeric value",
)

#: Words that must never occur in a question: each label's name, word by word.
LABEL_WORDS: frozenset[str] = frozenset(w for label in LABELS for w in label.split() if w != "and")

_TOWNS = [
    "Arden", "Belmora", "Caldris", "Dunmore", "Elston", "Farrow", "Galdon", "Hollin", "Istra",
    "Jorvik", "Kestrel Bay", "Lunden", "Marrow", "Norhaven", "Ostrava Vale", "Pellam", "Quillon",
    "Rosk", "Saltmere", "Tarrin", "Umber", "Valen", "Westfold", "Yarrow", "Zenna", "Brightwater",
    "Coldharbour", "Eastmarch",
]
_COUNTRIES = [
    "Aldoria", "Brevania", "Castile Minor", "Dravonia", "Estmark", "Fennland", "Grausia", "Helvoria",
    "Iberland", "Kaldonia", "Lorvania", "Morrowland", "Novaria", "Ostland", "Pravia", "Rutheny",
    "Selvania", "Torland", "Valdaria", "Wendmark",
]
_ADJ = [
    "Northern", "Southern", "Eastern", "Western", "Central", "Royal", "National", "United", "Coastal",
    "Highland", "Lowland", "Federal", "Imperial", "Grand", "Free",
]
_ORG_NOUNS = [
    "Trade", "Rail", "Mining", "Weather", "Science", "Shipping", "Farming", "Banking", "Postal",
    "Medical", "Aviation", "Fishing", "Broadcasting", "Textile", "Forestry",
]
_ORG_KINDS = [
    "Council", "Company", "Society", "Authority", "Union", "League", "Bureau", "Institute",
    "Association", "Commission", "Agency", "Board",
]
_LETTERS = "ABCDEFGHJKLMNPRSTVW"
_THINGS = [
    "telescope", "printing press", "steam engine", "compass", "bicycle", "piano", "lightbulb",
    "sewing machine", "typewriter", "barometer", "microscope", "telegraph", "windmill", "water clock",
    "hot air balloon", "parachute", "lawn mower", "zipper", "safety pin", "can opener", "escalator",
    "refrigerator", "vacuum cleaner", "thermometer", "radio", "camera", "submarine", "helicopter",
]
_ANIMALS = [
    "otter", "badger", "heron", "walrus", "lynx", "tortoise", "falcon", "bison", "hedgehog", "moose",
    "penguin", "beaver", "pelican", "jackal", "marmot", "salamander", "octopus", "stork", "yak",
    "weasel", "kingfisher", "manatee", "ferret", "gazelle",
]
_TRADES = [
    "cartographer", "blacksmith", "cooper", "glazier", "chandler", "farrier", "tanner", "wheelwright",
    "apothecary", "stonemason", "weaver", "shipwright", "locksmith", "bookbinder", "clockmaker",
    "saddler", "potter", "thatcher", "falconer", "lamplighter",
]
_IDEAS = [
    "inflation", "democracy", "photosynthesis", "gravity", "irony", "erosion", "friction",
    "nostalgia", "impressionism", "entropy", "osmosis", "feudalism", "metaphor", "stoicism",
    "migration", "symbiosis", "sovereignty", "buoyancy", "empathy", "humidity", "camouflage",
    "diplomacy", "hibernation", "pollination",
]
_EVENTS = [
    "harvest fair", "spring regatta", "winter games", "book festival", "lantern parade",
    "chess championship", "horse show", "jazz festival", "flower show", "film festival",
    "marathon", "kite festival", "music week", "glass fair", "cheese market",
]
_LANDMARKS = [
    "Old Bridge", "Clock Tower", "Grey Lighthouse", "Stone Abbey", "Copper Dome", "High Gate",
    "Twin Towers Hotel", "Salt Museum", "Glass Palace", "Iron Pier", "Red Fort", "Summer Palace",
    "Cathedral of Saint Ives", "Harbour Wall", "Bell Tower",
]
_ROLES = [
    "mayor", "governor", "astronomer royal", "poet laureate", "chief justice", "prime minister",
    "archbishop", "chancellor", "harbour master", "court painter", "state architect", "head librarian",
]
_TITLES = [
    "The Silent Harbour", "A Winter in Lunden", "The Copper Key", "Songs of the Marsh",
    "The Last Lamplighter", "Letters from Istra", "The Glass Orchard", "Night Over Saltmere",
    "The Weaver's Daughter", "Roads to Valen", "The Iron Meadow", "A House of Clocks",
    "The Tarrin Almanac", "Seven Grey Sails",
]
_CONTAINERS = [
    "deck of cards", "standard chessboard", "dozen", "leap year", "baker's dozen", "gross",
    "week", "octagon", "century", "decade", "millennium", "fortnight", "sonnet",
]
_COUNTED = ["squares", "days", "hours", "lines", "sides", "items", "cards", "minutes", "years"]
_ENTY_KINDS = [
    ("color", "flag of"), ("animal", "coat of arms of"), ("flower", "emblem of"),
    ("bird", "seal of"), ("tree", "crest of"), ("gemstone", "crown of"),
]
_SPORTS_PLACES = _TOWNS


def _abbreviation() -> list[str]:
    # Expansions asked from an acronym, and acronyms asked from a full name.
    out: list[str] = []
    for a, b, c in itertools.product(_LETTERS, _LETTERS, _LETTERS):
        out.append(f"What does {a}{b}{c} stand for?")
        out.append(f"What do the letters {a}.{b}.{c}. stand for on an old {c.lower()}-series coin?")
    for adj, noun, kind in itertools.product(_ADJ, _ORG_NOUNS, _ORG_KINDS):
        out.append(f"What is the short form of the {adj} {noun} {kind}?")
        out.append(f"What is the {adj} {noun} {kind} usually called by its initials?")
    for place, kind in itertools.product(_TOWNS + _COUNTRIES, _ORG_KINDS):
        out.append(f"What is the acronym of the {place} {kind}?")
    return out


def _entity() -> list[str]:
    out: list[str] = []
    for (kind, of), place in itertools.product(_ENTY_KINDS, _TOWNS + _COUNTRIES):
        out.append(f"What {kind} appears on the {of} {place}?")
    for trade, place in itertools.product(_TRADES, _TOWNS):
        out.append(f"What tool did a {trade} in old {place} use most?")
        out.append(f"What kind of wood did the {trade}s of {place} prefer?")
    for animal, place in itertools.product(_ANIMALS, _TOWNS + _COUNTRIES):
        out.append(f"What does the {animal} of {place} eat in winter?")
    for event, place in itertools.product(_EVENTS, _TOWNS):
        out.append(f"What prize is given at the {place} {event}?")
    for thing, adj in itertools.product(_THINGS, _ADJ):
        out.append(f"What material was the first {adj.lower()} {thing} made of?")
    return out


def _description() -> list[str]:
    out: list[str] = []
    for idea in _IDEAS:
        out.append(f"What is {idea}?")
        out.append(f"How would you explain {idea} to a child?")
    for idea, place in itertools.product(_IDEAS, _TOWNS + _COUNTRIES):
        out.append(f"Why did {idea} matter so much in the history of {place}?")
        out.append(f"What did the people of {place} mean by {idea}?")
    for thing, adj in itertools.product(_THINGS, _ADJ):
        out.append(f"How does a {adj.lower()} {thing} work?")
    for trade, place in itertools.product(_TRADES, _TOWNS + _COUNTRIES):
        out.append(f"What does a {trade} from {place} do all day?")
    for animal in _ANIMALS:
        out.append(f"Why do {animal}s sleep so much?")
    return out


def _human() -> list[str]:
    out: list[str] = []
    for thing, place in itertools.product(_THINGS, _TOWNS + _COUNTRIES):
        out.append(f"Who built the first {thing} in {place}?")
    for role, place in itertools.product(_ROLES, _TOWNS + _COUNTRIES):
        out.append(f"Who was the first {role} of {place}?")
        out.append(f"Which person served longest as {role} of {place}?")
    for title in _TITLES:
        out.append(f"Who wrote {title}?")
        out.append(f"Who painted the cover of {title}?")
    for event, place in itertools.product(_EVENTS, _TOWNS):
        out.append(f"Who won the {place} {event} three times in a row?")
    return out


def _location() -> list[str]:
    out: list[str] = []
    for landmark, place in itertools.product(_LANDMARKS, _TOWNS + _COUNTRIES):
        out.append(f"Where is the {landmark} of {place}?")
    for event, place in itertools.product(_EVENTS, _COUNTRIES):
        out.append(f"In which city of {place} is the {event} held?")
    for adj, place in itertools.product(_ADJ, _COUNTRIES):
        out.append(f"What is the capital of {adj.lower()} {place}?")
        out.append(f"Which river crosses {adj.lower()} {place}?")
    for animal, place in itertools.product(_ANIMALS, _COUNTRIES):
        out.append(f"Where in {place} can you see a wild {animal}?")
    for title in _TITLES:
        out.append(f"In what town is {title} set?")
    return out


def _numeric() -> list[str]:
    out: list[str] = []
    for counted, container in itertools.product(_COUNTED, _CONTAINERS):
        out.append(f"How many {counted} are there in a {container}?")
    for landmark, place in itertools.product(_LANDMARKS, _TOWNS + _COUNTRIES):
        out.append(f"How tall is the {landmark} of {place}?")
        out.append(f"In what year was the {landmark} of {place} finished?")
    for a, b in itertools.product(_TOWNS, _TOWNS):
        if a != b:
            out.append(f"How far is {a} from {b}?")
    for animal, adj in itertools.product(_ANIMALS, ("adult", "young", "wild", "tame")):
        out.append(f"How much does an {adj} {animal} weigh?" if adj[0] in "aeiou"
                   else f"How much does a {adj} {animal} weigh?")
    for place in _TOWNS + _COUNTRIES:
        out.append(f"What is the population of {place}?")
        out.append(f"How old is the oldest house in {place}?")
    return out


_BUILDERS = {
    "abbreviation": _abbreviation,
    "entity": _entity,
    "description and abstract concept": _description,
    "human being": _human,
    "location": _location,
    "numeric value": _numeric,
}


@lru_cache(maxsize=1)
def bank() -> dict[str, tuple[str, ...]]:
    """Every question of every label, deduplicated, in a fixed order (so seeded sampling is stable)."""
    return {label: tuple(dict.fromkeys(_BUILDERS[label]())) for label in LABELS}


@lru_cache(maxsize=1)
def label_map() -> dict[str, str]:
    """Question text → label. Raises if two labels share a text (the map must be a function)."""
    out: dict[str, str] = {}
    for label, questions in bank().items():
        for q in questions:
            if out.setdefault(q, label) != label:
                raise ValueError(f"question {q!r} generated under two labels")
    return out


def label_of(question: str) -> str | None:
    """The label of a bank question (whitespace-trimmed), or None for a text the bank never made."""
    return label_map().get(question.strip())
