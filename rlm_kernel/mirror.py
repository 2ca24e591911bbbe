"""A front-end's copy of a notebook, kept up to date by ``rlm.cells`` messages.

The headless runner and the tests use it; ``widgets/src/mirror.ts`` does the same to a JupyterLab
notebook model. Applying a message twice is harmless (``sync`` after a reconnect relies on that).
"""

from __future__ import annotations

import copy
from typing import Any

import nbformat

from . import cells

__all__ = ["NotebookMirror"]


class NotebookMirror:
    def __init__(self, initial: list[dict[str, Any]] | None = None) -> None:
        self.cells: list[dict[str, Any]] = [copy.deepcopy(c) for c in initial or []]
        self.finished: dict[str, dict[str, Any]] = {}
        self.status: dict[str, dict[str, Any]] = {}
        self.applied = 0

    def index(self, cell_id: str | None) -> int:
        if cell_id is None:
            return -1
        for i, cell in enumerate(self.cells):
            if cell.get("id") == cell_id:
                return i
        return -1

    def cell(self, cell_id: str) -> dict[str, Any] | None:
        i = self.index(cell_id)
        return self.cells[i] if i >= 0 else None

    def apply(self, data: dict[str, Any]) -> str:
        """Apply one message; returns its type."""
        data = cells.check(data)
        kind = data["type"]
        self.applied += 1
        if kind == "insert":
            self._insert(data["cell"], data.get("after"), data.get("anchor"))
        elif kind == "update":
            self._update(data["id"], data.get("patch", {}), data.get("run"))
        elif kind == "status":
            self.status[data["run"]] = data["status"]
        elif kind == "finish":
            self.finished[data["run"]] = data
        elif kind == "sync":
            for run in data["runs"]:
                after = run.get("anchor")
                for cell in run["cells"]:
                    self._insert(cell, after, run.get("anchor"))
                    after = cell["id"]
        return kind

    def _insert(self, cell: dict[str, Any], after: str | None, anchor: str | None) -> None:
        existing = self.index(cell["id"])
        if existing >= 0:  # idempotent: a re-sent insert updates in place
            self.cells[existing] = copy.deepcopy(cell)
            return
        pos = self.index(after)
        if pos < 0:
            pos = self.index(anchor)
        self.cells.insert(pos + 1 if pos >= 0 else len(self.cells), copy.deepcopy(cell))

    def _update(self, cell_id: str, patch: dict[str, Any], run: str | None) -> None:
        cell = self.cell(cell_id)
        if cell is None:
            if patch.get("kind") != "query":
                return
            # A client that sent no cell id learns its query cell from this first update.
            cell = nbformat.v4.new_code_cell(patch.get("source", ""))
            cell["id"] = cell_id
            self.cells.append(cell)
        for key in ("source", "outputs", "execution_count"):
            if key in patch:
                cell[key] = copy.deepcopy(patch[key])
        if "metadata" in patch:
            cell.setdefault("metadata", {}).update(copy.deepcopy(patch["metadata"]))

    def notebook(self) -> nbformat.NotebookNode:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "rlm", "display_name": "RLM (Python 3)",
                                     "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nb.cells = [nbformat.from_dict(c) for c in self.cells]
        nbformat.validate(nb)
        return nb
