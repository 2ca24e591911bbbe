"""One benchmark instance, and how it is laid out on disk.

A :class:`Task` holds everything in memory; :func:`write_task` splits it into three files so a runner
can hand the model only what it may see:

- ``<task_id>.context.txt``: the context, UTF-8, exactly as generated;
- ``<task_id>.task.json``: the public part (id, family, query, context file name and size, metadata
  that reveals nothing about the answer);
- ``<task_id>.answer.json``: the hidden answer key (gold, plus e.g. per-row labels for OOLONG). It sits
  beside the data, as the issue asks, but a runner must never put it in a prompt.

Generators never write to disk themselves (tests and the CLI decide where files go).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Task", "write_task", "load_task", "task_rng", "CHARS_PER_TOKEN", "approx_tokens"]

#: Lengths are given in tokens but measured as characters / 4: a tokenizer-free, deterministic
#: approximation (English prose with common BPE vocabularies runs at roughly 4 characters a token),
#: so a "131K-token" context is 524,288 characters whatever model later reads it.
CHARS_PER_TOKEN = 4


def approx_tokens(text: str) -> int:
    """Tokens as this package counts them: ``len(text) / 4``, rounded down."""
    return len(text) // CHARS_PER_TOKEN


def task_rng(family: str, seed: int, index: int) -> random.Random:
    """A per-task RNG. Seeding from a string is hashed with SHA-512 by :mod:`random`, so it is stable
    across processes and Python versions (unlike ``hash()``), and task i does not depend on n."""
    return random.Random(f"rlm-kernel-evals:{family}:{seed}:{index}")


@dataclass
class Task:
    """One instance: the query the model gets, the context it explores, and the key it never sees."""

    task_id: str
    family: str  # "sniah" | "oolong" | "oolong-pairs"
    query: str
    context: str
    gold: Any  # str for S-NIAH and OOLONG labels/comparisons, int for counts, list of [lo, hi] pairs
    metadata: dict[str, Any] = field(default_factory=dict)  # public: nothing that gives the answer away
    answer_key: dict[str, Any] = field(default_factory=dict)  # hidden: gold and its derivation

    def public(self) -> dict[str, Any]:
        """The JSON a runner may show or log: no gold, no answer key."""
        return {
            "task_id": self.task_id,
            "family": self.family,
            "query": self.query,
            "context_file": f"{self.task_id}.context.txt",
            "context_chars": len(self.context),
            "context_tokens_approx": approx_tokens(self.context),
            "metadata": self.metadata,
        }


def write_task(task: Task, directory: str | Path) -> dict[str, Path]:
    """Write the context, the public task JSON and the hidden answer key; return their paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = {
        "context": d / f"{task.task_id}.context.txt",
        "task": d / f"{task.task_id}.task.json",
        "answer": d / f"{task.task_id}.answer.json",
    }
    # newline="" so the bytes on disk are exactly the generated string on every platform.
    with open(paths["context"], "w", encoding="utf-8", newline="") as fh:
        fh.write(task.context)
    paths["task"].write_text(json.dumps(task.public(), indent=1, sort_keys=True) + "\n", "utf-8")
    key = {"task_id": task.task_id, "family": task.family, "gold": task.gold, **task.answer_key}
    paths["answer"].write_text(json.dumps(key, sort_keys=True) + "\n", "utf-8")
    return paths


def load_task(directory: str | Path, task_id: str) -> Task:
    """Read back what :func:`write_task` wrote (for a runner that generates once, runs many times)."""
    d = Path(directory)
    public = json.loads((d / f"{task_id}.task.json").read_text("utf-8"))
    key = json.loads((d / f"{task_id}.answer.json").read_text("utf-8"))
    with open(d / public["context_file"], encoding="utf-8", newline="") as fh:
        context = fh.read()
    gold = key.pop("gold")
    key.pop("task_id", None)
    key.pop("family", None)
    return Task(
        task_id=task_id, family=public["family"], query=public["query"], context=context,
        gold=gold, metadata=public.get("metadata", {}), answer_key=key,
    )
