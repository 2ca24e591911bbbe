"""Seeded, offline versions of the RLM paper's benchmark families, with their published scoring.

``GENERATORS[family](seed, n, length_tokens, **opts) -> list[Task]`` is deterministic per seed
(same seed, byte-identical contexts), downloads nothing and writes nothing; :func:`write_task` puts a
task on disk as context + public JSON + hidden answer key, :func:`score` scores an answer.

Families: ``sniah`` (RULER niah_single), ``oolong`` (trec_coarse-shaped counting), ``oolong-pairs``.
Lengths are in approximate tokens, counted as characters / 4 (:data:`CHARS_PER_TOKEN`).
"""

from __future__ import annotations

from collections.abc import Callable

from ..tasks import oolong, oolong_pairs, sniah
from ..tasks.base import CHARS_PER_TOKEN, Task, approx_tokens, load_task, write_task
from .scoring import score, score_oolong, score_pairs, score_sniah

__all__ = [
    "GENERATORS",
    "FAMILIES",
    "generate",
    "Task",
    "write_task",
    "load_task",
    "score",
    "score_sniah",
    "score_oolong",
    "score_pairs",
    "approx_tokens",
    "CHARS_PER_TOKEN",
]

GENERATORS: dict[str, Callable[..., list[Task]]] = {
    "sniah": sniah.generate,
    "oolong": oolong.generate,
    "oolong-pairs": oolong_pairs.generate,
}
FAMILIES = tuple(GENERATORS)


def generate(family: str, seed: int, n: int, length_tokens: int, **opts: object) -> list[Task]:
    """Generate ``n`` tasks of ``family`` (accepts ``oolong_pairs`` for ``oolong-pairs`` too)."""
    key = family.replace("_", "-")
    if key not in GENERATORS:
        raise ValueError(f"unknown task family {family!r}; choose one of {', '.join(FAMILIES)}")
    return GENERATORS[key](seed, n, length_tokens, **opts)
