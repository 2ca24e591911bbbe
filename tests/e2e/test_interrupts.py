"""Interrupts and Stop: the run ends within 2 s, no new call starts, in-flight calls are
cancelled, nothing finished is lost, and the kernel is usable afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import nbformat
import pytest
from support import scripted_env

from rlm_kernel.scripted import ScriptedModel, ScriptedServer

BATCH40 = "```repl\nr = llm_batch(['question %d' % i for i in range(40)])\nprint(len(r))\n```"


def _until(ready, what: str, timeout: float = 60.0) -> None:
    """Wait for an event the test can observe (a server counter, a file), bounded."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def slow_server():
    srv = ScriptedServer(ScriptedModel(latency=3.0, root_replies=[BATCH40, "FINAL(done)"]),
                         host="127.0.0.1", port=0)
    srv.start()
    yield srv
    srv.stop()



def _call_states(comm: list[dict]) -> Counter:
    last: dict[str, str] = {}
    for m in comm:
        call = m.get("patch", {}).get("metadata", {}).get("rlm", {}).get("call") \
            if m["type"] == "update" else None
        if call:
            last[call["call_id"]] = call["status"]
    return Counter(last.values())


def test_interrupt_during_llm_batch(kernel_factory, slow_server) -> None:
    k = kernel_factory(scripted_env(slow_server.base_url))
    k.open_comm()
    k.run("context = 'x'")
    mark: dict[str, float] = {}

    def on(m: dict) -> None:
        if m["type"] == "insert" and m["kind"] == "llm" and "t" not in mark:
            _until(lambda: slow_server.model.stats.in_flight >= 16, "16 calls in flight")
            mark["requests"] = slow_server.model.stats.requests
            mark["t"] = time.monotonic()
            k.km.interrupt_kernel()

    ran = k.collect(k.submit("%%rlm\ngo", cell_id="q"), timeout=60, on_msg=on)
    elapsed = time.monotonic() - mark["t"]
    assert elapsed < 2.0, f"execute_reply {elapsed:.2f} s after the interrupt"
    assert ran.reply["status"] == "error" and "interrupted" in ran.reply["evalue"]
    _until(lambda: slow_server.model.stats.in_flight == 0, "the cancelled calls to end")
    after = slow_server.model.stats.requests
    assert after == mark["requests"], "a model call started after the interrupt"
    states = _call_states(ran.comm)
    assert states["cancelled"] == 40 and states["ok"] == 0, states
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["outcome"] == "stopped"
    # The finished part is kept: the step cell is there with its (interrupted) record.
    assert any(c["id"].endswith("-s1") for c in k.mirror.cells)
    assert k.run("print(6*7)").outputs_text.strip() == "42"


def test_interrupt_during_root_call_and_long_step(kernel_factory, slow_server, tmp_path) -> None:
    k = kernel_factory(scripted_env(slow_server.base_url))
    k.open_comm()
    k.run("context = 'x'")
    mid = k.submit("%%rlm\ngo", cell_id="q1")
    _until(lambda: slow_server.model.stats.in_flight >= 1, "the root call at the server")
    t0 = time.monotonic()
    k.km.interrupt_kernel()
    ran = k.collect(mid, timeout=30)
    assert time.monotonic() - t0 < 2.0
    assert ran.reply["status"] == "error" and "interrupted" in ran.reply["evalue"]

    started = tmp_path / "step-started"
    slow_server.model.root_replies = [
        f"```repl\nimport time\nopen({str(started)!r}, 'w').close()\ntime.sleep(60)\n```",
        "FINAL(x)"]
    mark: dict[str, float] = {}

    def on(m: dict) -> None:
        if m["type"] == "insert" and m["kind"] == "step" and "t" not in mark:
            _until(started.exists, "the step's code to start")
            mark["t"] = time.monotonic()
            k.km.interrupt_kernel()

    ran = k.collect(k.submit("%%rlm\ngo again", cell_id="q2"), timeout=60, on_msg=on)
    assert time.monotonic() - mark["t"] < 2.0
    assert ran.reply["status"] == "error" and "interrupted during step 1" in ran.reply["evalue"]
    assert k.run("print('still here')").outputs_text.strip() == "still here"


def test_stop_control_during_a_root_call(kernel_factory, slow_server) -> None:
    k = kernel_factory(scripted_env(slow_server.base_url))
    k.open_comm()
    k.run("context = 'x'")
    mid = k.submit("%%rlm\ngo", cell_id="q1")
    _until(lambda: slow_server.model.stats.in_flight >= 1, "the root call at the server")
    t0 = time.monotonic()
    k.send_control("stop")  # a comm message: handled while the run awaits its model call
    ran = k.collect(mid, timeout=30)
    assert time.monotonic() - t0 < 2.0
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["outcome"] == "stopped"


def test_ctrl_c_in_the_cli_keeps_the_partial_trajectory(tmp_path, slow_server) -> None:
    ctx = tmp_path / "c.txt"
    ctx.write_text("x")
    out = tmp_path / "partial.ipynb"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RLM_"))}
    env.update(scripted_env(slow_server.base_url))
    proc = subprocess.Popen([sys.executable, "-m", "rlm_kernel", "run", "--context", str(ctx),
                             "--query", "go", "--output", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _until(lambda: slow_server.model.stats.sub_requests >= 16, "the batch in flight")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 10
    assert "interrupted" in err.strip().splitlines()[-1]
    nb = nbformat.read(out, as_version=4)
    nbformat.validate(nb)
    kinds = [c.metadata.get("rlm", {}).get("kind") for c in nb.cells]
    assert "step" in kinds and kinds.count("llm") == 40
