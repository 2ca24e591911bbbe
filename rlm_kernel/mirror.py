"""A front-end's copy of a notebook, kept up to date by ``rlm.cells`` messages.

The headless runner and the tests use it; ``widgets/src/mirror.ts`` does the same to a JupyterLab
notebook model. Applying a message twice is harmless (``sync`` after a reconnect relies on that).

Cost per message is O(1) for the common case (a cell found by id, a cell appended after the run's
last cell): cells are indexed by id, and messages decoded from JSON are owned by the mirror, so
nothing is deep-copied. It tracks the protocol's sequence numbers: ``gaps`` counts how often
messages were found missing, so a client knows to ask the kernel for a ``sync``.
"""

from __future__ import annotations

from typing import Any

from . import cells
from .kernelspec import language_info, notebook_kernelspec

__all__ = ["NotebookMirror"]


class NotebookMirror:
    def __init__(self, initial: list[dict[str, Any]] | None = None, *,
                 sandboxed: bool = False) -> None:
        self.cells: list[dict[str, Any]] = [dict(c) for c in initial or []]
        self.kernelspec = notebook_kernelspec(sandboxed)  # the kernel the notebook re-opens on
        self.finished: dict[str, dict[str, Any]] = {}
        self.status: dict[str, dict[str, Any]] = {}
        self.applied = 0
        self.last_seq: int | None = None
        self.gaps = 0  # times a message arrived with messages before it missing
        self._pos: dict[str, int] | None = None  # cell id -> index; None: rebuild on next use
        self._indexed_len = 0  # len(cells) that the index covers

    # -- lookups --------------------------------------------------------------------------------
    def _index(self) -> dict[str, int]:
        if self._pos is None:
            self._pos = {str(c["id"]): i for i, c in enumerate(self.cells) if c.get("id")}
            self._indexed_len = len(self.cells)
        return self._pos

    def index(self, cell_id: str | None) -> int:
        """The cell's position, or -1. The index is checked against the list on every hit (and
        rebuilt on a miss), so a caller that edits ``cells`` directly cannot make it lie."""
        if cell_id is None:
            return -1
        i = self._index().get(cell_id, -1)
        if i < 0 and self._indexed_len == len(self.cells):
            return -1  # a real miss (the common case for a new cell): O(1)
        if 0 <= i < len(self.cells) and self.cells[i].get("id") == cell_id:
            return i
        self._pos = None
        return self._index().get(cell_id, -1)

    def cell(self, cell_id: str) -> dict[str, Any] | None:
        i = self.index(cell_id)
        return self.cells[i] if i >= 0 else None

    def append(self, cell: dict[str, Any], after: str | None = None) -> None:
        """Add a cell of the client's own (e.g. a cell it is about to execute) at the end, or
        after the cell ``after`` when it is there."""
        if after is not None and self.index(after) >= 0:
            self._insert(cell, after, None)
            return
        self.cells.append(cell)
        self._track_append(cell)

    def _track_append(self, cell: dict[str, Any]) -> None:
        if self._pos is not None and self._indexed_len == len(self.cells) - 1:
            if cell.get("id"):
                self._pos[cell["id"]] = len(self.cells) - 1
            self._indexed_len = len(self.cells)
        else:
            self._pos = None

    # -- applying messages ----------------------------------------------------------------------
    def apply(self, data: dict[str, Any]) -> str:
        """Apply one message; returns its type. Out-of-order or repeated ``seq``: see ``gaps``."""
        data = cells.check(data)
        kind = data["type"]
        self.applied += 1
        seq = data.get("seq")
        if isinstance(seq, int):
            if kind == "sync":
                self.last_seq = seq if self.last_seq is None else max(self.last_seq, seq)
            elif self.last_seq is not None and seq <= self.last_seq:
                return kind  # a duplicate
            else:
                if self.last_seq is not None and seq > self.last_seq + 1:
                    self.gaps += 1
                self.last_seq = seq
        self._apply(kind, data)
        return kind

    def _apply(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "batch":
            for inner in data["msgs"]:
                self._apply(inner["type"], inner)
        elif kind == "insert":
            self._insert(data["cell"], data.get("after"), data.get("anchor"))
        elif kind == "update":
            self._update(data["id"], data.get("patch", {}))
        elif kind == "status":
            self.status[data["run"]] = data["status"]
        elif kind == "finish":
            self.finished[data["run"]] = data
        elif kind == "sync":
            for run in data["runs"]:
                self._sync_run(run)

    def _sync_run(self, run: dict[str, Any]) -> None:
        """The run's cells, exactly as the kernel holds them, right after its query cell.

        Authoritative: cells this mirror placed wrongly (an insert whose predecessor was lost
        goes after the query cell) are moved, and the order is the kernel's."""
        ids = {c["id"] for c in run["cells"]}
        rid = run.get("run")
        kept = [c for c in self.cells if c.get("id") not in ids and not (
            rid and (c.get("metadata") or {}).get("rlm", {}).get("run") == rid
            and (c.get("metadata") or {}).get("rlm", {}).get("kind") != "query")]
        self.cells = kept
        self._pos = None
        at = self.index(run.get("anchor"))
        at = at + 1 if at >= 0 else len(self.cells)
        self.cells[at:at] = list(run["cells"])
        self._pos = None
        if run.get("status"):
            self.status[run["run"]] = run["status"]
        if run.get("finished"):
            self.finished[run["run"]] = run["finished"]

    def _insert(self, cell: dict[str, Any], after: str | None, anchor: str | None) -> None:
        existing = self.index(cell["id"])
        if existing >= 0:  # idempotent: a re-sent insert updates in place
            self.cells[existing] = cell
            return
        pos = self.index(after)
        if pos < 0:
            pos = self.index(anchor)
        at = pos + 1 if pos >= 0 else len(self.cells)
        self.cells.insert(at, cell)
        if at == len(self.cells) - 1:
            self._track_append(cell)
        else:
            self._pos = None  # positions after ``at`` moved: re-index when next needed

    def _update(self, cell_id: str, patch: dict[str, Any]) -> None:
        cell = self.cell(cell_id)
        if cell is None:
            if patch.get("kind") != "query":
                return
            # A client that sent no cell id learns its query cell from this first update.
            cell = {"id": cell_id, "cell_type": "code", "source": patch.get("source", ""),
                    "metadata": {}, "outputs": [], "execution_count": None}
            self.append(cell)
        for key in ("source", "outputs", "execution_count"):
            if key in patch:
                cell[key] = patch[key]
        if "metadata" in patch:
            cell.setdefault("metadata", {}).update(patch["metadata"])

    # -- the notebook ---------------------------------------------------------------------------
    def document(self) -> dict[str, Any]:
        """The notebook as plain dicts, sharing this mirror's cells (no copy): for writing."""
        return {"nbformat": 4, "nbformat_minor": 5, "cells": self.cells,
                "metadata": {"kernelspec": dict(self.kernelspec),
                             "language_info": language_info()}}

    def notebook(self, validate: bool = True) -> Any:
        """The mirrored cells as an nbformat v4 notebook (validated unless told not to: a large
        notebook written often is validated once, at the end)."""
        import nbformat

        nb = nbformat.from_dict(self.document())  # a copy: later messages leave it alone
        if validate:
            nbformat.validate(nb)
        return nb
