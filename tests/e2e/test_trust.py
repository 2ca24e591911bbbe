"""Replay and resume run only what a human trusts: a trajectory this user wrote is signed; an
edited or foreign one shows its code and is refused unless the human agrees (``--trust``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from support import repl_block, scripted_env

from rlm_kernel.headless import HeadlessKernel


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RLM_"))}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "rlm_kernel", *args], capture_output=True,
                          text=True, env=full, timeout=180, stdin=subprocess.DEVNULL)


@pytest.fixture
def trajectory(tmp_path: Path, scripted_server) -> Path:
    srv = scripted_server(root_replies=[repl_block("x = 6 * 7\nprint(x)"), "FINAL_VAR(x)"])
    ctx = tmp_path / "ctx.txt"
    ctx.write_text("some context")
    out = tmp_path / "run.ipynb"
    proc = _cli("run", "--context", str(ctx), "--query", "what is x?", "--output", str(out),
                env=scripted_env(srv.base_url))
    assert proc.returncode == 0 and proc.stdout.strip() == "42", proc.stderr
    return out


def _hide_code(path: Path, code: str) -> Path:
    """What an attacker would do: the step cell still shows ``x = 6 * 7``, the record runs more."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        rec = cell.metadata.get("rlm", {}).get("record")
        if cell.metadata.get("rlm", {}).get("kind") == "step" and rec:
            rec["reply"] = repl_block(f"x = 6 * 7\n{code}\nprint(x)")
    edited = path.with_name("edited.ipynb")
    nbformat.write(nb, edited)
    return edited


def test_my_own_trajectory_replays_without_asking(trajectory: Path) -> None:
    proc = _cli("replay", str(trajectory), "--output", str(trajectory.with_name("r.ipynb")))
    assert proc.returncode == 0 and proc.stdout.strip() == "42", proc.stderr
    assert "not signed" not in proc.stderr


def test_hidden_code_is_shown_and_refused_without_trust(trajectory: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    edited = _hide_code(trajectory, f"open({str(marker)!r}, 'w').close()")
    proc = _cli("replay", str(edited))
    assert proc.returncode == 2, proc.stderr
    assert "not trusted and nothing was run" in proc.stderr
    assert "would run code its cell does not show" in proc.stderr and "PWNED" in proc.stderr
    assert not marker.exists()
    proc = _cli("run", "--resume", str(edited))
    assert proc.returncode == 2 and not marker.exists(), proc.stderr
    proc = _cli("replay", "--trust", str(edited))  # the human read it and decided
    assert marker.exists(), proc.stderr


def test_a_foreign_notebook_asks_first_and_names_the_files_it_reads(trajectory: Path) -> None:
    nb = nbformat.read(trajectory, as_version=4)
    query = next(c for c in nb.cells if c.metadata.get("rlm", {}).get("kind") == "query")
    query.metadata["rlm"]["header"]["context"].update(source="/etc/hostname", sha256="")
    foreign = trajectory.with_name("foreign.ipynb")
    nbformat.write(nb, foreign)  # not signed by this user: someone else wrote it
    proc = _cli("replay", str(foreign))
    assert proc.returncode == 2 and "is not signed by you" in proc.stderr, proc.stderr
    assert "It would read: /etc/hostname" in proc.stderr
    assert "x = 6 * 7" in proc.stderr  # the code that would run is shown


def test_the_kernel_asks_and_an_answerless_front_end_means_no(trajectory: Path,
                                                              tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    edited = _hide_code(trajectory, f"open({str(marker)!r}, 'w').close()")
    with HeadlessKernel() as k:  # nbclient answers no input requests
        reply = k.execute(f"%rlm replay {edited}")
        assert reply["status"] == "error" and "--trust" in reply["evalue"], reply
        shown = json.dumps(k.mirror.cells[-1]["outputs"])
        assert "does not show" in shown
    assert not marker.exists()
