"""Every notebook in ``example_notebooks/`` executes headless under nbclient on the ``rlm`` kernel,
with no API key (the scripted model), and gets the expected answers; and a trajectory notebook
renders to readable HTML with nbconvert.

Why here and not only in the notebooks' own ``assert`` cells: a notebook that stops asserting (or a
kernel that swallows the error) would pass silently; these checks read the saved outputs, the same
thing a reader of the executed notebook sees.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from rlm_kernel.tasks.sniah import make_task

EXAMPLES = Path(__file__).resolve().parents[2] / "example_notebooks"
NOTEBOOKS = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))
BUDGET_S = 60  # each notebook should take ~5-20 s; fail loudly well before the global timeout

# Model and endpoint variables are removed so that the scripted model answers, as in CI.
_ENDPOINT_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RLM_MODEL", "RLM_SUB_MODEL")


def _text(cell: Any) -> str:
    """What a reader sees of a cell's outputs, as plain text."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("display_data", "execute_result"):
            parts.append(str(out.get("data", {}).get("text/plain", "")))
        elif out["output_type"] == "error":
            parts.append(f"{out['ename']}: {out['evalue']}")
    return "\n".join(parts)


def _cell(nb: Any, starts: str) -> Any:
    found = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(starts)]
    assert found, f"no code cell starting with {starts!r}"
    return found[0]


@pytest.fixture(scope="module")
def run_example(tmp_path_factory: pytest.TempPathFactory,
                ) -> Callable[[str], tuple[Any, Path, float]]:
    """Execute a notebook (once per module) in a temp copy of the folder; (nb, folder, seconds)."""
    folder = tmp_path_factory.mktemp("examples")
    for name in NOTEBOOKS:
        shutil.copy(EXAMPLES / name, folder / name)
    done: dict[str, tuple[Any, Path, float]] = {}

    def run(name: str) -> tuple[Any, Path, float]:
        if name not in done:
            nb = nbformat.read(folder / name, as_version=4)
            saved = {k: os.environ.pop(k) for k in _ENDPOINT_VARS if k in os.environ}
            started = time.monotonic()
            try:
                NotebookClient(nb, kernel_name="rlm", timeout=120,
                               resources={"metadata": {"path": str(folder)}}).execute()
            finally:
                os.environ.update(saved)
            done[name] = (nb, folder, time.monotonic() - started)
            nbformat.write(nb, folder / f"executed-{name}")
        return done[name]

    return run


def test_examples_are_committed_clean() -> None:
    """Outputs cleared, the rlm kernel named, a markdown introduction that says how to use a real
    endpoint (OpenAI, vLLM, Ollama)."""
    assert len(NOTEBOOKS) >= 4, NOTEBOOKS
    for name in NOTEBOOKS:
        nb = nbformat.read(EXAMPLES / name, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "rlm", name
        assert all(not c.get("outputs") and c.get("execution_count") is None
                   for c in nb.cells if c.cell_type == "code"), f"{name}: outputs not cleared"
        intro = nb.cells[0]
        assert intro.cell_type == "markdown", name
        for needle in ("OPENAI_API_KEY", "localhost:8000/v1", "localhost:11434/v1", "--model"):
            assert needle in intro.source, f"{name}: intro does not mention {needle}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_example_executes_without_errors(run_example: Any, name: str) -> None:
    nb, _, seconds = run_example(name)
    errors = [(c.source[:60], o.get("ename"), o.get("evalue")) for c in nb.cells
              if c.cell_type == "code" for o in c.outputs if o["output_type"] == "error"]
    assert not errors, errors
    text = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    assert "Traceback" not in text and "ERROR!" not in text, text[-3000:]
    assert seconds < BUDGET_S, f"{name} took {seconds:.1f} s"


def test_quickstart_finds_the_needle(run_example: Any) -> None:
    nb, _, _ = run_example("01-quickstart.ipynb")
    gold = make_task(seed=7, index=0, length_tokens=250_000).gold
    query = _text(_cell(nb, "%%rlm"))
    assert f"FINAL: {gold}" in query
    assert "scripted demonstration model" in query  # the banner says it is not an LLM
    assert "1,000,000 characters" in _text(_cell(nb, "from rlm_kernel.tasks.sniah"))
    assert re.search(r"\bfinal\s+step 3/10\b", _text(_cell(nb, "%rlm status")))


def test_aggregation_counts_with_llm_batch(run_example: Any) -> None:
    nb, _, _ = run_example("02-aggregation.ipynb")
    check = _text(_cell(nb, "registry = get_ipython()"))
    m = re.search(r"answer: (\d+) \(expected (\d+)\); (\d+) sub-calls in (\d+) batch", check)
    assert m and m.group(1) == m.group(2), check
    assert int(m.group(3)) > 1 and int(m.group(4)) >= 1
    assert f"FINAL: {m.group(2)}" in _text(_cell(nb, "%%rlm"))
    status = _text(_cell(nb, "%rlm status"))
    assert f"sub-calls {m.group(3)} done, 0 in flight, 0 failed" in status
    shown = _text(_cell(nb, "import nbformat"))
    assert re.search(r"^%%llm --call \S+", shown, re.M) and ">>> response:" in shown


def test_human_in_the_loop_edits_and_continues(run_example: Any) -> None:
    nb, _, _ = run_example("03-human-in-the-loop.ipynb")
    expected = re.search(r"ERROR lines: (\d+)", _text(nb.cells[1])).group(1)  # type: ignore[union-attr]
    assert "[paused] step mode" in _text(_cell(nb, "%%rlm --step"))
    edited = _text(_cell(nb, "kernel = get_ipython()"))
    assert "LEVELS: Counter(" in edited and "reply: ok | step 1 is now done | edited: True" in edited
    assert f"FINAL: {expected}" in _text(_cell(nb, "%rlm continue"))
    end = _text(nb.cells[-1])
    assert "status: final" in end and "(1, 'done', 'edited')" in end


def test_sharing_exports_and_replays_offline(run_example: Any) -> None:
    nb, folder, _ = run_example("04-sharing-and-replay.ipynb")
    gold = make_task(seed=11, index=0, length_tokens=50_000).gold
    assert (folder / "sharing-trajectory.ipynb").exists()
    assert gold in _text(_cell(nb, "import sys")).split()  # the CLI printed the same answer
    assert f"FINAL: {gold}" in _text(_cell(nb, "%rlm replay"))
    assert f"replayed: {gold}" in _text(nb.cells[-1])


class _VisibleText(HTMLParser):
    """The text a browser would show: no <script>, <style> or <head>."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style", "head"):
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head") and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def _html_text(path: Path) -> str:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(path, as_version=4))
    parser = _VisibleText()
    parser.feed(body)
    return " ".join("".join(parser.parts).split())


@pytest.mark.parametrize("example, trajectory", [
    ("02-aggregation.ipynb", "aggregation-trajectory.ipynb"),
    ("04-sharing-and-replay.ipynb", "sharing-trajectory.ipynb"),
])
def test_trajectory_renders_to_readable_html(run_example: Any, example: str,
                                             trajectory: str) -> None:
    """``jupyter nbconvert --to html`` of a trajectory shows the steps' code, the sub-call cells and
    the answer, and none of the ``metadata["rlm"]`` record as visible text."""
    _, folder, _ = run_example(example)
    nb = nbformat.read(folder / trajectory, as_version=4)
    final = next(c for c in nb.cells if c.metadata.get("rlm", {}).get("kind") == "final")
    answer = final.metadata["rlm"]["answer"]
    steps = [c for c in nb.cells if c.metadata.get("rlm", {}).get("kind") == "step"]
    calls = [c for c in nb.cells if c.metadata.get("rlm", {}).get("kind") == "llm"]
    text = _html_text(folder / trajectory)
    assert steps
    for cell in steps:  # each step's marker line and a line of its code
        first, last = cell.source.splitlines()[0], cell.source.splitlines()[-1]
        assert first in text and " ".join(last.split()) in text
    if example.startswith("02"):
        assert calls and all(c.source.splitlines()[0] in text for c in calls)
        assert "Count the lines of the text below" in text
    assert answer and re.fullmatch(r"\d+", answer.strip()), answer
    assert f"Final answer (run {final.metadata['rlm']['run']}): {answer.strip()}" in text
    for noise in ('"rlm":', '"run_id"', "cache_key", "prompt_sha256", '"kind":', "{'"):
        assert noise not in text, f"raw metadata {noise!r} is visible in the HTML"
