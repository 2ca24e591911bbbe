"""The sandboxed kernel (``rlm-sandboxed``, ``rlm-kernel run --sandbox``) end to end, through real
kernels and the scripted model over HTTP (through the sandbox's forwarder).

The hostile corpus (tests/data/sandbox_hostile.json) runs as one RLM run whose every step is an
attempt to get out: in the sandboxed kernel each fails, the model is shown the error and the run
goes on to its answer; in the plain kernel each succeeds (so these tests can fail). Then the main
kinds of run (needle, counting with llm_batch, replay, resume, Stop, an interrupt) in the sandbox.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from sandbox_world import CORPUS, SSH_KEY, UNSUPPORTED, World
from support import TEST_KEY, repl_block, scripted_env

from rlm_kernel.kernelspec import SANDBOXED_KERNEL_NAME
from rlm_kernel.prompts import SANDBOX_NOTE
from rlm_kernel.scripted import ScriptedModel, ScriptedServer

SANDBOXED = SANDBOXED_KERNEL_NAME
needs_sandbox = pytest.mark.skipif(UNSUPPORTED is not None, reason=str(UNSUPPORTED))


@pytest.fixture
def server():
    srv = ScriptedServer(ScriptedModel(), host="127.0.0.1", port=0)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def world(tmp_path: Path, server: ScriptedServer):
    w = World(tmp_path)
    w.endpoint_port = server.port  # "the model endpoint" is the scripted server here
    yield w
    w.close()


def _steps(cells: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Per root step: what it showed the model (its recorded view, else its outputs' text, error
    and traceback included), and what it printed (streams only)."""
    out = []
    for c in cells:
        rlm = c.get("metadata", {}).get("rlm", {})
        if rlm.get("kind") != "step":
            continue
        shown = rlm.get("record", {}).get("output_text") or ""
        printed = ""
        for o in c.get("outputs", []):
            printed += str(o.get("text", "")) if o.get("output_type") == "stream" else ""
            shown += str(o.get("text", "")) + str(o.get("ename", "")) + str(o.get("evalue", ""))
            shown += "".join(o.get("traceback", []))
        out.append((shown, printed))
    return out


def _hostile_run(kernel_factory: Any, world: World, server: ScriptedServer,
                 kernel_name: str) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    server.model.root_replies = [repl_block(world.fill(c["code"])) for c in CORPUS]
    server.model.root_replies.append("FINAL(survived)")
    env = {**scripted_env(server.base_url), "HOME": str(world.home)}
    k = kernel_factory(env, cwd=str(world.work), kernel_name=kernel_name)
    k.open_comm()
    assert k.run("context = 'hello'").reply["status"] == "ok"
    ran = k.run(f"%%rlm --max-steps {len(CORPUS) + 2}\nthe hostile corpus ({kernel_name})",
                cell_id="q", timeout=180)
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    return _steps(k.mirror.cells), finish


@needs_sandbox
def test_every_hostile_attempt_fails_in_the_sandbox_and_the_run_goes_on(
        kernel_factory, world, server) -> None:
    steps, finish = _hostile_run(kernel_factory, world, server, SANDBOXED)
    assert finish["outcome"] == "final" and finish["answer"] == "survived"
    assert len(steps) == len(CORPUS)
    for case, (shown, printed) in zip(CORPUS, steps, strict=True):
        assert case["sandboxed"]["raises"] in shown, (case["name"], shown[-600:])
        assert case["unsandboxed"]["prints"] not in printed, case["name"]
    everything = "\n".join(shown for shown, _ in steps)
    assert "PLANTED-PRIVATE-KEY" not in everything and "PLANTED-AWS" not in everything
    assert TEST_KEY not in everything
    assert not list(world.outside.iterdir())


def test_the_same_attempts_succeed_in_the_plain_kernel(kernel_factory, world, server) -> None:
    steps, finish = _hostile_run(kernel_factory, world, server, "rlm")
    assert finish["outcome"] == "final"
    for case, (shown, printed) in zip(CORPUS, steps, strict=True):
        if "plain_kernel" in case:  # the plain kernel stops this one itself
            assert case["plain_kernel"]["raises"] in shown, (case["name"], shown[-600:])
            continue
        assert case["unsandboxed"]["prints"] in printed, (case["name"], shown[-600:])
    assert SSH_KEY.splitlines()[1] in "\n".join(printed for _, printed in steps)
    assert sorted(p.name for p in world.outside.iterdir()) == [
        "written-by-model.txt", "written-by-shell.txt"]


@needs_sandbox
def test_needle_counting_replay_and_resume_in_the_sandboxed_kernel(
        kernel_factory, server, tmp_path, make_haystack, log_context) -> None:
    data, work = tmp_path / "data", tmp_path / "work"
    data.mkdir()
    work.mkdir()
    hay = make_haystack(200_000)
    (data / "hay.txt").write_text(hay.text)
    (data / "app.log").write_text(log_context.text)
    env = {**scripted_env(server.base_url), "RLM_SANDBOX_READ": str(data)}
    k = kernel_factory(env, cwd=str(work), kernel_name=SANDBOXED)
    k.open_comm()
    banner = k.kc.kernel_info(reply=True, timeout=30)["content"]["banner"]
    assert "sandboxed (Landlock ABI" in banner and "seccomp" in banner

    assert k.run(f"%rlm load {data / 'hay.txt'}").reply["status"] == "ok"
    ran = k.run(f"%%rlm\n{hay.query}", cell_id="q1")
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["outcome"] == "final" and hay.value in finish["answer"]

    assert k.run(f"%rlm load {data / 'app.log'}").reply["status"] == "ok"
    ran = k.run("%%rlm\nHow many log lines have level ERROR?", cell_id="q2")
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["answer"] == str(log_context.level_error)
    calls = {m["id"] for m in ran.comm if m["type"] == "insert" and m["kind"] == "llm"}
    assert len(calls) >= 2  # counted by llm_batch sub-calls, through the forwarder

    # Export into the working folder, then replay and resume from that file in the same kernel.
    assert k.run("%rlm export runs.ipynb").reply["status"] == "ok"
    nb = nbformat.read(work / "runs.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == SANDBOXED
    requests = server.model.stats.requests
    ran = k.run("%rlm replay runs.ipynb", cell_id="r")
    finishes = [m for m in ran.comm if m["type"] == "finish"]
    assert [f["outcome"] for f in finishes] == ["final", "final"]
    ran = k.run("%rlm resume runs.ipynb", cell_id="s")
    assert [m["outcome"] for m in ran.comm if m["type"] == "finish"] == ["final"]  # the latest
    assert server.model.stats.requests == requests  # every call came from the record


@needs_sandbox
def test_the_key_stays_out_of_the_kernel_and_the_endpoint_is_fixed(kernel_factory, server,
                                                                  tmp_path) -> None:
    k = kernel_factory(scripted_env(server.base_url), cwd=str(tmp_path), kernel_name=SANDBOXED)
    probe = ("import os\nk = get_ipython().kernel\n"
             f"print({TEST_KEY!r} in str(dict(os.environ)), k.driver.config.api_key == {TEST_KEY!r},"
             " k.driver.config.base_url, k.driver.config.sandboxed)")
    out = k.run(probe).outputs_text
    assert out.split() == ["False", "False", server.base_url, "True"]
    assert k.run("print(llm('Count the lines of the text below that contain the exact text "
                 "\\'x\\' (case-sensitive). Answer with a number only.\\n<text>\\nx\\n</text>'))"
                 ).outputs_text.strip() == "1"
    ran = k.run("%rlm config base_url=http://127.0.0.1:9/v1")
    assert ran.reply["status"] == "error" and "restart the kernel" in ran.outputs_text
    # A key typed later goes to the forwarder; the session keeps only the token.
    assert k.run("%rlm config api_key=sk-typed-later-0123456789").reply["status"] == "ok"
    out = k.run("print(get_ipython().kernel.driver.config.api_key.startswith('rlm-sandbox-'))")
    assert out.outputs_text.strip() == "True"
    # The run's settings say it was sandboxed: that is what puts the note in its system prompt.
    assert SANDBOX_NOTE.strip().split(".")[0] in _system_prompt_of_a_run(k)


def _system_prompt_of_a_run(k: Any) -> str:
    k.run("context = 'x'")
    k.run("%%rlm --max-steps 1\nanything", cell_id="p")
    code = ("from rlm_kernel.engine import build_history\nd = get_ipython().kernel.driver\n"
            "r = d.registry.runs[d.registry.roots[-1]]\n"
            "print(build_history(r, d.config.replayable(r.settings))[0]['content'])")
    return k.run(code).outputs_text


@needs_sandbox
def test_stop_and_interrupt_work_in_the_sandboxed_kernel(kernel_factory, tmp_path) -> None:
    srv = ScriptedServer(ScriptedModel(latency=2.0, root_replies=[
        "```repl\nimport time\ntime.sleep(60)\n```", "FINAL(x)"]), host="127.0.0.1", port=0)
    srv.start()
    try:
        k = kernel_factory(scripted_env(srv.base_url), cwd=str(tmp_path), kernel_name=SANDBOXED)
        k.open_comm()
        k.run("context = 'x'")
        mid = k.submit("%%rlm\ngo", cell_id="q1")
        _wait_for(lambda: srv.model.stats.in_flight >= 1)  # the root call reached the model
        t0 = time.monotonic()
        k.send_control("stop")
        ran = k.collect(mid, timeout=30)
        assert time.monotonic() - t0 < 2.0
        assert [m for m in ran.comm if m["type"] == "finish"][-1]["outcome"] == "stopped"

        mark: dict[str, float] = {}

        def on(m: dict) -> None:
            if m["type"] == "insert" and m["kind"] == "step" and "t" not in mark:
                time.sleep(1.0)  # the step's code is running: its sleep(60)
                mark["t"] = time.monotonic()
                k.km.interrupt_kernel()

        ran = k.collect(k.submit("%%rlm\ngo again", cell_id="q2"), timeout=60, on_msg=on)
        assert time.monotonic() - mark["t"] < 2.0
        assert ran.reply["status"] == "error" and "interrupted" in ran.reply["evalue"]
        assert k.run("print('still here')").outputs_text.strip() == "still here"
    finally:
        srv.stop()


def _wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.02)


def test_a_kernel_that_cannot_be_sandboxed_runs_nothing_and_says_why(kernel_factory,
                                                                     tmp_path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    k = kernel_factory({"HOME": str(home)}, cwd=str(home), kernel_name=SANDBOXED)
    banner = k.kc.kernel_info(reply=True, timeout=30)["content"]["banner"]
    assert "NOT SANDBOXED" in banner
    for code in ("print('ran')", "%%rlm\nanything"):
        ran = k.run(code)
        assert ran.reply["status"] == "error" and ran.reply["ename"] == "SandboxUnavailable"
        assert "home folder" in ran.reply["evalue"] and "ran" not in ran.outputs_text


@needs_sandbox
def test_the_kernelspec_through_an_explicit_provisioner_starts_sandboxed(tmp_path,
                                                                        monkeypatch) -> None:
    """The route Enterprise Gateway and gateway_provisioners take: a kernelspec naming its
    kernel provisioner (jupyter_client >= 7); the sandboxed kernel needs nothing else."""
    from jupyter_client.manager import KernelManager

    from rlm_kernel.kernelspec import kernel_json

    spec_dir = tmp_path / "kernels" / "rlm-provisioned"
    spec_dir.mkdir(parents=True)
    spec = kernel_json(sandboxed=True)
    spec["metadata"]["kernel_provisioner"] = {"provisioner_name": "local-provisioner"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", f"{tmp_path}{os.pathsep}{os.environ['JUPYTER_PATH']}")
    work = tmp_path / "work"
    work.mkdir()
    km = KernelManager(kernel_name="rlm-provisioned")
    km.start_kernel(cwd=str(work))
    try:
        assert type(km.provisioner).__name__ == "LocalProvisioner"
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=90)
        assert "sandboxed (Landlock" in kc.kernel_info(reply=True, timeout=30)["content"]["banner"]
        reply = kc.execute_interactive("open('/etc/shadow').read()", timeout=30)
        assert reply["content"]["ename"] == "PermissionError"
        kc.stop_channels()
    finally:
        km.shutdown_kernel(now=True)


@needs_sandbox
def test_rlm_kernel_run_sandbox_records_the_run_and_replays_it_offline(tmp_path, server,
                                                                       log_context) -> None:
    log = tmp_path / "app.log"
    log.write_text(log_context.text)
    out = tmp_path / "run.ipynb"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RLM_"))}
    live = {**env, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": TEST_KEY}

    def cli(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rlm_kernel", *args], env=environ,
                              capture_output=True, text=True, timeout=180)

    proc = cli("run", "--sandbox", "--context", str(log), "--model", "scripted-root",
               "--sub-model", "scripted-sub", "--query", "How many log lines have level ERROR?",
               "--output", str(out), environ=live)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(log_context.level_error)
    text = out.read_text()
    assert TEST_KEY not in text and TEST_KEY not in proc.stderr
    nb = nbformat.read(out, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == SANDBOXED
    query = next(c for c in nb.cells if c.metadata.get("rlm", {}).get("kind") == "query")
    settings = query.metadata["rlm"]["header"]["settings"]
    assert settings["sandboxed"] is True and settings["base_url"] == server.base_url
    server.stop()  # replay needs no endpoint
    proc = cli("replay", "--sandbox", str(out), "--output", str(tmp_path / "again.ipynb"),
               environ=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(log_context.level_error)
