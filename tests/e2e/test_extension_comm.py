"""The JupyterLab extension against a stock python3 kernel that plays the RLM kernel's side.

The query cell's own Python opens an ``rlm.cells`` comm and sends protocol v2 messages (built here
from the protocol's definition in ``rlm_kernel/cells.py``: the envelope with ``seq``, ``batch``),
sleeping between them so the cells must appear while it still runs. It also plays what a loaded
machine does to the messages: one delivered twice, one lost.
"""

from __future__ import annotations

import json
import time

import nbformat
from browser import lab, page, screenshot  # noqa: F401  (pytest fixtures)

QUERY_ID = "query-cell"
PROBE_ID = "probe-cell"

# fake_rlm.py, written to the server's root dir and run by the query cell. The cell blocks
# (time.sleep), so front-end messages (hello, control) are queued by ipykernel and reach c.on_msg
# when the cell ends; the probe cell reads them then.
KERNEL_SIDE = r'''
import time
from comm import create_comm
from IPython import get_ipython

TARGET = "rlm.cells"
received = []
RUN = "r1"
seq = 0
last = None

def numbered(msg):
    """The kernel's envelope: one counter, +1 per message sent."""
    global seq
    seq += 1
    return {"v": 2, "seq": seq, **msg}

def status(step, done=0, inflight=0, queued=0, state="running"):
    return {"type": "status", "run": RUN, "status": {
        "state": state, "step": step, "max_steps": 5,
        "subcalls": {"done": done, "queued": queued, "inflight": inflight, "failed": 0,
                     "cancelled": 0},
        "tokens": 1234 * step, "cost_usd": 0.0012 * step, "elapsed_s": 0.5 * step,
        "reason": None}}

def md(cid, kind, text, **rlm):
    return {"id": cid, "cell_type": "markdown", "source": text,
            "metadata": {"rlm": {"run": RUN, "kind": kind, **rlm}}}

def code(cid, kind, src, outputs=(), n=None, **rlm):
    return {"id": cid, "cell_type": "code", "source": src, "outputs": list(outputs),
            "execution_count": n, "metadata": {"rlm": {"run": RUN, "kind": kind, **rlm}}}

def insert(cell, after, run=RUN, anchor=None):
    return {"type": "insert", "run": run, "id": cell["id"], "anchor": anchor or ANCHOR,
            "after": after, "kind": cell["metadata"]["rlm"]["kind"], "cell": cell}

def update(cid, **patch):
    return {"type": "update", "run": RUN, "id": cid, "patch": patch}

def text_result(t, n):
    return {"output_type": "execute_result", "execution_count": n,
            "data": {"text/plain": t}, "metadata": {}}

def send(msg, pause=0.4):
    global last
    last = numbered(msg)
    c.send(last)
    time.sleep(pause)

def batch(*msgs, pause=0.4):
    send({"type": "batch", "msgs": list(msgs)}, pause)

def run():
    global c, ANCHOR, seq
    ANCHOR = get_ipython().kernel.get_parent()["metadata"].get("cellId")
    c = create_comm(target_name=TARGET, data=numbered(status(0)))
    c.on_msg(lambda m: received.append(m["content"]["data"]))

    batch(insert(md("r1-thought-1", "thought", "I will peek at the context first.", step=1), None),
          insert(code("r1-step-1", "step", "# rlm: run=r1 step=1\nprint(context[:20])", step=1),
                 "r1-thought-1"))
    send(update("r1-step-1", execution_count=7,
                outputs=[{"output_type": "stream", "name": "stdout", "text": "The quick brown fox\n"}]))
    send(status(1))
    after, llm = "r1-step-1", []
    for i in range(3):
        cid = f"r1-llm-{i}"
        llm.append(insert(code(cid, "llm", f"%%llm\nSummarize chunk {i}",
                               [text_result(f"summary {i}", 8 + i)], 8 + i, step=2, batch_id="b1",
                               call={"status": "ok", "prompt_preview": f"Summarize chunk {i}"}),
                          after))
        after = cid
    batch(*llm, status(2, done=3))
    c.send(last)  # delivered twice: the second copy must change nothing
    time.sleep(0.2)
    send(insert(code("r1-step-2", "step", "# rlm: run=r1 step=2\nanswer = 41", step=2), after))
    seq += 1  # lost on the way: the step's stale mark never arrives...
    # A run anchored in another panel: must be ignored here.
    send(insert(md("other-1", "thought", "not for this panel"), None, run="r-other",
                anchor="some-other-notebook-cell"))
    # ...the front-end noticed the gap and said hello; this sync answers it.
    known = [md("r1-thought-1", "thought", "I will peek at the context first.", step=1),
             code("r1-step-1", "step", "# rlm: run=r1 step=1\nprint(context[:20])", step=1,
                  outputs=[{"output_type": "stream", "name": "stdout", "text": "The quick brown fox\n"}],
                  n=7)]
    known += [code(f"r1-llm-{i}", "llm", f"%%llm\nSummarize chunk {i}", [text_result(f"summary {i}", 8 + i)],
                   8 + i, step=2, batch_id="b1",
                   call={"status": "ok", "prompt_preview": f"Summarize chunk {i}"}) for i in range(3)]
    known += [code("r1-step-2", "step", "# rlm: run=r1 step=2\nanswer = 41", step=2, status="stale")]
    c.send({"v": 2, "type": "sync", "seq": seq, "runs": [{
        "run": RUN, "anchor": ANCHOR, "status": status(3, done=3)["status"], "finished": None,
        "cells": known}]})
    time.sleep(0.2)
    batch(insert(md("r1-final", "final", "**Final answer:** 42", status="final"), "r1-step-2"),
          insert(md("r1-note", "thought", "(a note)"), "r1-final"))
    # Hold the cell open so the test can click Pause while the run is live.
    deadline = time.time() + 6
    while time.time() < deadline and not received[1:]:
        time.sleep(0.1)
    batch(status(3, done=3, state="final"),
          {"type": "finish", "run": RUN, "outcome": "final", "answer": "42", "reason": None},
          pause=0)
'''

QUERY = "# the kernel side of an RLM run, played by fake_rlm.py\nimport fake_rlm\nfake_rlm.run()"
PROBE = "import json; print(json.dumps(fake_rlm.received))"


def _notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(QUERY, id=QUERY_ID),
                nbformat.v4.new_code_cell(PROBE, id=PROBE_ID)]
    return nb


NB_JS = "window.jupyterapp.shell.currentWidget"


def _open(pg, server, name: str) -> None:
    pg.goto(server.lab_url(name))
    # `window.jupyterapp` exists only once the app has started.
    pg.wait_for_function(f"window.jupyterapp?.shell.currentWidget?.context?.path === {json.dumps(name)}",
                         timeout=30_000)
    pg.wait_for_selector(".jp-Notebook .jp-Cell", timeout=30_000)
    pg.wait_for_function(f"{NB_JS}?.sessionContext?.session?.kernel?.status === 'idle'",
                         timeout=30_000)


def _ids(pg) -> list[str]:
    return pg.evaluate(f"{NB_JS}.content.model.sharedModel.cells.map(c => c.getId())")


def _run_cell(pg, index: int) -> None:
    pg.evaluate(f"{NB_JS}.content.activeCellIndex = {index}")
    # Don't return the command's promise: it resolves only when the cell finishes.
    pg.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-cell'); }")


def _query_running(pg) -> bool:
    # The prompt reads "[*]:" while the cell runs (our own state is not the test's subject).
    return "*" in pg.evaluate(f"{NB_JS}.content.widgets[0].promptNode.textContent")


def test_cells_appear_live_and_controls_reach_the_kernel(lab, page):  # noqa: F811
    started = time.monotonic()
    path = lab.root / "trajectory.ipynb"
    nbformat.write(_notebook(), path)
    (lab.root / "fake_rlm.py").write_text(KERNEL_SIDE)
    pg = page
    _open(pg, lab, path.name)
    pg.wait_for_selector(".rlm-toolbar .rlm-status", state="attached", timeout=10_000)
    pg.evaluate("() => { window.jupyterapp.commands.execute('application:toggle-left-area'); }")

    _run_cell(pg, 0)
    # Cells appear below the query cell while the query cell still runs.
    pg.wait_for_function(f"{NB_JS}.content.model.sharedModel.cells.some(c => c.getId() === 'r1-step-1')",
                         timeout=15_000)
    assert _query_running(pg), "step cell should appear while the query cell is still running"
    pg.wait_for_function(f"{NB_JS}.content.model.sharedModel.cells.some(c => c.getId() === 'r1-note')",
                         timeout=15_000)
    assert _query_running(pg)
    screenshot(pg, "extension-live-run")

    expected = [QUERY_ID, "r1-thought-1", "r1-step-1", "r1-llm-0", "r1-llm-1", "r1-llm-2",
                "r1-step-2", "r1-final", "r1-note", PROBE_ID]
    assert _ids(pg) == expected

    cells = pg.evaluate(f"{NB_JS}.content.model.toJSON().cells")
    by_id = {c["id"]: c for c in cells}
    assert by_id["r1-thought-1"]["cell_type"] == "markdown"
    assert by_id["r1-thought-1"]["source"] == "I will peek at the context first."
    step = by_id["r1-step-1"]
    assert step["cell_type"] == "code" and step["source"].startswith("# rlm: run=r1 step=1")
    # The update patched the existing cell in place: its outputs and execution count.
    assert step["execution_count"] == 7
    assert step["outputs"][0]["text"] == "The quick brown fox\n"
    assert by_id["r1-llm-1"]["outputs"][0]["data"]["text/plain"] == "summary 1"
    assert by_id["r1-final"]["metadata"]["rlm"]["kind"] == "final"

    # Sub-call cells are collapsed and grouped; kinds and staleness show as classes.
    hidden = pg.evaluate(
        f"{NB_JS}.content.widgets.filter(w => w.model.getMetadata('rlm')?.kind === 'llm')"
        ".map(w => [w.inputHidden, w.outputHidden])")
    assert hidden == [[True, True]] * 3
    assert pg.locator(".jp-Cell.rlm-kind-llm.rlm-batch").count() == 3
    assert pg.locator(".jp-Cell.rlm-batch-first").get_attribute("data-rlm-batch-label") == \
        "batch b1 · 3 sub-calls"
    assert pg.locator(".jp-Cell.rlm-kind-step.rlm-stale").count() == 1
    assert pg.locator(".jp-Cell.rlm-kind-query").count() == 1
    status = pg.locator(".rlm-status").inner_text()
    assert "step 3/5" in status and "3 done" in status, status

    # A control click reaches the kernel (delivered when the blocking cell yields).
    pg.locator(".rlm-control-pause").click()
    pg.wait_for_function(f"!{NB_JS}.content.widgets[0].promptNode.textContent.includes('*')",
                         timeout=15_000)
    pg.wait_for_function("document.querySelector('.rlm-status').dataset.state === 'final'",
                         timeout=5_000)
    _run_cell(pg, len(expected) - 1)
    pg.wait_for_function(
        f"{NB_JS}.content.widgets.at(-1).model.outputs.length > 0", timeout=15_000)
    printed = pg.evaluate(f"{NB_JS}.content.widgets.at(-1).model.outputs.get(0).toJSON().text")
    received = json.loads(printed)
    hello = {"v": 2, "type": "hello", "client": "jupyterlab", "mirrors": True}
    assert received[0] == {**hello, "seq": None}
    # The lost message (seq 7) was noticed at seq 8: one hello more, saying what was seen last.
    assert [m for m in received if m["type"] == "hello"][1:] == [{**hello, "seq": 8}], received
    controls = [{k: v for k, v in m.items() if k != "id"} for m in received
                if m.get("type") == "control" and m.get("id")]  # each control carries its id
    assert {"v": 2, "type": "control", "action": "pause", "run": "r1"} in controls

    # Save through the UI; the file on disk is the trajectory, metadata included.
    pg.locator(".jp-Notebook").click(position={"x": 5, "y": 5})
    pg.keyboard.press("Control+s")
    pg.wait_for_function(f"!{NB_JS}.context.model.dirty", timeout=10_000)
    screenshot(pg, "extension-saved")
    saved = nbformat.read(path, as_version=4)
    nbformat.validate(saved)
    assert [c.id for c in saved.cells] == expected
    saved_by_id = {c.id: c for c in saved.cells}
    assert saved_by_id["r1-llm-0"].metadata["rlm"] == {
        "run": "r1", "kind": "llm", "step": 2, "batch_id": "b1",
        "call": {"status": "ok", "prompt_preview": "Summarize chunk 0"}}
    assert saved_by_id["r1-llm-0"].metadata["jupyter"]["source_hidden"] is True
    assert saved_by_id["r1-step-2"].metadata["rlm"]["status"] == "stale"
    assert saved_by_id["r1-step-1"].execution_count == 7
    assert not pg.errors, pg.errors  # type: ignore[attr-defined]
    assert time.monotonic() - started < 90


BURST = r'''
from comm import create_comm
from IPython import get_ipython

def run(n=500, per_batch=25):
    anchor = get_ipython().kernel.get_parent()["metadata"].get("cellId")
    c = create_comm(target_name="rlm.cells", data=None)
    after, msgs, seq = anchor, [], 0
    for i in range(n):
        cell = {"id": f"b-{i}", "cell_type": "code", "source": f"%%llm\nchunk {i}",
                "execution_count": None, "metadata": {"rlm": {"run": "big", "kind": "llm",
                                                              "batch_id": "big-1"}},
                "outputs": [{"output_type": "stream", "name": "stdout", "text": f"answer {i}\n"}]}
        msgs.append({"type": "insert", "run": "big", "id": cell["id"], "anchor": anchor,
                     "after": after, "kind": "llm", "cell": cell})
        after = cell["id"]
        if len(msgs) == per_batch:
            seq += 1
            c.send({"v": 2, "seq": seq, "type": "batch", "msgs": msgs})
            msgs = []
'''


def test_500_subcalls_do_not_freeze_the_page(lab, page):  # noqa: F811
    path = lab.root / "burst.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("import burst_rlm; burst_rlm.run()", id="q")]
    nbformat.write(nb, path)
    (lab.root / "burst_rlm.py").write_text(BURST)
    pg = page
    _open(pg, lab, path.name)
    # Record the longest gap between animation frames while the burst is applied.
    pg.evaluate("""() => { window.__gap = 0; let last = performance.now();
        const tick = t => { window.__gap = Math.max(window.__gap, t - last); last = t;
                            if (!window.__stop) requestAnimationFrame(tick); };
        requestAnimationFrame(tick); }""")
    t0 = time.monotonic()
    _run_cell(pg, 0)
    pg.wait_for_function(f"{NB_JS}.content.model.sharedModel.cells.length === 501", timeout=60_000)
    took = time.monotonic() - t0
    pg.evaluate("() => { window.__stop = true; }")
    gap = pg.evaluate("window.__gap")
    screenshot(pg, "extension-500-subcalls")
    print(f"500 sub-call cells in {took:.1f} s; longest frame gap {gap:.0f} ms")
    assert _ids(pg)[1:4] == ["b-0", "b-1", "b-2"]
    header = pg.locator(".jp-Cell.rlm-batch-first[data-rlm-batch='big-1']")
    assert header.get_attribute("data-rlm-batch-label") == "batch big-1 · 500 sub-calls"
    assert gap < 2000, f"page froze for {gap:.0f} ms"
