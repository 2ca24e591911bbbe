"""``rlm-kernel run`` / ``replay`` / ``export`` end to end, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pytest

from rlm_kernel.notebook import MARKER_RE

TEST_KEY = "sk-test-cli-0123456789abcdefSECRET"


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180
         ) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()
            if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RLM_MODEL", "RLM_SUB_MODEL")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "rlm_kernel", *args], capture_output=True,
                          text=True, env=full, timeout=timeout)


def _kinds(nb: nbformat.NotebookNode) -> list[str]:
    return [c.metadata.get("rlm", {}).get("kind", "-") for c in nb.cells]


@pytest.fixture
def log_file(tmp_path, log_context):
    path = tmp_path / "app.log"
    path.write_text(log_context.text, encoding="utf-8")
    return path


def test_run_prints_the_answer_and_writes_the_trajectory(tmp_path, log_file, log_context) -> None:
    out = tmp_path / "run.ipynb"
    proc = _cli("run", "--context", str(log_file), "--query", "How many log lines have level ERROR?",
                "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(log_context.level_error)
    assert "scripted demonstration model" in proc.stderr
    nb = nbformat.read(out, as_version=4)
    nbformat.validate(nb)
    kinds = _kinds(nb)
    assert kinds[1] == "query" and kinds[-1] == "final"
    run = nb.cells[1].metadata["rlm"]["run"]
    steps = [c for c in nb.cells if c.metadata.get("rlm", {}).get("kind") == "step"]
    assert [MARKER_RE.match(c.source).group("step") for c in steps] == [
        str(i + 1) for i in range(len(steps))]
    assert all(MARKER_RE.match(c.source).group("run") == run for c in steps)
    calls = [c for c in nb.cells if c.metadata.get("rlm", {}).get("kind") == "llm"]
    header = nb.cells[1].metadata["rlm"]["header"]
    assert len(calls) >= 2 and header["status"] == "final"
    assert log_context.text[500:700] not in out.read_text()  # the context stays out


def test_budget_exhaustion_exits_nonzero_and_keeps_the_partial_trajectory(tmp_path,
                                                                          log_file) -> None:
    out = tmp_path / "partial.ipynb"
    proc = _cli("run", "--context", str(log_file), "--query", "How many log lines have level ERROR?",
                "--max-steps", "1", "--no-best-effort", "--output", str(out))
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("rlm-kernel: run stopped: step budget exhausted"), proc.stderr
    nb = nbformat.read(out, as_version=4)
    assert _kinds(nb).count("step") == 1 and "max_steps=1" in nb.cells[-1].source


def test_bad_arguments_get_one_clear_line(tmp_path) -> None:
    proc = _cli("run", "--context", str(tmp_path / "missing.txt"), "--query", "q")
    assert proc.returncode == 2 and "no context file" in proc.stderr
    empty = tmp_path / "e.txt"
    empty.write_text("x")
    proc = _cli("run", "--context", str(empty), "--query", "  ")
    assert proc.returncode == 2 and "query is empty" in proc.stderr


def test_replay_needs_no_server_and_reports_a_missing_record(tmp_path, log_file, log_context,
                                                             scripted_server) -> None:
    srv = scripted_server(latency=0.01)
    out = tmp_path / "live.ipynb"
    env = {"OPENAI_BASE_URL": srv.base_url, "OPENAI_API_KEY": TEST_KEY}
    proc = _cli("run", "--context", str(log_file), "--query", "How many log lines have level ERROR?",
                "--model", "scripted-root", "--sub-model", "scripted-sub", "--output", str(out),
                env=env)
    assert proc.returncode == 0, proc.stderr
    live_requests = srv.model.stats.requests
    assert live_requests >= 3
    text = out.read_text()
    assert TEST_KEY not in text and TEST_KEY not in proc.stderr + proc.stdout
    srv.stop()  # replay must not need it

    replayed = tmp_path / "replayed.ipynb"
    proc = _cli("replay", str(out), "--output", str(replayed))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(log_context.level_error)
    nb = nbformat.read(replayed, as_version=4)
    assert _kinds(nb).count("llm") == _kinds(nbformat.read(out, as_version=4)).count("llm")

    # Remove one recorded sub-call: replay reports it instead of inventing an answer.
    nb = nbformat.read(out, as_version=4)
    idx = next(i for i, c in enumerate(nb.cells) if c.metadata.get("rlm", {}).get("kind") == "llm")
    del nb.cells[idx]
    broken = tmp_path / "broken.ipynb"
    nbformat.write(nb, str(broken))  # edited outside the project: no longer signed
    proc = _cli("replay", "--trust", str(broken))
    assert proc.returncode != 0
    assert "no recorded response" in proc.stderr, proc.stderr


def test_export_gives_the_run_records(tmp_path, log_file) -> None:
    out = tmp_path / "run.ipynb"
    assert _cli("run", "--context", str(log_file), "--query", "How many lines contain 'ERROR'?",
                "--output", str(out)).returncode == 0
    proc = _cli("export", str(out))
    assert proc.returncode == 0
    runs = json.loads(proc.stdout)
    (run,) = runs.values()
    assert run["status"] == "final" and run["steps"] and run["subcalls"]
