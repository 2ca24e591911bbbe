"""OOLONG (``trec_coarse``-shaped): counting questions over rows whose labels are never written down.

Context: one header line, then one row per line::

    Date: Mar 04, 1998 || User: 48213 || Instance: Who was the first harbour master of Saltmere?

The header says there are six labels (abbreviation, entity, description and abstract concept, human
being, location, numeric value) and that every question has exactly one; the rows never carry a
label, and no question contains a label's name (:mod:`questions`), so the label of each row has to be
inferred from its meaning: a model must read every row, which is what makes OOLONG hard and what an
RLM does with sub-calls over chunks.

Label skew (our documented recipe; OOLONG skews the label distribution of each context window, and we
do not copy its code): the six labels are put in a seeded random order and given geometric weights
``alpha**rank`` with ``alpha`` drawn uniformly from [0.5, 0.8]: each label has ``alpha`` times the
rows of the one before it, the most common gets 27-51% of the rows and the rarest 2-9%. Counts are allocated exactly
(largest remainder), every label gets at least one row, and the most and least common labels are
made unique, so "most/least common" always has one right answer. Rows are then shuffled.

Question types (cycled over the ``n`` tasks of a call, so any four consecutive tasks cover all):
``most_common``, ``least_common``, ``compare`` (A is more common than / less common than / same
frequency as B) and ``count`` (how many rows have label A). Phrasings follow OOLONG's answer forms
("Label: answer", "Answer: A is [X] B", "Answer: number"); scoring is in :mod:`scoring`.
"""

from __future__ import annotations

import datetime as _dt
import random
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from .base import CHARS_PER_TOKEN, Task, task_rng
from .questions import LABELS, bank

__all__ = [
    "generate",
    "make_task",
    "Rows",
    "make_rows",
    "header_line",
    "parse_query",
    "QUESTION_TYPES",
    "COMPARISON_PHRASES",
    "ROW_PREFIX",
]

FAMILY = "oolong"
QUESTION_TYPES = ("most_common", "least_common", "compare", "count")
COMPARISON_PHRASES = ("more common than", "less common than", "same frequency as")
ROW_PREFIX = "Date: "
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAY0 = _dt.date(1995, 1, 1).toordinal()
_DAY1 = _dt.date(2024, 12, 31).toordinal()
_LABEL_LIST = ", ".join(LABELS)


def header_line(n_rows: int) -> str:
    """The context's first line: what the rows are and that six (unwritten) labels exist."""
    return (
        f"The following lines contain {n_rows} general-knowledge questions, one per line. Each line has "
        "a date, a user ID and a question (the Instance). Each question belongs to exactly one of six "
        f"labels: {_LABEL_LIST}. The labels are not given in the data; a question's label follows "
        "from its meaning."
    )


@dataclass
class Rows:
    """Generated rows and their hidden truth (labels, users, dates), index-aligned."""

    lines: list[str]
    labels: list[str]
    users: list[int]
    dates: list[str]
    label_order: list[str]  # labels by weight, heaviest first
    alpha: float

    def context(self) -> str:
        return header_line(len(self.lines)) + "\n" + "\n".join(self.lines)

    def counts(self) -> dict[str, int]:
        c = Counter(self.labels)
        return {label: c.get(label, 0) for label in LABELS}


@lru_cache(maxsize=1)
def _mean_question_len() -> dict[str, float]:
    return {label: sum(map(len, qs)) / len(qs) for label, qs in bank().items()}


def _allocate(n: int, weights: list[float]) -> list[int]:
    """Largest-remainder allocation of ``n`` rows to labels in weight order (heaviest first).

    Every label gets at least one row, and the first and last label are made the unique maximum and
    minimum (by moving single rows, so the total stays ``n``) whenever ``n`` is big enough to allow it.
    """
    total = sum(weights)
    raw = [n * w / total for w in weights]
    counts = [int(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    k = len(counts)
    for i in range(k):
        if counts[i] == 0 and counts[0] > 1:
            counts[i], counts[0] = 1, counts[0] - 1
    for _ in range(4 * k):
        top = max(range(1, k), key=lambda i: counts[i])
        if counts[0] <= counts[top] and counts[top] > 1:
            counts[top] -= 1
            counts[0] += 1
            continue
        low = min(range(k - 1), key=lambda i: counts[i])
        if counts[-1] >= counts[low]:
            if counts[-1] > 1:
                counts[-1] -= 1
                counts[0] += 1
                continue
            if counts[0] > counts[low] + 2:
                counts[low] += 1
                counts[0] -= 1
                continue
        break
    return counts


def _date_text(ordinal: int) -> str:
    d = _dt.date.fromordinal(ordinal)
    return f"{_MONTHS[d.month - 1]} {d.day:02d}, {d.year}"  # not strftime: %b depends on the locale


def _pick_questions(rng: random.Random, label: str, k: int) -> list[str]:
    """``k`` questions of one label: distinct while the bank lasts, then reshuffled repeats."""
    qs = bank()[label]
    out: list[str] = []
    while len(out) < k:
        take = min(k - len(out), len(qs))
        out.extend(qs[i] for i in rng.sample(range(len(qs)), take))
    return out


def make_rows(
    rng: random.Random, length_tokens: int, *, n_users: int | None = None,
    user_skew: float = 0.0,
) -> Rows:
    """Rows for a context of about ``length_tokens`` (chars / 4), header included.

    ``n_users`` ids (5-digit, distinct) share the rows with weights ``1 / (rank + 1) ** user_skew``
    (0 = uniform); default: about one user per 20 rows. Users are drawn independently of labels.
    """
    order = rng.sample(list(LABELS), len(LABELS))
    alpha = rng.uniform(0.5, 0.8)
    weights = [alpha**r for r in range(len(order))]
    target = length_tokens * CHARS_PER_TOKEN
    mean_q = _mean_question_len()
    # "Date: Mon DD, YYYY || User: NNNNN || Instance: " is 47 chars, plus the newline.
    mean_row = 48 + sum(w * mean_q[lab] for w, lab in zip(weights, order, strict=True)) / sum(weights)
    head = len(header_line(10**4))
    n = max(len(LABELS), round((target - head) / mean_row))
    counts = _allocate(n, weights)
    labels = [lab for lab, c in zip(order, counts, strict=True) for _ in range(c)]
    rng.shuffle(labels)
    by_label = {lab: iter(_pick_questions(rng, lab, c)) for lab, c in zip(order, counts, strict=True)}
    questions = [next(by_label[lab]) for lab in labels]
    users_n = n_users if n_users is not None else max(8, n // 20)
    pool = rng.sample(range(10_000, 100_000), users_n)
    uw = [1.0 / (r + 1) ** user_skew for r in range(users_n)]
    users = rng.choices(pool, weights=uw, k=n)
    dates = [_date_text(rng.randint(_DAY0, _DAY1)) for _ in range(n)]
    lines = [
        f"Date: {d} || User: {u} || Instance: {q}"
        for d, u, q in zip(dates, users, questions, strict=True)
    ]
    return Rows(lines=lines, labels=labels, users=users, dates=dates, label_order=order, alpha=alpha)


def _query(qtype: str, a: str = "", b: str = "") -> str:
    if qtype in ("most_common", "least_common"):
        which = "most" if qtype == "most_common" else "least"
        return (
            f"In the context data, which of the labels is the {which} common? Give your final answer in "
            f"the form 'Label: answer' where answer is one of the labels: {_LABEL_LIST}."
        )
    if qtype == "compare":
        return (
            f"In the context data, is label '{a}' more common, less common, or the same frequency as "
            f"label '{b}'? Give your final answer in the form 'Answer: {a} is [X] {b}' where [X] is "
            "'more common than', 'less common than', or 'same frequency as'."
        )
    if qtype == "count":
        return (
            f"In the context data, how many data points should be classified as label '{a}'? Give your "
            "final answer in the form 'Answer: number'."
        )
    raise ValueError(f"unknown question type {qtype!r}")


_PARSERS = (
    (re.compile(r"which of the labels is the (most|least) common\?"), None),
    (re.compile(r"is label '([^']+)' more common, less common, or the same frequency as label '([^']+)'\?"),
     "compare"),
    (re.compile(r"how many data points should be classified as label '([^']+)'\?"), "count"),
)


def parse_query(query: str) -> tuple[str, str, str] | None:
    """``(question_type, label_a, label_b)`` for an OOLONG query in our phrasing, else None.

    Used by the scripted root policy to understand the question, as a model would read it.
    """
    for rx, kind in _PARSERS:
        m = rx.search(query)
        if not m:
            continue
        if kind is None:
            return (f"{m.group(1)}_common", "", "")
        if kind == "compare":
            return ("compare", m.group(1), m.group(2))
        return ("count", m.group(1), "")
    return None


def answer_for(qtype: str, counts: dict[str, int], a: str = "", b: str = "") -> str | int:
    """The gold answer for a question type given the label counts."""
    if qtype == "most_common":
        return max(LABELS, key=lambda lab: counts[lab])
    if qtype == "least_common":
        return min(LABELS, key=lambda lab: counts[lab])
    if qtype == "compare":
        ca, cb = counts[a], counts[b]
        return COMPARISON_PHRASES[0] if ca > cb else COMPARISON_PHRASES[1] if ca < cb else COMPARISON_PHRASES[2]
    if qtype == "count":
        return counts[a]
    raise ValueError(f"unknown question type {qtype!r}")


def make_task(seed: int, index: int, length_tokens: int, *, question_type: str | None = None,
              n_users: int | None = None) -> Task:
    """One OOLONG instance: its own context and one question (type cycled by ``index`` by default)."""
    rng = task_rng(FAMILY, seed, index)
    rows = make_rows(rng, length_tokens, n_users=n_users)
    qtype = question_type or QUESTION_TYPES[index % len(QUESTION_TYPES)]
    a, b = ("", "")
    if qtype == "compare":
        a, b = rng.sample(list(LABELS), 2)
    elif qtype == "count":
        a = rng.choice(LABELS)
    counts = rows.counts()
    gold = answer_for(qtype, counts, a, b)
    return Task(
        task_id=f"{FAMILY}-s{seed}-{index:04d}",
        family=FAMILY,
        query=_query(qtype, a, b),
        context=rows.context(),
        gold=gold,
        metadata={"length_tokens": length_tokens, "question_type": qtype, "n_rows": len(rows.lines)},
        answer_key={
            "question_type": qtype, "label_a": a, "label_b": b, "counts": counts,
            "row_labels": rows.labels, "label_order": rows.label_order, "alpha": round(rows.alpha, 4),
        },
    )


def generate(seed: int, n: int, length_tokens: int, **opts: object) -> list[Task]:
    """``n`` OOLONG tasks; opts: ``question_type`` (fix one of :data:`QUESTION_TYPES`), ``n_users``."""
    return [make_task(seed, i, length_tokens, **opts) for i in range(n)]  # type: ignore[arg-type]
