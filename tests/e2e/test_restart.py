"""A crash mid-run loses no finished step, and a resume pays for no recorded call twice."""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest
from support import scripted_env

from rlm_kernel.notebook import runs_from_notebook
from rlm_kernel.scripted import ScriptedModel, ScriptedServer

STEP1 = "Ask about every part.\n```repl\nparts = llm_batch(['part %d' % i for i in range(8)])\nprint(len(parts))\n```"
STEP2 = ("Now the risky bit.\n```repl\nimport os\nif os.environ.get('RLM_TEST_CRASH') == '1':\n"
         "    os._exit(1)\nprint('survived')\n```")
STEP3 = "Done.\nFINAL(resumed fine)"


@pytest.fixture
def server():
    srv = ScriptedServer(ScriptedModel(root_replies=[STEP1, STEP2, STEP3]), host="127.0.0.1",
                         port=0)
    srv.start()
    yield srv
    srv.stop()


def _unrecorded_root_calls(path) -> int:
    """Root calls of the 3-step script a resume must still make, given what the crash left.

    Step 1 finished before the crash and must be there. Step 2's cell (its root reply) was sent
    to the client just before its code killed the kernel; whether those last bytes left the dying
    process is up to the OS, so a resume re-asks for it only if it is missing.
    """
    runs = runs_from_notebook(nbformat.read(path, as_version=4))
    (run,) = runs.values()
    recorded = [s.n for s in run.steps if s.reply]
    assert recorded[:1] == [1], recorded
    return 3 - len(recorded)


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RLM_"))}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "rlm_kernel", *args], capture_output=True,
                          text=True, env=full, timeout=180)


def test_kernel_death_keeps_steps_and_resume_reuses_recorded_calls(tmp_path, server) -> None:
    ctx = tmp_path / "ctx.txt"
    ctx.write_text("some context")
    out = tmp_path / "run.ipynb"
    env = scripted_env(server.base_url)
    proc = _cli(["run", "--context", str(ctx), "--query", "go", "--output", str(out)],
                {**env, "RLM_TEST_CRASH": "1"})
    assert proc.returncode == 3, proc.stderr
    assert "kernel died" in proc.stderr.strip().splitlines()[-1]
    nb = nbformat.read(out, as_version=4)
    nbformat.validate(nb)
    kinds = [c.metadata.get("rlm", {}).get("kind") for c in nb.cells]
    assert kinds.count("llm") == 8  # step 1's sub-calls were flushed before the crash
    step1 = next(c for c in nb.cells if c.get("id", "").endswith("-s1"))
    assert step1.outputs and "8" in step1.outputs[0]["text"]
    paid = server.model.stats.requests  # 2 root calls + 8 sub-calls
    assert paid == 10

    owed = _unrecorded_root_calls(out)
    proc = _cli(["run", "--resume", str(out)], env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "resumed fine"
    # Only root calls after the last recorded one were new: everything recorded was reused.
    assert server.model.stats.sub_requests == 8
    assert server.model.stats.requests - paid == owed
    nb = nbformat.read(out, as_version=4)
    nbformat.validate(nb)
    ids = [c.get("id") for c in nb.cells]
    assert len(ids) == len(set(ids))
    kinds = [c.metadata.get("rlm", {}).get("kind") for c in nb.cells]
    assert kinds.count("llm") == 8 and kinds.count("query") == 1 and kinds[-1] == "final"
    assert nb.cells[0].source.startswith("%rlm load")  # the original notebook, continued


def test_continue_in_a_restarted_kernel_resumes_from_the_notebook(tmp_path, server,
                                                                  kernel_factory) -> None:
    ctx = tmp_path / "ctx.txt"
    ctx.write_text("some context")
    out = tmp_path / "run.ipynb"
    env = scripted_env(server.base_url)
    assert _cli(["run", "--context", str(ctx), "--query", "go", "--output", str(out)],
                {**env, "RLM_TEST_CRASH": "1"}).returncode == 3
    paid, owed = server.model.stats.requests, _unrecorded_root_calls(out)
    k = kernel_factory(env)  # a fresh kernel: nothing in memory
    k.open_comm()
    ran = k.run("%rlm continue")
    assert ran.reply["status"] == "error" and "no run to continue" in ran.reply["evalue"]
    ran = k.run(f"%rlm continue --from {out}")
    assert ran.reply["status"] == "ok", ran.outputs_text
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["outcome"] == "final" and finish["answer"] == "resumed fine"
    assert server.model.stats.sub_requests == 8
    assert server.model.stats.requests - paid == owed
    query_id = next(c.id for c in nbformat.read(out, as_version=4).cells
                    if c.metadata.get("rlm", {}).get("kind") == "query")
    assert finish["anchor"] == query_id  # the resumed run's cells go back where they were
