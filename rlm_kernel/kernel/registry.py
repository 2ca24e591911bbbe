"""The kernel's authoritative trajectory: every run of this session, and where each one lives.

A run's record (:class:`~rlm_kernel.trajectory.Run`) says what happened; its :class:`RunPlace` says
where its cells go (the query cell's id in the front-end), what drove it (the query cell's source,
its settings, its context) and what views follow it. The registry answers questions about them
(which run, which step a cell is, the status of a run tree, the whole state for a ``sync``) and
changes nothing but its own maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import cells
from ..config import RLMConfig
from ..errors import RLMError
from ..notebook import MARKER_RE, run_cells
from ..repl import Repl
from ..states import RunState
from ..trajectory import Run, Step

__all__ = ["RunPlace", "RunRegistry"]


@dataclass
class RunPlace:
    """Where a root run's cells live and what drives it."""

    anchor: str | None  # the query cell's id as the front-end knows it (None: it sent none)
    query_id: str  # the query cell's id in the trajectory (= anchor, or "<run>-q")
    source: str  # the query cell as the human wrote it
    config: RLMConfig
    context: Any = None
    repl: Repl | None = None  # the REPL of its latest drive (a human's step re-run uses it)
    views: list[Any] = field(default_factory=list)  # observers of its latest drive
    # Cells of the run that its record no longer produces (a final answer an edit made stale):
    # a continued run's new cells go after them.
    extra_cells: list[str] = field(default_factory=list)
    # A branch's inherited steps as recorded (its parent's, or its own in a file): the drive
    # re-executes those it does not hold yet before going live.
    inherited: list[Step] = field(default_factory=list)
    #: The REPLs of its sub-RLMs (run id -> REPL, their own namespaces): a human's re-run of a
    #: sub-RLM's step cell runs there, not in the kernel's namespace.
    child_repls: dict[str, Repl] = field(default_factory=dict)


class RunRegistry:
    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}  # every run of the session, rlm() children included
        self.roots: list[str] = []  # root runs, oldest first
        self.places: dict[str, RunPlace] = {}  # root run id -> its place
        self.context_sources: dict[str, str] = {}  # variable -> the file %rlm load read it from
        self.recorded_anchors: dict[str, str] = {}  # run id -> its query cell id in a loaded file
        self.active: str | None = None  # the root run being driven now

    def add_root(self, run: Run, place: RunPlace) -> None:
        self.runs[run.run_id] = run
        if run.run_id not in self.places:
            self.roots.append(run.run_id)
        self.places[run.run_id] = place

    def find(self, run_id: str | None) -> Run:
        """The named root run, or the latest one; a clear error when there is none."""
        if run_id:
            if run_id not in self.runs:
                known = ", ".join(self.roots) or "none"
                raise RLMError(f"no run {run_id!r} in this kernel; known: {known}")
            return self.runs[run_id]
        if not self.roots:
            raise RLMError("no run to continue: start one with a %%rlm cell (or %rlm replay/resume)")
        return self.runs[self.roots[-1]]

    def root_of(self, run: Run) -> Run:
        seen = 0
        while run.parent and run.parent in self.runs and seen < 100:
            run, seen = self.runs[run.parent], seen + 1
        return run

    def place_of(self, run: Run) -> RunPlace | None:
        return self.places.get(self.root_of(run).run_id)

    def step_of(self, code: str) -> tuple[Run, Step] | None:
        """The run and step a cell's marker line names, if this kernel holds them."""
        m = MARKER_RE.match(code.lstrip())
        if not m or m.group("flag"):
            return None
        run = self.runs.get(m.group("run"))
        step = run.step(int(m.group("step"))) if run is not None else None
        return (run, step) if run is not None and step is not None else None

    def paused(self) -> list[Run]:
        return [self.runs[r] for r in self.roots if self.runs[r].status == RunState.PAUSED]

    # -- what front-ends are told ---------------------------------------------------------------
    def status_msg(self, run_id: str) -> dict[str, Any]:
        place = self.places.get(run_id)
        return cells.status_msg(run_id, cells.run_status(self.runs[run_id], self.runs),
                                place.anchor if place else None)

    def sync_runs(self) -> list[dict[str, Any]]:
        """Every root run's cells and state: the body of a ``sync``."""
        out = []
        for rid in self.roots:
            run, place = self.runs[rid], self.places[rid]
            out.append({
                "run": rid, "anchor": place.anchor,
                "cells": run_cells(run, self.runs, place.source, place.query_id)[1:],
                "status": cells.run_status(run, self.runs),
                "finished": None if rid == self.active else cells.finish_msg(
                    rid, run.status, run.answer, run.stop_reason, place.anchor,
                    best_effort=run.best_effort),
            })
        return out
