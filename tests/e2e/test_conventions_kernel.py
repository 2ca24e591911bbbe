"""Issue 16 through real ``rlm`` kernels: the rlms convention, parallel sub-RLMs with live cells,
models per depth, best-effort answers, reasoning models, tool-calling mode, custom tools,
persistent sessions, and rlms log import + replay. Replies come from the scripted server on
127.0.0.1 (or, for replay, from the imported record alone)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from support import scripted_env

from rlm_kernel.importers.rlms_log import import_log, to_notebook
from rlm_kernel.notebook import MARKER_RE, write_notebook
from rlm_kernel.scripted.policies import count_lines
from rlm_kernel.scripted.reasoning import DECOY_MARK

LOG = "\n".join(f"2025-01-01T00:00:{i % 60:02d}Z {'ERROR' if i % 7 == 0 else 'INFO'} line {i}"
                for i in range(400))
TRUTH = str(count_lines(LOG, "ERROR", False))
COUNT_Q = "How many lines contain 'ERROR'?"
NEEDLE = ("Filler sentence number one. " * 60 + "One of the special magic numbers for "
          "quiet-river is: 4417093. " + "More filler text here. " * 60)
NEEDLE_Q = "What is the special magic number for quiet-river mentioned in the provided text?"
DATA = Path(__file__).resolve().parents[1] / "data" / "rlms_logs"


def meta(cell: dict[str, Any]) -> dict[str, Any]:
    return cell.get("metadata", {}).get("rlm", {})


def finish_of(ran: Any) -> dict[str, Any]:
    done = [m for m in ran.comm if m["type"] == "finish"]
    assert done, ran.outputs_text
    return done[-1]


def query(k: Any, cell_id: str, text: str, options: str = "") -> dict[str, Any]:
    src = f"%%rlm {options}".rstrip() + f"\n{text}"
    k.mirror.cells.append(nbformat.v4.new_code_cell(src, id=cell_id))
    ran = k.run(src, cell_id=cell_id, timeout=120)
    return finish_of(ran)


@pytest.fixture
def kernel(kernel_factory, scripted_server, tmp_path):
    srv = scripted_server(latency=0.1)
    k = kernel_factory(env=scripted_env(srv.base_url), cwd=str(tmp_path))
    k.open_comm(mirrors=True)
    ran = k.run(f"context = {LOG!r}\nneedle_text = {NEEDLE!r}")
    assert ran.reply["status"] == "ok", ran.outputs_text
    return k, srv


def test_rlms_convention_and_parallel_sub_rlms_with_live_grouped_cells(kernel) -> None:
    k, srv = kernel
    # A model speaking only rlms's convention (answer dict, llm_query_batched) finishes here.
    done = query(k, "q1", COUNT_Q + " [chunks=3] [convention=rlms]")
    assert done["outcome"] == "final" and done["answer"] == TRUTH
    # rlm_query children read their task from their context, as in rlms.
    done = query(k, "q2", NEEDLE_Q + " [convention=rlms] [strategy=rlm_query] [chunks=2]",
                 "--context needle_text --max-depth 1")
    assert done["outcome"] == "final" and done["answer"] == "4417093"

    # rlm_batch: 8 sub-RLMs at concurrency 8, each a group of live cells under step 2.
    srv.model.stats.reset()
    done = query(k, "q3", COUNT_Q + " [strategy=rlm_batch] [parts=8]",
                 "--max-depth 1 --concurrency 8")
    assert done["outcome"] == "final" and done["answer"] == TRUTH
    assert srv.model.stats.max_in_flight == 8
    root = done["run"]
    cells = k.mirror.cells
    at = next(i for i, c in enumerate(cells) if c["id"] == "q3")
    mine = cells[at:]
    heads = [i for i, c in enumerate(mine) if meta(c).get("kind") == "query" and meta(c)["depth"]]
    assert len(heads) == 8
    step2 = next(i for i, c in enumerate(mine) if c["id"] == f"{root}-s2")
    step3 = next(i for i, c in enumerate(mine) if c["id"] == f"{root}-t3")  # FINAL_VAR, prose
    assert step2 < heads[0] and heads[-1] < step3  # grouped under the step that started them
    for h in heads:  # each child's cells are contiguous: head ... its final cell
        child = meta(mine[h])["run"]
        group = [c for c in mine if meta(c).get("run") == child]
        first = mine.index(group[0])
        assert mine[first:first + len(group)] == group and meta(group[-1])["kind"] == "final"
        steps = [c for c in group if meta(c)["kind"] == "step"]
        assert steps and all(c["metadata"]["jupyter"]["source_hidden"] for c in steps)
        assert all(MARKER_RE.match(c["source"]).group("run") == child for c in steps)
        assert all(c["outputs"] for c in steps)  # real cells, with their own outputs
    # A child's step cell re-runs in that child's own namespace (its context, not the kernel's).
    child = meta(mine[heads[0]])
    first_step = next(c for c in mine if meta(c).get("run") == child["run"]
                      and meta(c)["kind"] == "step")
    marker_line = first_step["source"].splitlines()[0]
    ran = k.run(f"{marker_line}\nprint('EDITED', len(context))")
    assert ran.reply["status"] == "ok", ran.outputs_text
    assert ran.outputs_text.strip() == f"EDITED {child['header']['context']['length']}"
    record = meta(mine[step2])["record"]
    children = [meta(mine[h])["header"] for h in heads]
    one = max(h["active_s"] for h in children)
    total = sum(h["active_s"] for h in children)
    assert record["exec_s"] < 2.0 * one and total / record["exec_s"] > 4  # ~ one child's time
    nbformat.validate(k.mirror.notebook())


def test_best_effort_reasoning_tools_models_custom_tools_and_persistence(kernel) -> None:
    k, srv = kernel
    # Best effort: the step budget runs out, one more call answers, marked as such.
    done = query(k, "b1", COUNT_Q + " [convention=rlms] [stall=yes]", "--max-steps 3")
    assert done["outcome"] == "final" and done["best_effort"]
    assert done["reason"].startswith("best-effort answer: step budget exhausted")
    final = k.mirror.cells[-1]
    assert final["source"].startswith("**Best-effort answer**") and meta(final)["best_effort"]

    # Reasoning models: shown collapsed in the thought cell, never run or parsed.
    srv.model.stats.reset()
    done = query(k, "r1", COUNT_Q + " [chunks=2]", "--model scripted-root-think "
                 "--sub-model scripted-sub-reasoner --reasoning-effort high")
    assert done["answer"] == TRUTH
    run = done["run"]
    mine = [c for c in k.mirror.cells if meta(c).get("run") == run]
    thoughts = [c for c in mine if meta(c)["kind"] == "thought"]
    assert thoughts and all("<details><summary>Reasoning" in c["source"] for c in thoughts)
    outputs = "".join(o.get("text", "") for c in mine if c["cell_type"] == "code"
                      for o in c.get("outputs", []))
    assert DECOY_MARK not in outputs
    assert srv.model.stats.snapshot()["params"]["reasoning_effort"] == srv.model.stats.requests

    # Tool-calling mode: each tool call is a step cell like a fenced block.
    done = query(k, "t1", COUNT_Q + " [chunks=2]", "--mode tools")
    assert done["answer"] == TRUTH
    steps = [c for c in k.mirror.cells if meta(c).get("run") == done["run"]
             and meta(c)["kind"] == "step"]
    assert len(steps) == 3 and "FINAL_VAR(" in steps[-1]["source"]

    # Models per depth, recorded per cell.
    done = query(k, "m1", COUNT_Q + " [strategy=recurse] [parts=2]",
                 "--models scripted-root,scripted-depth1,scripted-depth2 --max-depth 1")
    assert done["answer"] == TRUTH
    cells = k.mirror.cells
    child_runs = {meta(c)["run"] for c in cells if meta(c).get("kind") == "query"
                  and meta(c).get("parent") == done["run"]}
    assert len(child_runs) == 2
    for c in cells:
        m = meta(c)
        if m.get("run") in child_runs and m["kind"] == "step":
            assert m["record"]["model"] == "scripted-depth1"
        if m.get("run") in child_runs and m["kind"] == "llm":
            assert m["call"]["model"] == "scripted-depth2"

    # Custom tools: %rlm tool NAME lists it in the system prompt; the model's code calls it.
    ran = k.run('def count_term(text, term):\n    """Count the lines of text containing term."""'
                '\n    return sum(term in line for line in text.split("\\n"))\n')
    ran = k.run("%rlm tool count_term")
    assert "count_term(text, term)" in ran.outputs_text
    done = query(k, "c1", COUNT_Q + " [use_tool=count_term]")
    assert done["answer"] == TRUTH

    # Persistent: opt-in per query; it sees the earlier answers and variables.
    first = query(k, "p1", COUNT_Q)
    done = query(k, "p2", "What did the previous run answer?", "--persistent")
    assert done["answer"] == f"{TRUTH} / total={TRUTH}"
    final = k.mirror.cells[-1]
    assert f"`{first['run']}`" in final["source"] and "Built on" in final["source"]
    done = query(k, "p3", "What did the previous run answer?")
    assert done["answer"] == "no previous run"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RLM_MODEL", "RLM_SUB_MODEL")}
    return subprocess.run([sys.executable, "-m", "rlm_kernel", *args], capture_output=True,
                          text=True, env=env, timeout=180, cwd=cwd)


def test_imported_rlms_logs_replay_offline_in_a_kernel_with_the_recorded_answers(
        kernel_factory, tmp_path) -> None:
    """Replay by recorded step order: each root (and child) reply from the log, in order; the
    sub-calls by key. No model endpoint at all."""
    notebooks = {}
    for name, ctx in (("count", "count_context.txt"),
                      ("needle_children", "needle_children_context.txt")):
        log = import_log(str(DATA / f"{name}.jsonl"), contexts=[str(DATA / ctx)])
        path = tmp_path / f"{name}.ipynb"
        write_notebook(to_notebook(log), str(path))
        notebooks[name] = (path, log.roots[0].answer)
    k = kernel_factory(cwd=str(tmp_path))
    k.open_comm(mirrors=True)
    for name, (path, answer) in notebooks.items():
        ran = k.run(f"%rlm replay {path}", timeout=120)
        assert ran.reply["status"] == "ok", ran.outputs_text
        done = finish_of(ran)
        assert done["outcome"] == "final" and done["answer"] == answer, name


def test_the_cli_imports_a_log_and_a_best_effort_replay_exits_5(tmp_path) -> None:
    shutil.copy(DATA / "best_effort.jsonl", tmp_path)
    out = tmp_path / "best_effort.ipynb"
    proc = _cli("import", "best_effort.jsonl", "-o", str(out), "--context",
                str(DATA / "count_context.txt"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    recorded = next(c for c in nbformat.read(out, as_version=4).cells
                    if meta(c).get("kind") == "final")
    proc = _cli("replay", str(out), cwd=tmp_path)
    assert proc.returncode == 5, proc.stderr
    assert proc.stdout.strip() == meta(recorded)["answer"]
    assert "best-effort" in proc.stderr.strip().splitlines()[-1]
