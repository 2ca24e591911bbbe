"""Forks in a real ``rlm`` kernel: a branch pays only for what comes after its fork, keeps its
parent's steps, replays offline with its parent and siblings, and compares side by side."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys

import nbformat
import pytest
from support import SCRIPTED_ROOT, scripted_env

from rlm_kernel.notebook import runs_from_notebook
from rlm_kernel.scripted.stepwise_policy import STEPWISE_MODEL

COUNT_QUERY = "How many lines contain 'ERROR'? [chunks=6]"
WARN_QUERY = "How many log lines have level WARN? [chunks=6]"


def _kind(cell: dict) -> str:
    return cell.get("metadata", {}).get("rlm", {}).get("kind", "?")


def _run_of(cell: dict) -> str:
    return cell.get("metadata", {}).get("rlm", {}).get("run", "")


def _finish(ran) -> dict:
    done = [m for m in ran.comm if m["type"] == "finish"]
    assert done, ran.outputs_text
    return done[-1]


@pytest.fixture
def server(scripted_server):
    return scripted_server()


@pytest.fixture
def stepwise_kernel(kernel_factory, server, tmp_path, log_context):
    """A kernel (playing a mirroring front-end) that has run an 8-step scripted-stepwise count."""
    path = tmp_path / "log.txt"
    path.write_text(log_context.text, encoding="utf-8")
    k = kernel_factory(env=scripted_env(server.base_url), cwd=str(tmp_path))
    k.open_comm(mirrors=True)
    assert k.run(f"%rlm load {path}").reply["status"] == "ok"
    query = f"%%rlm --model {STEPWISE_MODEL}\n{COUNT_QUERY}"
    k.mirror.append(nbformat.v4.new_code_cell(query, id="q-parent"))
    ran = k.run(query, cell_id="q-parent")
    fin = _finish(ran)
    assert fin["outcome"] == "final" and fin["answer"] == str(log_context.contains_error)
    steps = {c["metadata"]["rlm"]["step"] for c in k.mirror.cells
             if _kind(c) in ("step", "thought") and _run_of(c) == fin["run"]}
    assert steps == set(range(1, 9))  # the last one is a FINAL in prose: a thought cell
    return k, fin["run"]


def _fork(k, code: str, cell_id: str):
    k.mirror.append(nbformat.v4.new_code_cell(code, id=cell_id))
    return k.run(code, cell_id=cell_id)


def test_forking_step_4_of_an_8_step_run_pays_only_the_calls_after_it(
        stepwise_kernel, server, log_context) -> None:
    k, parent = stepwise_kernel
    server.model.stats.reset()
    ran = _fork(k, f"%rlm fork --run {parent} --at 4 --model {SCRIPTED_ROOT} "
                   "--sub-model scripted-sub-b", "q-fork")
    assert ran.reply["status"] == "ok", ran.outputs_text
    fin = _finish(ran)
    assert fin["outcome"] == "final" and fin["answer"] == str(log_context.contains_error)
    stats = server.model.stats.snapshot()
    # Steps 1-4 (and their three sub-calls) come from the record; scripted-root then sends one
    # batch of six chunks to the new sub-model (step 5) and finishes (step 6).
    assert (stats["root_requests"], stats["sub_requests"]) == (2, 6)

    by_run: dict[str, list[dict]] = {}
    for c in k.mirror.cells:
        by_run.setdefault(_run_of(c), []).append(c)
    branch = fin["run"]
    mine = [c for c in by_run[branch] if _kind(c) == "step"]
    theirs = [c for c in by_run[parent] if _kind(c) == "step"]
    assert len(mine) == 5  # and step 6, a FINAL_VAR in prose
    for a, b in zip(mine[:4], theirs[:4], strict=True):
        assert a["source"].split("\n", 1)[1] == b["source"].split("\n", 1)[1]  # same code
        assert [o.get("text") for o in a["outputs"]] == [o.get("text") for o in b["outputs"]]
        assert a["metadata"]["rlm"]["inherited"] is True
        assert a["metadata"]["jupyter"]["source_hidden"] is True
    assert "inherited" not in mine[4]["metadata"]["rlm"] and "llm_batch" in mine[4]["source"]

    # The fork cell became the branch's query cell and says exactly what the branch is.
    query = k.mirror.cell("q-fork")
    assert query is not None and query["source"] == (
        f"%%rlm fork --run {parent} --at 4 --model {SCRIPTED_ROOT} --sub-model scripted-sub-b "
        f"--label {SCRIPTED_ROOT}+sub=scripted-sub-b@4\n# rlm: run={query['metadata']['rlm']['run']}"
        f"\n{COUNT_QUERY}")
    header = query["metadata"]["rlm"]["header"]
    assert header["fork_of"]["run"] == parent and header["fork_of"]["at"] == 4
    # The branch's cells are a group of their own, after its query cell.
    ids = [c["id"] for c in k.mirror.cells]
    assert ids.index("q-fork") < min(ids.index(c["id"]) for c in by_run[branch] if c["id"] != "q-fork")

    # %rlm status shows the branch under its parent; %rlm compare sets them side by side.
    status = k.run("%rlm status").outputs_text
    assert re.search(rf"^{parent}  final", status, re.M)
    assert re.search(rf"^  └ {branch}  final", status, re.M)
    assert f"fork of `{parent}` at step 4" in status
    shown = k.run("%rlm compare")
    bundle = next(m["content"]["data"] for m in shown.msgs if m["msg_type"] == "display_data")
    page = html.unescape(bundle["text/html"])
    assert "forks A after step 4; they diverge at step 5" in page
    assert "+ answers = llm_batch(prompts)" in page and "- reply = llm(" in page
    assert bundle["text/plain"].startswith("Compare · B (branch `")


def test_a_fork_from_a_saved_notebook_in_a_new_kernel_pays_only_after_k(
        stepwise_kernel, server, kernel_factory, tmp_path, log_context) -> None:
    k, parent = stepwise_kernel
    saved = tmp_path / "parent.ipynb"
    assert k.run(f"%rlm export {saved}").reply["status"] == "ok"
    fresh = kernel_factory(env=scripted_env(server.base_url), cwd=str(tmp_path))
    fresh.open_comm(mirrors=True)
    server.model.stats.reset()
    ran = _fork(fresh, f"%rlm fork --from {saved} --at 4 --model {SCRIPTED_ROOT} "
                       "--sub-model scripted-sub-b", "q-fork")
    assert _finish(ran)["answer"] == str(log_context.contains_error), ran.outputs_text
    stats = server.model.stats.snapshot()
    assert (stats["root_requests"], stats["sub_requests"]) == (2, 6)


def test_a_fork_that_cannot_be_made_says_why_and_runs_nothing(stepwise_kernel, server) -> None:
    k, parent = stepwise_kernel
    server.model.stats.reset()
    ran = k.run(f"%rlm fork --run {parent} --at 8 --model {SCRIPTED_ROOT}")
    assert ran.reply["status"] == "error"
    assert "ended the run (FINAL); fork at an earlier step (at most 7)" in ran.reply["evalue"]
    ran = k.run("%rlm fork --model x")
    assert ran.reply["status"] == "error" and "--at" in ran.reply["evalue"]
    assert server.model.stats.snapshot()["requests"] == 0


@pytest.fixture
def three_runs(stepwise_kernel, tmp_path):
    """A notebook holding the stepwise run and two forks of it (another root model; another
    question), written by the kernel."""
    k, parent = stepwise_kernel
    a = _finish(_fork(k, f"%rlm fork --run {parent} --at 1 --model {SCRIPTED_ROOT}", "q-f1"))
    b = _finish(_fork(k, f"%%rlm fork --run {parent} --at 1\n{WARN_QUERY}", "q-f2"))
    path = tmp_path / "branched.ipynb"
    assert k.run(f"%rlm export {path}").reply["status"] == "ok"
    return path, [parent, a["run"], b["run"]]


def test_a_notebook_with_a_run_and_two_forks_replays_offline_to_the_three_answers(
        three_runs, kernel_factory, tmp_path, log_context) -> None:
    path, ids = three_runs
    runs = runs_from_notebook(nbformat.read(path, as_version=4))
    recorded = [runs[i].answer for i in ids]
    warn = sum(" WARN " in line for line in log_context.text.split("\n"))
    assert recorded == [str(log_context.contains_error), str(log_context.contains_error),
                        str(warn)]
    # No endpoint at all: every call must come from the notebook.
    k = kernel_factory(env={}, cwd=str(tmp_path))
    k.open_comm(mirrors=True)
    ran = k.run(f"%rlm replay {path}", cell_id="replay")
    assert ran.reply["status"] == "ok", ran.outputs_text
    finishes = [m for m in ran.comm if m["type"] == "finish"]
    assert [(f["outcome"], f["answer"]) for f in finishes] == [("final", a) for a in recorded]
    status = k.run("%rlm status").outputs_text
    assert status.count("└ ") == 2  # the replayed forks name the replayed parent
    assert "session: 0 model requests" in status


def test_resuming_a_notebook_with_branches_replays_each_branch_and_pays_nothing(
        three_runs, server, tmp_path) -> None:
    path, ids = three_runs
    server.model.stats.reset()
    out = subprocess.run(
        [sys.executable, "-m", "rlm_kernel", "run", "--resume", str(path)],
        env={**os.environ, **scripted_env(server.base_url)}, cwd=str(tmp_path),
        capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    assert server.model.stats.snapshot()["requests"] == 0
    runs = runs_from_notebook(nbformat.read(path, as_version=4))
    assert all(runs[i].status == "final" for i in ids)


def test_rlm_kernel_fork_branches_a_saved_run_headless_and_compare_reads_it(
        three_runs, server, tmp_path, log_context) -> None:
    path, ids = three_runs
    out_path = tmp_path / "forked.ipynb"
    server.model.stats.reset()
    env = {**os.environ, **scripted_env(server.base_url)}
    out = subprocess.run(
        [sys.executable, "-m", "rlm_kernel", "fork", str(path), "--run", ids[0], "--at", "4",
         "--model", SCRIPTED_ROOT, "--sub-model", "scripted-sub-b", "--output", str(out_path)],
        env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(log_context.contains_error)
    stats = server.model.stats.snapshot()
    assert (stats["root_requests"], stats["sub_requests"]) == (2, 6)
    nb = nbformat.read(out_path, as_version=4)
    runs = runs_from_notebook(nb)
    branch = next(r for r in runs.values() if r.fork_of and r.fork_of.at == 4)
    # The new group sits after the parent's branches, not after unrelated cells.
    order = [_run_of(c) for c in nb.cells]
    assert order.index(branch.run_id) > max(i for i, r in enumerate(order) if r in ids)
    shown = subprocess.run(
        [sys.executable, "-m", "rlm_kernel", "compare", f"{out_path}#{ids[0]}",
         f"{out_path}#{branch.run_id}"], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "forks A after step 4; they diverge at step 5" in " ".join(shown.stdout.split())
    assert max(len(line) for line in shown.stdout.splitlines()) <= 100


def test_the_compare_view_survives_nbconvert_with_both_branches_differing_steps(
        stepwise_kernel, tmp_path) -> None:
    from nbconvert import HTMLExporter

    from rlm_kernel.headless import HeadlessKernel

    k, parent = stepwise_kernel
    path = tmp_path / "parent.ipynb"
    assert k.run(f"%rlm export {path}").reply["status"] == "ok"
    with HeadlessKernel(env={}, cwd=str(tmp_path), output=str(tmp_path / "out.ipynb"),
                        initial_cells=[dict(c) for c in nbformat.read(path, as_version=4).cells]
                        ) as hk:
        reply = hk.execute(f"%rlm fork --from {path} --run {parent} --at 1 --model {SCRIPTED_ROOT}")
        assert reply["status"] == "ok", reply
        assert hk.execute("%rlm compare")["status"] == "ok"
        nb = hk.mirror.notebook()
    body, _ = HTMLExporter().from_notebook_node(nb)
    text = html.unescape(body)
    view = text[text.index('class="rlm-compare'):]
    assert "- reply = llm(" in view and "+ answers = llm_batch(prompts)" in view
    assert "they diverge at step 2" in view
