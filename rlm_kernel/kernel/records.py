"""What a recorded cell holds, wherever the record is: this kernel's runs, or the notebook on disk.

Why: re-executing a saved trajectory (Run All, Restart & Run All, ``nbconvert --execute``) must not
run its steps or call its models again: a recorded cell, unchanged, shows its record. The front-end
has already cleared the cell's outputs when the kernel hears of it, so the kernel must send them
again, byte for byte: from its own records while it holds the run, else from the notebook file
(the one the server names, ``JPY_SESSION_NAME``, else the notebooks of the working directory,
which is where nbclient starts a kernel) that holds the run.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Any

from ..notebook import llm_outputs, runs_from_notebook
from ..outputs import sanitize_outputs
from ..trajectory import Run, Step, SubCall
from . import files
from .registry import RunRegistry

__all__ = ["Records", "RecordedNotebook"]

#: At most this many notebooks of the working directory are searched for a run.
MAX_SCANNED = 200


@dataclass
class RecordedNotebook:
    path: str
    runs: dict[str, Run]
    outputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # cell id -> outputs
    query_cells: dict[str, str] = field(default_factory=dict)  # run id -> query cell id
    signed: bool = False


class Records:
    def __init__(self, registry: RunRegistry) -> None:
        self.registry = registry
        self._cache: dict[str, tuple[float, RecordedNotebook]] = {}

    # -- finding ---------------------------------------------------------------------------------
    def notebook_with(self, run_id: str) -> RecordedNotebook | None:
        """The saved notebook that records ``run_id``, if one is where a kernel can look."""
        candidates: list[str] = []
        session = files.session_notebook()
        if session:
            candidates.append(session)
        here = sorted(glob.glob("*.ipynb"), key=_mtime, reverse=True)[:MAX_SCANNED]
        candidates += [os.path.abspath(p) for p in here]
        for path in dict.fromkeys(candidates):
            book = self._load(path, run_id)
            if book is not None and run_id in book.runs:
                return book
        return None

    def _load(self, path: str, run_id: str) -> RecordedNotebook | None:
        mtime = _mtime(path)
        hit = self._cache.get(path)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            return None
        if run_id not in text:  # most notebooks of a directory are not it: no parse
            return None
        import nbformat

        from .. import trust

        try:
            nb = nbformat.reads(text, as_version=4)
        except Exception:  # noqa: BLE001 - not a notebook we can read: not the record
            return None
        book = RecordedNotebook(path, runs_from_notebook(nb), signed=trust.is_signed(nb))
        for cell in nb.cells:
            meta = cell.get("metadata", {}).get("rlm", {})
            if cell.get("cell_type") == "code" and cell.get("id"):
                book.outputs[cell["id"]] = [dict(o) for o in cell.get("outputs", [])]
            if meta.get("kind") == "query" and meta.get("run") and cell.get("id"):
                book.query_cells.setdefault(meta["run"], cell["id"])
        self._cache[path] = (mtime, book)
        return book

    def run(self, run_id: str) -> tuple[Run | None, RecordedNotebook | None]:
        """The run: this kernel's if it holds it, else a saved notebook's."""
        if run_id in self.registry.runs:
            return self.registry.runs[run_id], None
        book = self.notebook_with(run_id)
        return (book.runs.get(run_id), book) if book is not None else (None, None)

    # -- what a recorded cell shows ------------------------------------------------------------
    def step_outputs(self, run: Run, step: Step, book: RecordedNotebook | None,
                     cell_id: str | None) -> list[dict[str, Any]]:
        if book is not None:
            for cid in (cell_id, f"{run.run_id}-s{step.n}"):
                if cid and cid in book.outputs:
                    return _safe(book.outputs[cid], book)
        return step.outputs

    def call_outputs(self, call: SubCall, book: RecordedNotebook | None) -> list[dict[str, Any]]:
        if book is not None and call.call_id in book.outputs:
            return _safe(book.outputs[call.call_id], book)
        return llm_outputs(call)

    def query_outputs(self, run: Run, book: RecordedNotebook | None,
                      cell_id: str | None) -> list[dict[str, Any]] | None:
        """The query cell's recorded outputs, when a saved notebook has them (this kernel does
        not keep what it displayed in a query cell)."""
        if book is None:
            book = self.notebook_with(run.run_id)
        if book is None:
            return None
        for cid in (cell_id, book.query_cells.get(run.run_id)):
            if cid and cid in book.outputs:
                return _safe(book.outputs[cid], book)
        return None


def _safe(outputs: list[dict[str, Any]], book: RecordedNotebook) -> list[dict[str, Any]]:
    """Outputs of a file someone else wrote are cleaned before this kernel re-sends them: a
    kernel's outputs are trusted by JupyterLab, the file's were not."""
    return outputs if book.signed else sanitize_outputs([dict(o) for o in outputs])


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0
