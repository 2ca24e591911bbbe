"""S-NIAH: single needle in a haystack, after RULER's ``niah_single`` tasks.

Shape (as RULER publishes it): a haystack of filler text; one needle sentence
``One of the special magic numbers for {key} is: {value}.`` put at a seeded depth, on a sentence
boundary; the question ``What is the special magic number for {key} mentioned in the provided text?``.
The key is an adjective-noun pair (``quiet-harbour``), the value a 7-digit number or, with
``value_type="uuid"``, a UUID (RULER's uuid variant says "uuids" / "uuid" in the needle and question).

Haystacks: ``"noise"`` is RULER's repeated filler ("The grass is green. The sky is blue. ...");
``"prose"`` cycles the short text in ``data/prose.txt`` (written for this project; RULER's own essay
haystack is Paul Graham's essays, which we neither download nor copy).

Length: ``length_tokens`` is counted as characters / 4 (see :data:`tasks.CHARS_PER_TOKEN`); the
context is whole sentences, so it lands within half a sentence of the target.

Scoring (RULER's ``string_match_all`` for one value): 1 if the value occurs in the answer,
case-insensitively, else 0 (:func:`scoring.score_sniah`).
"""

from __future__ import annotations

import re
import uuid
from functools import lru_cache
from importlib import resources

from .base import CHARS_PER_TOKEN, Task, task_rng

__all__ = ["generate", "NOISE", "QUERY_TEMPLATE", "NEEDLE_TEMPLATE", "ADJECTIVES", "NOUNS"]

FAMILY = "sniah"
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE_TEMPLATE = "One of the special magic {kind}s for {key} is: {value}."
QUERY_TEMPLATE = "What is the special magic {kind} for {key} mentioned in the provided text?"

ADJECTIVES = (
    "quiet", "amber", "brisk", "crooked", "dusty", "eager", "faded", "gentle", "hollow", "icy",
    "jagged", "kind", "lively", "mellow", "narrow", "odd", "pale", "rapid", "silent", "tidy",
    "upright", "vivid", "wary", "young", "zealous", "bitter", "clever", "distant", "early", "fragile",
    "golden", "humble", "idle", "jolly", "lucky", "modest", "noble", "polite", "rustic", "steady",
)
NOUNS = (
    "harbour", "lantern", "meadow", "anchor", "biscuit", "candle", "dolphin", "engine", "feather",
    "garden", "hammer", "island", "jacket", "kettle", "ladder", "mirror", "needle", "orchard",
    "pebble", "quarry", "river", "saddle", "teapot", "umbrella", "violin", "window", "yacht",
    "zipper", "button", "cottage", "drum", "falcon", "glacier", "helmet", "insect", "journal",
    "kitten", "lemon", "magnet", "notebook",
)


@lru_cache(maxsize=1)
def _prose_sentences() -> tuple[str, ...]:
    text = resources.files(__package__).joinpath("data/prose.txt").read_text("utf-8")
    return tuple(s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s)


def _sentences(haystack: str) -> tuple[str, ...]:
    if haystack == "noise":
        return tuple(s + "." for s in NOISE.rstrip(".").split(". "))
    if haystack == "prose":
        return _prose_sentences()
    raise ValueError(f"unknown haystack {haystack!r} (use 'noise' or 'prose')")


def _fill(sentences: tuple[str, ...], target_chars: int, start: int) -> list[str]:
    """Whole sentences, cycled from ``start``, whose joined length is as close to the target as we can."""
    out: list[str] = []
    total = -1  # joining adds one space per sentence after the first
    i = start
    while total < target_chars:
        s = sentences[i % len(sentences)]
        if total + 1 + len(s) > target_chars and (total + 1 + len(s)) - target_chars > target_chars - total:
            break  # stopping short is closer to the target than taking this sentence
        out.append(s)
        total += 1 + len(s)
        i += 1
    return out


def make_task(
    seed: int, index: int, length_tokens: int, *, haystack: str = "noise",
    value_type: str = "number", depth: float | None = None,
) -> Task:
    """One S-NIAH instance; ``depth`` (0 = start, 1 = end) defaults to a seeded uniform draw."""
    rng = task_rng(FAMILY, seed, index)
    key = f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
    if value_type == "number":
        value, kind = str(rng.randint(1_000_000, 9_999_999)), "number"
    elif value_type == "uuid":
        value, kind = str(uuid.UUID(int=rng.getrandbits(128), version=4)), "uuid"
    else:
        raise ValueError(f"unknown value_type {value_type!r} (use 'number' or 'uuid')")
    d = rng.random() if depth is None else min(max(float(depth), 0.0), 1.0)
    needle = NEEDLE_TEMPLATE.format(kind=kind, key=key, value=value)
    sentences = _sentences(haystack)
    start = rng.randrange(len(sentences)) if haystack == "prose" else 0
    body = _fill(sentences, max(length_tokens * CHARS_PER_TOKEN - len(needle) - 1, 0), start)
    at = round(d * len(body))
    context = " ".join([*body[:at], needle, *body[at:]])
    return Task(
        task_id=f"{FAMILY}-s{seed}-{index:04d}",
        family=FAMILY,
        query=QUERY_TEMPLATE.format(kind=kind, key=key),
        context=context,
        gold=value,
        metadata={"length_tokens": length_tokens, "haystack": haystack, "value_type": value_type},
        answer_key={"key": key, "needle": needle, "depth": round(d, 4), "needle_sentence_index": at},
    )


def generate(seed: int, n: int, length_tokens: int, **opts: object) -> list[Task]:
    """``n`` S-NIAH tasks; opts: ``haystack`` ("noise" | "prose"), ``value_type`` ("number" | "uuid"),
    ``depth`` (fixed 0..1 for every task; default a seeded draw per task)."""
    return [make_task(seed, i, length_tokens, **opts) for i in range(n)]  # type: ignore[arg-type]
