"""A saved trajectory survives being executed again (Run All, Restart & Run All, nbconvert
--execute): recorded cells show their record, no model is called, every output is the same.
Re-running a query cell replaces its run and keeps the earlier one, marked, out of the way."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from support import scripted_env

from rlm_kernel.notebook import MARKER_RE, QUERY_MARKER_RE


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RLM_"))}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "rlm_kernel", *args], capture_output=True,
                          text=True, env=full, timeout=180)


def _outputs(nb: nbformat.NotebookNode) -> dict[str, str]:
    """cell id -> its outputs as JSON, for the cells of a run (query, steps, sub-calls)."""
    return {c.id: json.dumps(c.get("outputs", []), sort_keys=True) for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("rlm")}


def _execute(path: Path, env: dict[str, str]) -> nbformat.NotebookNode:
    """What `jupyter nbconvert --execute` does: every cell, in a fresh kernel, from the file's
    directory."""
    nb = nbformat.read(path, as_version=4)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, kernel_name="rlm", timeout=120, allow_errors=False,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def test_executing_a_saved_trajectory_again_calls_no_model(tmp_path, scripted_server,
                                                           log_context) -> None:
    srv = scripted_server()
    ctx = tmp_path / "app.log"
    ctx.write_text(log_context.text)
    path = tmp_path / "run.ipynb"
    env = scripted_env(srv.base_url)
    proc = _cli("run", "--context", str(ctx), "--query",
                "How many log lines have level ERROR? [chunks=6]", "--output", str(path), env=env)
    assert proc.returncode == 0, proc.stderr
    saved = nbformat.read(path, as_version=4)
    query = next(c for c in saved.cells if c.metadata.get("rlm", {}).get("kind") == "query")
    assert QUERY_MARKER_RE.search(query.source), query.source  # the cell names its run
    paid = srv.model.stats.requests
    before = _outputs(saved)
    assert sum(1 for c in saved.cells if c.metadata.get("rlm", {}).get("kind") == "llm") == 6

    for _ in range(2):  # a fresh kernel each time: a Restart & Run All
        again = _execute(path, env)
        assert srv.model.stats.requests == paid, "executing the trajectory called a model"
        assert _outputs(again) == before

    # The same cells in a kernel that ran them: Run All without a restart.
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type == "code"]
    doubled = copy.deepcopy(nb)
    doubled.cells = nb.cells + copy.deepcopy(nb.cells)
    for c in doubled.cells[len(nb.cells):]:
        c.id = c.id + "-again"
    twice = tmp_path / "twice.ipynb"
    nbformat.write(doubled, twice)
    ran = _execute(twice, env)
    assert srv.model.stats.requests == paid
    first, second = ran.cells[:len(nb.cells)], ran.cells[len(nb.cells):]
    for a, b in zip(first, second, strict=True):
        if a.metadata.get("rlm", {}).get("kind") in ("step", "llm"):
            assert a.outputs == b.outputs, a.source[:60]


def test_an_edited_query_replaces_its_run_and_keeps_the_earlier_one(kernel_factory, tmp_path,
                                                                    log_context) -> None:
    k = kernel_factory()
    path = tmp_path / "app.log"
    path.write_text(log_context.text)
    assert k.run(f"%rlm load {path}").reply["status"] == "ok"
    k.open_comm()
    k.mirror.cells.append(nbformat.v4.new_code_cell("%%rlm\nHow many log lines have level ERROR?",
                                                   id="q"))
    first = k.run("%%rlm\nHow many log lines have level ERROR?", cell_id="q")
    assert first.reply["status"] == "ok"
    source = k.mirror.cell("q")["source"]
    old_run = QUERY_MARKER_RE.search(source).group("run")
    # Re-executed unchanged: the record, no new run.
    again = k.run(source, cell_id="q")
    assert again.reply["status"] == "ok" and not [m for m in again.comm if m["type"] == "insert"]
    # Edited: a new run; the old one is kept, marked and collapsed, below the new one.
    edited = source.replace("level ERROR", "level WARN")
    second = k.run(edited, cell_id="q")
    assert second.reply["status"] == "ok"
    new_run = QUERY_MARKER_RE.search(k.mirror.cell("q")["source"]).group("run")
    assert new_run != old_run
    kinds = [(c["metadata"].get("rlm", {}).get("run"), c["metadata"].get("rlm", {}).get("kind"))
             for c in k.mirror.cells[2:]]
    runs_in_order = [r for r, _ in kinds]
    assert runs_in_order.index(new_run) < runs_in_order.index(old_run)  # the new one on top
    finals = [r for r, kind in kinds if kind == "final"]
    assert finals.count(new_run) == 1 and finals.count(old_run) == 1
    old_steps = [c for c in k.mirror.cells if c["metadata"].get("rlm", {}).get("run") == old_run
                 and c["metadata"]["rlm"].get("kind") == "step"]
    assert old_steps and all(MARKER_RE.match(c["source"]).group("flag") == "superseded"
                             for c in old_steps)
    assert all(c["metadata"]["rlm"].get("superseded_by") == new_run for c in old_steps)
    header = next(c for c in k.mirror.cells if c["metadata"].get("rlm", {}).get("earlier_version"))
    assert old_run in header["source"] and new_run in header["source"]
    # --fresh runs the same query again.
    fresh = k.run(edited.replace("%%rlm", "%%rlm --fresh", 1), cell_id="q")
    assert [m for m in fresh.comm if m["type"] == "finish"][-1]["outcome"] == "final"
    fresh_run = QUERY_MARKER_RE.search(k.mirror.cell("q")["source"]).group("run")
    assert fresh_run != new_run

    def requests(run: str) -> int:
        final = next(c for c in k.mirror.cells if c["metadata"].get("rlm", {}).get("run") == run
                     and c["metadata"]["rlm"].get("kind") == "final")
        return final["metadata"]["rlm"]["usage"]["requests"]

    # asked again: every call went to the model, none came from the session's cache
    assert requests(fresh_run) == requests(new_run) > 0
