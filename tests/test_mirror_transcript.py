"""The headless client's mirror replays the shared ``rlm.cells`` transcript.

``tests/data/cells_transcript.json`` holds what a front-end received during one run (with a lost
message, duplicates and the answering ``sync``) and the cells every client must end with; the
JupyterLab extension's unit tests (widgets/test/transcript.test.ts) replay the same file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat

from rlm_kernel.mirror import NotebookMirror

TRANSCRIPT = Path(__file__).parent / "data" / "cells_transcript.json"


def _text(value: Any) -> Any:
    return "".join(value) if isinstance(value, list) else value


def _output(out: dict[str, Any]) -> dict[str, Any]:
    """An output with multiline strings joined (clients may split text into lines)."""
    out = dict(out)
    if "text" in out:
        out["text"] = _text(out["text"])
    if "data" in out:
        out["data"] = {k: _text(v) for k, v in out["data"].items()}
    return out


def _view(cell: dict[str, Any]) -> dict[str, Any]:
    """The fields the transcript's expected cells hold."""
    view = {"id": cell["id"], "cell_type": cell["cell_type"], "source": _text(cell["source"]),
            "kind": cell.get("metadata", {}).get("rlm", {}).get("kind")}
    if cell["cell_type"] == "code":
        view["outputs"] = [_output(o) for o in cell.get("outputs", [])]
    return view


def _replay() -> tuple[dict[str, Any], NotebookMirror]:
    transcript = json.loads(TRANSCRIPT.read_text(encoding="utf-8"))
    mirror = NotebookMirror(transcript["initial_cells"])
    for msg in transcript["messages"]:
        mirror.apply(msg)
    return transcript["expected"], mirror


def test_the_python_mirror_ends_with_exactly_the_transcripts_cells() -> None:
    expected, mirror = _replay()
    assert [_view(c) for c in mirror.cells] == [
        {**c, **({"outputs": [_output(o) for o in c["outputs"]]} if "outputs" in c else {})}
        for c in expected["cells"]
    ]
    nbformat.validate(mirror.notebook())


def test_the_python_mirror_counts_each_gap_in_the_sequence() -> None:
    expected, mirror = _replay()
    if "gaps" in expected:
        assert mirror.gaps == expected["gaps"]
    # (Duplicates show in the cells: the transcript re-delivers a batch after the answers it
    # predates, so applying it again would empty them.)


def test_the_python_mirror_records_how_each_run_ended() -> None:
    expected, mirror = _replay()
    for run, want in expected.get("runs", {}).items():
        got = mirror.finished[run]
        assert {k: got.get(k) for k in want} == want
