"""Planning a fork: which recorded steps a branch re-executes, with which models, and its label.

A branch of run P at step K starts with P's steps up to K, re-executed from P's record (the root
replies are served from the record, each sub-call from the response cache seeded with P's calls,
so nothing is paid again and the namespace is rebuilt as a resume rebuilds it), then goes on live
with its own settings. The sub-calls of those steps were made with the models P had then, which
for a fork of a fork may be two or more (``ForkOf.models``): the steps are replayed in segments,
one per model pair. Pure functions over Run records; the engine and the kernel do the running.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import RLMError
from .trajectory import ForkOf, Run, Step

__all__ = ["ForkError", "Segment", "fork_point", "inherited_models", "fork_of", "segments",
           "default_label"]


class ForkError(RLMError):
    """A fork that cannot be made as asked (the message says what to do instead)."""


@dataclass
class Segment:
    """Recorded steps to re-execute (as recorded: the engine re-proposes and checks them) with the
    models that made their sub-calls and sub-runs."""

    model: str
    sub_model: str
    steps: list[Step] = field(default_factory=list)


def fork_point(parent: Run, at: int) -> list[Step]:
    """The parent's steps a fork at ``at`` inherits (its live steps numbered up to ``at``), or a
    ForkError that says which steps can be forked from."""
    live = [s for s in sorted(parent.steps, key=lambda s: s.n) if s.status != "stale"]
    numbers = [s.n for s in live]
    usable = f"0 (a fresh start) or a step of {parent.run_id}: {_ranges(numbers)}" if numbers \
        else f"0 ({parent.run_id} has no steps yet)"
    if at < 0 or at > (numbers[-1] if numbers else 0):
        raise ForkError(f"cannot fork {parent.run_id} at step {at}; fork at {usable}")
    if at and at not in numbers:
        raise ForkError(f"step {at} of {parent.run_id} is stale (an edit replaced it); fork at "
                        f"{usable}")
    inherited = [s for s in live if s.n <= at]
    for s in inherited:
        if s.status != "done":
            raise ForkError(f"step {s.n} of {parent.run_id} was proposed but never run; run its "
                            f"cell first, or fork at an earlier step")
        if s.final is not None:
            raise ForkError(f"step {s.n} of {parent.run_id} ended the run (FINAL); fork at an "
                            f"earlier step (at most {s.n - 1}) to take another way from there")
    return inherited


def _ranges(numbers: list[int]) -> str:
    out: list[str] = []
    for n in numbers:
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


def inherited_models(parent: Run, at: int) -> list[dict[str, Any]]:
    """``ForkOf.models`` for a fork of ``parent`` at ``at``: the parent's own list cut at ``at``,
    then the parent's models for the parent's own steps up to ``at``."""
    out: list[dict[str, Any]] = []
    for m in parent.fork_of.models if parent.fork_of is not None else []:
        if int(m["to"]) >= at:
            if at:
                out.append({**m, "to": at})
            return out
        out.append(dict(m))
    if at > (out[-1]["to"] if out else 0):
        out.append({"to": at, "model": parent.model, "sub_model": parent.sub_model})
    return out


def fork_of(parent: Run, at: int) -> ForkOf:
    return ForkOf(run=parent.run_id, at=at, models=inherited_models(parent, at))


def segments(steps: list[Step], fork: ForkOf) -> list[Segment]:
    """Split the recorded steps a branch re-executes (numbered up to ``fork.at``) by the models
    that made them. A record with no model list (written by hand) replays them in one segment
    with the branch's models: the caller passes those in as the last entry's fallback."""
    out: list[Segment] = []
    start = 0
    for m in fork.models:
        chunk = [s for s in steps if start < s.n <= int(m["to"])]
        if chunk:
            out.append(Segment(str(m.get("model", "")), str(m.get("sub_model", "")), chunk))
        start = int(m["to"])
    rest = [s for s in steps if start < s.n <= fork.at]
    if rest:
        out.append(Segment("", "", rest))  # models unknown: the branch's own
    return out


def default_label(parent: Run, at: int, *, model: str, sub_model: str, query: str,
                  taken: set[str]) -> str:
    """A short name that says what the branch changed, e.g. ``scripted-stepwise@4``."""
    changes = []
    if model != parent.model:
        changes.append(model)
    if sub_model != parent.sub_model:
        changes.append(f"sub={sub_model}")
    if query != parent.query:
        changes.append("query")
    base = f"{'+'.join(changes) or 'fork'}@{at}"
    label, k = base, 2
    while label in taken:
        label, k = f"{base}-{k}", k + 1
    return label
