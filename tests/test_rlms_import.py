"""Importing rlms trajectory logs: real logs written by rlms 0.1.3's RLMLogger (generated against
the scripted server by ``tests/data/rlms_logs/generate.py``) become runs and notebooks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from rlm_kernel.cli import main as cli_main
from rlm_kernel.importers.rlms_log import (
    REPLAY_BY_ORDER,
    LogFormatError,
    import_log,
    to_notebook,
)
from rlm_kernel.lm.cache import cache_key
from rlm_kernel.notebook import recorded_responses, runs_from_notebook
from rlm_kernel.scripted.policies import count_lines

DATA = Path(__file__).parent / "data" / "rlms_logs"
COUNT_CTX = DATA / "count_context.txt"


def truth(path: Path, term: str) -> str:
    return str(count_lines(path.read_text(encoding="utf-8"), term, False))


def test_a_counting_log_becomes_one_run_with_its_steps_and_sub_calls():
    log = import_log(str(DATA / "count.jsonl"), contexts=[str(COUNT_CTX)])
    (run,) = log.roots
    assert run.answer == truth(COUNT_CTX, "ERROR") and run.status == "final"
    assert run.query == "How many lines contain 'ERROR'? [chunks=4]"
    assert run.model == "scripted-root" and run.sub_model == "scripted-sub"
    assert run.context.source == str(COUNT_CTX.resolve()) and run.context.length > 0
    assert [s.n for s in run.steps] == [1, 2]
    peek, batch = run.steps
    assert peek.code and "print(" in peek.code and peek.outputs[0]["name"] == "stdout"
    assert peek.output_text.startswith("REPL output:")  # what rlms showed the model
    assert "llm_query_batched(" in (batch.code or "") and batch.final == run.answer
    assert "```" not in batch.thought
    calls = list(run.subcalls.values())
    assert len(calls) == 4 and all(c.status == "ok" and c.step == 2 for c in calls)
    assert sum(int(c.response or 0) for c in calls) == int(run.answer)
    assert run.usage.prompt_tokens == sum(c.usage.prompt_tokens for c in calls) > 0
    assert run.settings["imported"]["replay"] == REPLAY_BY_ORDER
    assert run.settings["max_steps"] == 6 and run.settings["max_depth"] == 0


def test_sub_calls_are_keyed_as_this_projects_client_keys_them():
    """Replay serves sub-calls by key: the key of (model, the prompt as one user message)."""
    log = import_log(str(DATA / "count.jsonl"))
    raw = [json.loads(line) for line in (DATA / "count.jsonl").read_text().splitlines()]
    prompts = [c["prompt"] for r in raw if r["type"] == "iteration" for b in r["code_blocks"]
               for c in b["result"]["rlm_calls"]]
    keys = {c.cache_key for c in log.roots[0].subcalls.values()}
    assert keys == {cache_key("scripted-sub", [{"role": "user", "content": p}], {})
                    for p in prompts}


def test_child_rlms_of_rlm_query_become_child_runs_under_their_parent_step():
    log = import_log(str(DATA / "needle_children.jsonl"))
    (root,) = log.roots
    assert root.answer == "4417093" and root.settings["max_depth"] == 1
    children = [log.runs[c] for c in root.children]
    assert [c.answer for c in children] == ["NONE", "4417093"]
    for child in children:
        assert child.depth == 1 and child.parent == root.run_id and child.parent_step == 2
        assert child.context.source.startswith("rlm_query prompt")  # the prompt is its context
        assert child.query.startswith("Find the special magic number for 'quiet-river'")
        assert child.steps[0].code and "TASK_HEAD" in child.steps[0].code


def test_the_out_of_iterations_answer_is_the_last_step_marked_best_effort():
    log = import_log(str(DATA / "best_effort.jsonl"), contexts=[str(COUNT_CTX)])
    (run,) = log.roots
    last = run.steps[-1]
    assert last.code is None and last.final == run.answer and last.reply == run.answer
    assert last.best_effort and run.best_effort
    assert run.answer.split()[0].isdigit() and "best effort" in run.answer
    assert run.stop_reason.startswith("best-effort answer: rlms used its 3 iterations")
    assert len(run.steps) == 4


def test_a_persistent_session_log_holds_one_run_per_query_building_on_the_earlier():
    ctx2 = DATA / "persistent_context_2.txt"
    log = import_log(str(DATA / "persistent.jsonl"), contexts=[str(COUNT_CTX), str(ctx2)])
    first, second = log.roots
    assert first.answer == truth(COUNT_CTX, "WARN")
    assert second.answer == truth(ctx2, "ERROR")
    assert second.settings["imported"]["builds_on"] == [first.run_id]
    assert second.context.source == str(ctx2.resolve())


def test_the_notebook_validates_and_reads_back_as_the_same_runs():
    log = import_log(str(DATA / "needle_children.jsonl"))
    nb = to_notebook(log)
    nbformat.validate(nb)
    back = runs_from_notebook(nb)
    assert set(back) == set(log.runs)
    for rid, run in log.runs.items():
        assert back[rid].answer == run.answer
        assert [s.code for s in back[rid].steps] == [s.code for s in run.steps]
    kinds = [c.metadata.get("rlm", {}).get("kind") for c in nb.cells]
    assert kinds[0] == "import" and kinds.count("final") == 3


def test_recorded_responses_hold_every_sub_call_and_no_root_key():
    log = import_log(str(DATA / "count.jsonl"))
    served = recorded_responses(log.runs)
    assert set(served) == {c.cache_key for c in log.roots[0].subcalls.values()}


def test_a_context_file_of_the_wrong_size_is_refused_with_what_to_do():
    with pytest.raises(LogFormatError, match="pass the file the run used"):
        import_log(str(DATA / "count.jsonl"), contexts=[str(DATA / "persistent_context_2.txt")])


def test_a_file_that_is_not_an_rlms_log_says_so(tmp_path: Path):
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"type": "metadata"}\nnot json\n')
    with pytest.raises(LogFormatError, match="line 2 is not JSON"):
        import_log(str(bad))
    bad.write_text('{"hello": 1}\n')
    with pytest.raises(LogFormatError, match="not an rlms log record"):
        import_log(str(bad))


def test_backend_settings_that_may_hold_secrets_never_reach_the_notebook(tmp_path: Path):
    records = [json.loads(line) for line in (DATA / "count.jsonl").read_text().splitlines()]
    records[0]["backend_kwargs"]["default_headers"] = {"Authorization": "Bearer sk-SECRET-123"}
    path = tmp_path / "with_headers.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    out = tmp_path / "run.ipynb"
    assert cli_main(["import", str(path), "-o", str(out)]) == 0
    assert "sk-SECRET-123" not in out.read_text()


def test_the_import_command_writes_a_notebook_and_names_the_answer(tmp_path: Path, capsys):
    log = tmp_path / "count.jsonl"
    shutil.copy(DATA / "count.jsonl", log)
    assert cli_main(["import", str(log), "--context", str(COUNT_CTX)]) == 0
    nb = nbformat.read(tmp_path / "count.ipynb", as_version=4)
    assert any(c.metadata.get("rlm", {}).get("kind") == "step" for c in nb.cells)
    assert truth(COUNT_CTX, "ERROR") in capsys.readouterr().err
    assert cli_main(["import", str(tmp_path / "missing.jsonl")]) == 2
