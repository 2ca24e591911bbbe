"""Scorers, following the published rules of each benchmark.

- S-NIAH (RULER ``string_match_all`` with one reference): 1.0 if the gold value occurs in the answer,
  case-insensitively, else 0.0.
- OOLONG: the answer is the text after the last ``:`` (the whole text if there is none), with the
  characters ``*``, ``[`` and ``]`` removed (models bold or bracket answers) and whitespace trimmed.
  Labels (most/least common) score by exact, case-insensitive match; comparisons score 1.0 when the
  gold phrase ("more common than", "less common than", "same frequency as") occurs in that text;
  counts score ``0.75 ** |gold - predicted|`` (so an off-by-one still earns 0.75), 0.0 if no number.
- OOLONG-Pairs: every ``(a, b)`` in the answer, normalised to ``(low, high)``, as a set; F1 against
  the gold set; both sets empty is a perfect 1.0, exactly one empty is 0.0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..tasks.base import Task
from ..tasks.oolong import COMPARISON_PHRASES

__all__ = [
    "score",
    "score_sniah",
    "score_oolong",
    "score_pairs",
    "parse_oolong_answer",
    "parse_pairs",
    "COMPARISON_PHRASES",
]

_PAIR_RE = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)")
_INT_RE = re.compile(r"-?\d+")


def score_sniah(gold: str, answer: str | None) -> float:
    return 1.0 if answer is not None and str(gold).lower() in str(answer).lower() else 0.0


def parse_oolong_answer(answer: str) -> str:
    """Text after the last ':' with ``*[]`` removed, trimmed and lower-cased."""
    tail = answer.rsplit(":", 1)[-1]
    return re.sub(r"[*\[\]]", "", tail).strip().lower()


def score_oolong(gold: str | int, answer: str | None, question_type: str | None = None) -> float:
    """One OOLONG answer. ``question_type`` (most_common, least_common, compare, count) picks the
    rule; without it the rule follows the gold (an int is a count, a comparison phrase a comparison)."""
    if answer is None:
        return 0.0
    parsed = parse_oolong_answer(str(answer))
    if question_type is None:
        if isinstance(gold, int):
            question_type = "count"
        elif str(gold).lower() in COMPARISON_PHRASES:
            question_type = "compare"
        else:
            question_type = "most_common"
    if question_type == "count":
        m = _INT_RE.search(parsed.replace(",", ""))
        if not m:
            return 0.0
        return 0.75 ** abs(int(gold) - int(m.group()))
    if question_type == "compare":
        return 1.0 if str(gold).lower() in parsed else 0.0
    return 1.0 if parsed == str(gold).strip().lower() else 0.0


def parse_pairs(answer: str) -> set[tuple[int, int]]:
    """Every ``(a, b)`` in the text, as ``(low, high)``."""
    out: set[tuple[int, int]] = set()
    for a, b in _PAIR_RE.findall(answer):
        x, y = int(a), int(b)
        out.add((min(x, y), max(x, y)))
    return out


def score_pairs(gold: Iterable[Iterable[int]], answer: str | None) -> float:
    """Set F1 of the answer's pairs against the gold pairs (both empty = 1.0)."""
    want = {(min(p), max(p)) for p in (tuple(int(x) for x in pair) for pair in gold)}
    got = parse_pairs(answer) if answer is not None else set()
    if not want and not got:
        return 1.0
    hit = len(want & got)
    if hit == 0:
        return 0.0
    precision, recall = hit / len(got), hit / len(want)
    return 2 * precision * recall / (precision + recall)


def score(task: Task, answer: Any) -> float:
    """Score one answer for any family (``None``, e.g. a run without FINAL, scores 0)."""
    text = None if answer is None else str(answer)
    if task.family == "sniah":
        return score_sniah(task.gold, text)
    if task.family == "oolong":
        return score_oolong(task.gold, text, task.metadata.get("question_type"))
    if task.family == "oolong-pairs":
        return score_pairs(task.gold, text)
    raise ValueError(f"unknown task family {task.family!r}")
