"""OOLONG-Pairs: list every pair of users whose (unwritten) labels satisfy a predicate.

The RLM paper builds OOLONG-Pairs on OOLONG's ``trec_coarse`` rows: queries such as "list all pairs of
user IDs where both users have at least one instance with a numeric value or location", answered as
lines ``(user_id_1, user_id_2)`` and scored by F1 over the pair set. Work grows with the square of the
users, so it is the paper's hardest family. Rows here are :func:`oolong.make_rows` rows.

Predicate templates (a user's "instances" are its rows; only users with at least one row count):

- ``any_of`` (A, B): both users have at least one instance with label A or label B;
- ``at_least`` (A, k): both users have at least k instances with label A;
- ``exactly`` (A, k): both users have exactly k instances with label A;
- ``none_of`` (A): neither user has any instance with label A;
- ``one_not_other`` (A): one user has at least one instance with label A and the other has none.

Sizes: ``n_users`` (default 20, so at most 190 pairs) share the rows with Zipf weights (``user_skew``
1.0) so users differ in how many rows, and hence which labels, they have. For each task the template
is cycled by index and its parameters are drawn in seeded order until the qualifying users make a
non-trivial answer (some pairs, not all of them, at most ``max_pairs``); if no parameter of that
template qualifies, the next template is tried.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass

from .base import Task, task_rng
from .oolong import Rows, make_rows
from .questions import LABELS

__all__ = ["generate", "make_task", "Predicate", "parse_pairs_query", "gold_pairs", "KINDS"]

FAMILY = "oolong-pairs"
KINDS = ("any_of", "at_least", "exactly", "none_of", "one_not_other")
_AT_LEAST_K = (2, 3, 5, 10, 20, 50)
_EXACTLY_K = (1, 2, 3)
_LABEL_LIST = ", ".join(LABELS)


@dataclass(frozen=True)
class Predicate:
    """One predicate instance: a template kind, its labels and its threshold (if any)."""

    kind: str
    a: str
    b: str = ""
    k: int = 0

    def phrase(self) -> str:
        if self.kind == "any_of":
            return f"both users have at least one instance with the label '{self.a}' or the label '{self.b}'"
        if self.kind == "at_least":
            return f"both users have at least {self.k} instances with the label '{self.a}'"
        if self.kind == "exactly":
            return f"both users have exactly {self.k} instances with the label '{self.a}'"
        if self.kind == "none_of":
            return f"neither user has any instance with the label '{self.a}'"
        if self.kind == "one_not_other":
            return (f"one user has at least one instance with the label '{self.a}' and the other user "
                    "has none")
        raise ValueError(f"unknown predicate kind {self.kind!r}")

    def user_ok(self, c: Counter[str]) -> bool:
        """For the symmetric kinds: does one user's label count satisfy its half of the predicate?"""
        if self.kind == "any_of":
            return c[self.a] + c[self.b] >= 1
        if self.kind == "at_least":
            return c[self.a] >= self.k
        if self.kind == "exactly":
            return c[self.a] == self.k
        if self.kind == "none_of":
            return c[self.a] == 0
        raise ValueError(f"{self.kind!r} is not a per-user predicate")

    def pair_ok(self, cu: Counter[str], cv: Counter[str]) -> bool:
        if self.kind == "one_not_other":
            return (cu[self.a] >= 1) != (cv[self.a] >= 1)
        return self.user_ok(cu) and self.user_ok(cv)


def query_for(p: Predicate) -> str:
    return (
        "In the context data, list all pairs of user IDs (no duplicate pairs, lower ID first) where "
        f"{p.phrase()}. Each question has exactly one of the labels {_LABEL_LIST}; the labels are not "
        "given in the data, so infer each one from the meaning of the question. In your answer, list "
        "all pairs in the format (user_id_1, user_id_2), one pair per line."
    )


_L = r"'([^']+)'"
_PARSERS = (
    (re.compile(rf"both users have at least one instance with the label {_L} or the label {_L}"),
     "any_of"),
    (re.compile(rf"both users have at least (\d+) instances with the label {_L}"), "at_least"),
    (re.compile(rf"both users have exactly (\d+) instances with the label {_L}"), "exactly"),
    (re.compile(rf"neither user has any instance with the label {_L}"), "none_of"),
    (re.compile(rf"one user has at least one instance with the label {_L} and the other user has none"),
     "one_not_other"),
)


def parse_pairs_query(query: str) -> Predicate | None:
    """The predicate of an OOLONG-Pairs query in our phrasing, else None (used by the scripted root)."""
    if "list all pairs of user IDs" not in query:
        return None
    for rx, kind in _PARSERS:
        m = rx.search(query)
        if not m:
            continue
        if kind == "any_of":
            return Predicate(kind, m.group(1), m.group(2))
        if kind in ("at_least", "exactly"):
            return Predicate(kind, m.group(2), k=int(m.group(1)))
        return Predicate(kind, m.group(1))
    return None


def user_counts(rows: Rows) -> dict[int, Counter[str]]:
    """Label counts per user, for every user with at least one row."""
    out: dict[int, Counter[str]] = {}
    for u, lab in zip(rows.users, rows.labels, strict=True):
        out.setdefault(u, Counter())[lab] += 1
    return out


def gold_pairs(per_user: dict[int, Counter[str]], p: Predicate) -> list[list[int]]:
    """Every qualifying pair ``[low, high]``, sorted."""
    users = sorted(per_user)
    return [[u, v] for u, v in itertools.combinations(users, 2) if p.pair_ok(per_user[u], per_user[v])]


def _candidates(kind: str, rng_order: list[str]) -> list[Predicate]:
    if kind == "any_of":
        return [Predicate(kind, a, b) for a, b in itertools.combinations(rng_order, 2)]
    if kind == "at_least":
        return [Predicate(kind, a, k=k) for a in rng_order for k in _AT_LEAST_K]
    if kind == "exactly":
        return [Predicate(kind, a, k=k) for a in rng_order for k in _EXACTLY_K]
    return [Predicate(kind, a) for a in rng_order]


def make_task(seed: int, index: int, length_tokens: int, *, n_users: int = 20,
              user_skew: float = 1.0, max_pairs: int = 150, kind: str | None = None) -> Task:
    """One OOLONG-Pairs instance (template cycled by ``index`` unless ``kind`` is given)."""
    rng = task_rng(FAMILY, seed, index)
    rows = make_rows(rng, length_tokens, n_users=n_users, user_skew=user_skew)
    per_user = user_counts(rows)
    n_present = len(per_user)
    first = KINDS.index(kind) if kind else index % len(KINDS)
    chosen: tuple[Predicate, list[list[int]]] | None = None
    for kd in KINDS[first:] + KINDS[:first]:
        cands = _candidates(kd, rng.sample(list(LABELS), len(LABELS)))
        rng.shuffle(cands)
        for p in cands:
            pairs = gold_pairs(per_user, p)
            total = n_present * (n_present - 1) // 2
            if 0 < len(pairs) <= max_pairs and len(pairs) < total:
                chosen = (p, pairs)
                break
        if chosen or kind:
            break
    if chosen is None:  # tiny contexts: accept whatever the first template gives
        p = _candidates(KINDS[first], list(LABELS))[0]
        chosen = (p, gold_pairs(per_user, p))
    pred, pairs = chosen
    return Task(
        task_id=f"oolong_pairs-s{seed}-{index:04d}",
        family=FAMILY,
        query=query_for(pred),
        context=rows.context(),
        gold=pairs,
        metadata={"length_tokens": length_tokens, "predicate": pred.kind, "n_rows": len(rows.lines)},
        answer_key={
            "predicate": {"kind": pred.kind, "a": pred.a, "b": pred.b, "k": pred.k},
            "row_labels": rows.labels,
            "user_label_counts": {str(u): dict(c) for u, c in sorted(per_user.items())},
        },
    )


def generate(seed: int, n: int, length_tokens: int, **opts: object) -> list[Task]:
    """``n`` OOLONG-Pairs tasks; opts: ``n_users``, ``user_skew``, ``max_pairs``, ``kind``."""
    return [make_task(seed, i, length_tokens, **opts) for i in range(n)]  # type: ignore[arg-type]
