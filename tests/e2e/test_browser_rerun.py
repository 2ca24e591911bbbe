"""A saved trajectory in real JupyterLab (headless Chromium, the ``rlm`` kernel, the extension)
through what a Jupyter user does to it: Run All, Restart Kernel and Run All Cells, closing and
reopening it, editing the query.

The trajectory is made as a user makes it (``rlm-kernel run ... --output``, or a query run in
the page and saved) against a :class:`ScriptedServer` in this process, whose request counter says
whether a model was asked. Outputs are compared as the notebook model holds them (JSON of each
cell) and as the saved file holds them. Screenshots: ``rlm-rerun-*.png``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from browser import LabServer, browser_page, screenshot, scripted_lab
from support import scripted_env
from test_browser_rlm import (
    NB_JS,
    _cells,
    _kinds,
    _notebook,
    _open,
    _run_cell,
    _save,
    _wait_cell_done,
)

from rlm_kernel.notebook import MARKER_RE, QUERY_MARKER_RE
from rlm_kernel.scripted import ScriptedServer

QUERY = "How many log lines have level ERROR? [chunks=4]"
#: One run of QUERY: three root steps and four sub-calls.
RUN_REQUESTS = 7


@pytest.fixture(scope="module")
def rerun_lab() -> Iterator[tuple[LabServer, ScriptedServer]]:
    with scripted_lab() as lab_srv:
        yield lab_srv


@pytest.fixture
def page(rerun_lab) -> Iterator:
    with browser_page() as pg:
        yield pg


# -------------------------------------------------------------------------------------- helpers

def _cli_trajectory(lab: LabServer, srv: ScriptedServer, name: str, make_log) -> Path:
    """A trajectory saved by ``rlm-kernel run --output``, in the lab's root."""
    ctx = lab.root / "app.log"
    if not ctx.exists():
        ctx.write_text(make_log(400, seed=3).text, encoding="utf-8")
    path = lab.root / name
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RLM_"))}
    env.update(scripted_env(srv.base_url))
    proc = subprocess.run([sys.executable, "-m", "rlm_kernel", "run", "--context", str(ctx),
                           "--query", QUERY, "--output", str(path)],
                          capture_output=True, text=True, env=env, timeout=120, cwd=lab.root)
    assert proc.returncode == 0, proc.stderr
    return path


def _open_saved(pg, lab: LabServer, srv: ScriptedServer, name: str, make_log,
                ) -> tuple[Path, nbformat.NotebookNode, str, list[dict]]:
    """A CLI-made trajectory opened in the page: its path, the saved notebook, its answer and the
    cells as the page holds them (the same records; the document clean)."""
    path = _cli_trajectory(lab, srv, name, make_log)
    saved = nbformat.read(path, as_version=4)
    answer = _query_cell(saved.cells)["metadata"]["rlm"]["header"]["answer"]
    _open(pg, lab, path.name)
    before = _cells(pg)
    assert _recorded(before) == _recorded(saved.cells)
    assert _clean(pg) == {"dirty": False, "edited": []}, "opening it changed the document"
    return path, saved, answer, before


def _recorded(cells: list) -> dict[str, str]:
    """cell id -> outputs (JSON) of the cells a run recorded (query, steps, sub-calls)."""
    return {c["id"]: json.dumps(c.get("outputs", []), sort_keys=True) for c in cells
            if c["cell_type"] == "code" and c.get("metadata", {}).get("rlm")}


def _command(pg, command: str, args: dict | None = None) -> None:
    """Execute a JupyterLab command; ``window.__done`` says when its promise settled."""
    pg.evaluate(
        "([cmd, args]) => { window.__done = null; window.jupyterapp.commands.execute(cmd, args)"
        ".then(r => { window.__done = {ok: r === undefined ? true : r}; },"
        "      e => { window.__done = {error: String(e)}; }); }", [command, args or {}])


def _wait_command(pg, timeout: float = 60_000) -> None:
    pg.wait_for_function("window.__done !== null", timeout=timeout)
    done = pg.evaluate("window.__done")
    assert "error" not in done, done


def _wait_all_ran(pg, timeout: float = 60_000) -> list[int]:
    """Every code cell executed, none still [*]; their execution counts, in order."""
    pg.wait_for_function(
        f"{NB_JS}.content.widgets.filter(w => w.model.type === 'code').every(w => "
        "w.model.executionCount !== null && !w.promptNode.textContent.includes('*'))",
        timeout=timeout)
    return pg.evaluate(f"{NB_JS}.content.widgets.filter(w => w.model.type === 'code')"
                       ".map(w => w.model.executionCount)")


def _query_cell(cells: list[dict]) -> dict:
    return next(c for c in cells if _kinds([c])[0] == "query")


def _text(outputs: list[dict]) -> str:
    return json.dumps(outputs)


def _check_rerun(pg, srv: ScriptedServer, before_cells: list[dict], paid: int, answer: str,
                 ) -> list[dict]:
    """The guarantees of re-executing a recorded trajectory, on the page's notebook model."""
    counts = _wait_all_ran(pg)
    assert counts == sorted(counts) and len(set(counts)) == len(counts), counts  # each one ran
    # A sub-call's record may reach the cell just after its execution ends (see _show in
    # rlm_kernel/kernel/kernel.py): wait until every recorded cell has its outputs again.
    sizes = {c["id"]: len(c.get("outputs", [])) for c in before_cells if c["cell_type"] == "code"}
    pg.wait_for_function(
        f"sizes => {NB_JS}.content.widgets.every(w => w.model.type !== 'code' || "
        "w.model.outputs.length === sizes[w.model.id])", arg=sizes, timeout=15_000)
    after = _cells(pg)
    assert srv.model.stats.requests == paid, "re-executing the trajectory called a model"
    assert [c["id"] for c in after] == [c["id"] for c in before_cells], "cells were added"
    assert _kinds(after).count("query") == 1 and _kinds(after).count("final") == 1
    changed = {k for k, v in _recorded(after).items() if v != _recorded(before_cells)[k]}
    assert not changed, {k: (_recorded(before_cells)[k][:300], _recorded(after)[k][:300])
                         for k in changed}
    query = _query_cell(after)
    assert f"FINAL: {answer}" in _text(query["outputs"]), query["outputs"]
    assert not any(o.get("output_type") == "error" for c in after for o in c.get("outputs", []))
    return after


def _clean(pg) -> dict:
    """The document's unsaved-changes flag and the cells JupyterLab shows as edited since run, once
    the extension has caught up with the kernel (its ``sync`` applied: the mirror applies a
    catch-up on the next animation frames)."""
    pg.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame("
                "() => requestAnimationFrame(r))))")
    return pg.evaluate(
        f"({{dirty: {NB_JS}.context.model.dirty, edited: {NB_JS}.content.widgets"
        ".filter(w => w.model.type === 'code' && (w.model.isDirty || "
        "w.node.classList.contains('jp-mod-dirty'))).map(w => w.model.id)})")


def _wait_opened(pg, name: str) -> None:
    """The panel of ``name`` is current, its kernel idle, the run bar attached to it."""
    pg.wait_for_function(
        f"{NB_JS}?.context?.path === {json.dumps(name)} && {NB_JS}.context.isReady && "
        f"{NB_JS}.sessionContext?.session?.kernel?.status === 'idle'", timeout=60_000)
    pg.wait_for_function(
        f"!!{NB_JS}.node.querySelector('.rlm-toolbar .rlm-control-run:not([disabled])')",
        timeout=15_000)


def _close(pg) -> None:
    pg.evaluate(f"{NB_JS}.close()")  # clean: no "save changes?" dialog
    pg.wait_for_function("!window.jupyterapp.shell.currentWidget?.context", timeout=10_000)


def _run_query_in_page(pg, lab: LabServer, name: str, make_log) -> None:
    """A notebook with a load cell and a query cell, run in the page as a user does, then saved."""
    ctx = lab.root / "app.log"
    if not ctx.exists():
        ctx.write_text(make_log(400, seed=3).text, encoding="utf-8")
    _notebook(lab.root / name, [f"%rlm load {ctx}", f"%%rlm\n{QUERY}"])
    _open(pg, lab, name)
    _run_cell(pg, 0)
    _wait_cell_done(pg, 0)
    _run_cell(pg, 1)
    _wait_final(pg, 1)
    _wait_cell_done(pg, 1)
    _save(pg)


def _wait_final(pg, n: int) -> None:
    pg.wait_for_function(
        f"{NB_JS}.content.model.toJSON().cells.filter(c => c.metadata?.rlm?.kind === 'final')"
        f".length === {n}", timeout=60_000)
    pg.wait_for_function(f"{NB_JS}.node.querySelector('.rlm-status')?.dataset.state === 'final'",
                         timeout=15_000)


def _live(cells: list[dict]) -> list[str]:
    """Run ids with a final cell that no later run superseded."""
    return [c["metadata"]["rlm"]["run"] for c in cells
            if _kinds([c])[0] == "final" and not c["metadata"]["rlm"].get("superseded_by")]


# ---------------------------------------------------------------------------------------- tests

def test_run_all_on_a_saved_trajectory_calls_no_model_and_changes_no_output(
        rerun_lab, page, make_log) -> None:
    started = time.monotonic()
    lab, srv = rerun_lab
    pg = page
    path, saved, answer, before = _open_saved(pg, lab, srv, "runall.ipynb", make_log)
    paid = srv.model.stats.requests

    _command(pg, "notebook:run-all-cells")
    _wait_command(pg)
    _check_rerun(pg, srv, before, paid, answer)
    pg.locator(".jp-Notebook .jp-Cell").nth(1).scroll_into_view_if_needed()
    screenshot(pg, "rlm-rerun-run-all")
    _save(pg)
    assert _recorded(nbformat.read(path, as_version=4).cells) == _recorded(saved.cells)
    assert not pg.errors, pg.errors  # type: ignore[attr-defined]
    print(f"\nrun all: {time.monotonic() - started:.1f} s")


def test_restart_and_run_all_on_a_saved_trajectory_calls_no_model_and_changes_no_output(
        rerun_lab, page, make_log) -> None:
    started = time.monotonic()
    lab, srv = rerun_lab
    pg = page
    path, saved, answer, before = _open_saved(pg, lab, srv, "restart.ipynb", make_log)
    paid = srv.model.stats.requests
    kernel = pg.evaluate(f"{NB_JS}.sessionContext.session.kernel.id")

    for _ in range(2):  # twice: the second time over what the first one showed
        _command(pg, "notebook:restart-run-all")
        pg.locator(".jp-Dialog .jp-mod-accept").click(timeout=10_000)
        _wait_command(pg)
        _check_rerun(pg, srv, before, paid, answer)
    assert pg.evaluate(f"{NB_JS}.sessionContext.session.kernel.id") == kernel
    pg.locator(".jp-Notebook .jp-Cell").nth(1).scroll_into_view_if_needed()
    screenshot(pg, "rlm-rerun-restart-run-all")
    _save(pg)
    assert _recorded(nbformat.read(path, as_version=4).cells) == _recorded(saved.cells)
    assert not pg.errors, pg.errors  # type: ignore[attr-defined]
    print(f"\nrestart and run all, twice: {time.monotonic() - started:.1f} s")


def test_reopening_a_saved_trajectory_leaves_it_unchanged(rerun_lab, page, make_log) -> None:
    started = time.monotonic()
    lab, srv = rerun_lab
    pg = page
    name = "reopen.ipynb"
    _run_query_in_page(pg, lab, name, make_log)
    saved = nbformat.read(lab.root / name, as_version=4)
    answer = _query_cell(saved.cells)["metadata"]["rlm"]["header"]["answer"]
    kernel = pg.evaluate(f"{NB_JS}.sessionContext.session.kernel.id")

    # Closed and opened again while its kernel (which ran it) lives: the kernel re-sends the
    # whole trajectory to the new panel (hello -> sync); nothing in it may change.
    _close(pg)
    _command(pg, "docmanager:open", {"path": name})
    _wait_opened(pg, name)
    assert pg.evaluate(f"{NB_JS}.sessionContext.session.kernel.id") == kernel
    _wait_final(pg, 1)  # the sync reached the run bar
    assert _clean(pg) == {"dirty": False, "edited": []}
    pg.locator(".jp-Notebook .jp-Cell").nth(3).scroll_into_view_if_needed()
    screenshot(pg, "rlm-rerun-reopened")

    # Run All in the kernel that holds the run: its own records.
    before = _cells(pg)
    paid = srv.model.stats.requests
    _command(pg, "notebook:run-all-cells")
    _wait_command(pg)
    _check_rerun(pg, srv, before, paid, answer)
    _save(pg)
    assert _recorded(nbformat.read(lab.root / name, as_version=4).cells) == _recorded(saved.cells)

    # Closed, its kernel shut down, opened again: a new kernel, the same clean document.
    session = pg.evaluate(f"{NB_JS}.sessionContext.session.id")
    _close(pg)
    pg.evaluate(f"window.jupyterapp.serviceManager.sessions.shutdown({json.dumps(session)})")
    _command(pg, "docmanager:open", {"path": name})
    _wait_opened(pg, name)
    assert pg.evaluate(f"{NB_JS}.sessionContext.session.kernel.id") != kernel
    assert _clean(pg) == {"dirty": False, "edited": []}
    screenshot(pg, "rlm-rerun-reopened-new-kernel")
    assert srv.model.stats.requests == paid
    assert not pg.errors, pg.errors  # type: ignore[attr-defined]
    print(f"\nreopen: {time.monotonic() - started:.1f} s")


def test_an_edited_query_supersedes_its_run_and_fresh_asks_again(rerun_lab, page,
                                                                 make_log) -> None:
    started = time.monotonic()
    lab, srv = rerun_lab
    pg = page
    name = "edit-query.ipynb"
    _run_query_in_page(pg, lab, name, make_log)
    first = _query_cell(_cells(pg))["metadata"]["rlm"]["run"]
    paid = srv.model.stats.requests

    # The user's way: change the query's words in the editor, Shift+Enter.
    editor = pg.locator(".jp-Notebook .jp-Cell").nth(1).locator(".cm-content")
    editor.click()
    pg.keyboard.press("Control+End")
    pg.keyboard.press("Shift+Home")
    edited = QUERY.replace("level ERROR", "level WARN")
    pg.keyboard.type(edited)
    pg.keyboard.press("Shift+Enter")
    _wait_final(pg, 2)
    _wait_cell_done(pg, 1)
    cells = _cells(pg)
    assert srv.model.stats.requests == paid + RUN_REQUESTS
    query = cells[1]
    second = query["metadata"]["rlm"]["run"]
    assert second != first
    assert QUERY_MARKER_RE.search("".join(query["source"])).group("run") == second
    assert _live(cells) == [second], "one live trajectory"
    _check_superseded(pg, cells, first, by=second)
    screenshot(pg, "rlm-rerun-superseded")

    # --fresh on the first line: the same query asked again; still one live trajectory.
    source = pg.evaluate(f"{NB_JS}.content.widgets[1].model.sharedModel.getSource()")
    pg.evaluate(f"{NB_JS}.content.widgets[1].model.sharedModel.setSource("
                f"{json.dumps(source.replace('%%rlm', '%%rlm --fresh', 1))})")
    paid = srv.model.stats.requests
    _run_cell(pg, 1)
    _wait_final(pg, 3)
    _wait_cell_done(pg, 1)
    cells = _cells(pg)
    assert srv.model.stats.requests == paid + RUN_REQUESTS
    third = cells[1]["metadata"]["rlm"]["run"]
    assert third not in (first, second)
    assert _live(cells) == [third], "one live trajectory"
    _check_superseded(pg, cells, second, by=third)
    screenshot(pg, "rlm-rerun-fresh")
    _save(pg)
    saved = nbformat.read(lab.root / name, as_version=4)
    nbformat.validate(saved)
    assert _live(json.loads(nbformat.writes(saved))["cells"]) == [third]
    assert not pg.errors, pg.errors  # type: ignore[attr-defined]
    print(f"\nedited query, then --fresh: {time.monotonic() - started:.1f} s")


def _check_superseded(pg, cells: list[dict], old: str, *, by: str) -> None:
    """``old``'s cells: after ``by``'s, under a header naming both, marked and collapsed."""
    runs = [c.get("metadata", {}).get("rlm", {}).get("run") for c in cells]
    assert max(i for i, r in enumerate(runs) if r == by) < runs.index(old), runs
    header = cells[runs.index(old)]
    assert header["metadata"]["rlm"].get("earlier_version"), header
    assert old in "".join(header["source"]) and by in "".join(header["source"])
    steps = [(i, c) for i, c in enumerate(cells) if runs[i] == old and _kinds([c])[0] == "step"]
    assert steps
    for i, c in steps:
        m = MARKER_RE.match("".join(c["source"]))
        assert m is not None and m.group("flag") == "superseded", c["source"][:80]
        assert c["metadata"]["rlm"].get("superseded_by") == by
        hidden = pg.evaluate(f"{NB_JS}.content.widgets[{i}].inputHidden")
        assert hidden, f"superseded step cell {c['id']} is not collapsed"
