"""The trajectory as a notebook: cell kinds, small whatever the context, round trip and replay."""

from __future__ import annotations

import re
from typing import Any

import nbformat
import pytest
from support import repl_block

from rlm_kernel import RLM
from rlm_kernel.lm import LMClient
from rlm_kernel.notebook import MARKER_RE, recorded_responses, runs_from_notebook
from rlm_kernel.scripted import SUB_FALLBACK_ANSWER
from rlm_kernel.trajectory import sha256_text

SECRET = "QUOKKA-55813-NEVER-IN-NOTEBOOK"


def kinds(nb: Any) -> list[str]:
    return [c.metadata["rlm"]["kind"] for c in nb.cells]


def secret_log(make_log) -> tuple[str, str]:
    """A log with a secret token in the middle of a line far from any chunk boundary."""
    log = make_log(2000, seed=3)
    lines = log.text.split("\n")
    lines[1125] += f" token={SECRET}"
    return "\n".join(lines), log.query


@pytest.fixture
def count_run(scripted_server, rlm_http, make_log):
    """A real scripted count run over HTTP: peek, partition + llm_batch, FINAL_VAR in prose."""
    text, query = secret_log(make_log)
    srv = scripted_server()
    rlm = rlm_http(srv)
    query = query + " [chunks=4]"
    res = rlm.run(query, text)
    assert res.ok, res.stop_reason
    return res, srv, rlm, query, text


def replay(rlm_http, srv, query: str, context: Any, recorded: dict[str, str], **settings: Any):
    """Run again through a cache-only client seeded with a notebook's recorded responses."""
    rlm: RLM = rlm_http(srv, **settings)
    rlm._client = LMClient(rlm.config, cache_only=True)
    rlm.client.cache.seed(recorded)
    return rlm, rlm.run(query, context)


# ---------------------------------------------------------------------------------- structure


def test_notebook_has_the_design_cell_kinds_and_validates(count_run, tmp_path) -> None:
    res, _, _, _, _ = count_run
    nb = res.to_notebook()
    nbformat.validate(nb)
    rid = res.run.run_id
    assert kinds(nb) == ["query", "thought", "step", "thought", "step",
                         "llm", "llm", "llm", "llm", "thought", "final"]
    assert nb.metadata["kernelspec"]["name"] == "rlm"
    assert nb.metadata["rlm"]["runs"] == [rid]
    assert nb.cells[0].source.startswith("%%rlm")
    step_cells = [c for c in nb.cells if c.metadata["rlm"]["kind"] == "step"]
    for n, cell in enumerate(step_cells, start=1):
        assert cell.cell_type == "code"
        assert cell.source.split("\n", 1)[0] == f"# rlm: run={rid} step={n}"
        assert MARKER_RE.match(cell.source).group("run") == rid
        assert cell.source.split("\n", 1)[1] == res.steps[n - 1].code
        assert cell.outputs and cell.outputs[0].output_type == "stream"
    thoughts = [c for c in nb.cells if c.metadata["rlm"]["kind"] == "thought"]
    assert all(c.cell_type == "markdown" for c in thoughts)
    assert thoughts[-1].source.startswith("**Step 3**") and "FINAL_VAR(answer)" in thoughts[-1].source
    llm_cells = [c for c in nb.cells if c.metadata["rlm"]["kind"] == "llm"]
    for cell in llm_cells:
        assert cell.metadata["jupyter"] == {"source_hidden": True, "outputs_hidden": True}
        assert cell.source.startswith(f"%%llm --call {cell.id} --model scripted-sub")
        assert cell.metadata["rlm"]["step"] == 2
    final = nb.cells[-1]
    assert final.cell_type == "markdown" and final.metadata["rlm"]["answer"] == res.answer
    assert res.answer in final.source
    path = res.save(str(tmp_path / "run.ipynb"))
    again = nbformat.read(path, as_version=4)
    nbformat.validate(again)
    assert [c.id for c in again.cells] == [c.id for c in nb.cells]


def test_long_prompts_are_preview_and_hash_and_the_context_is_never_stored(count_run) -> None:
    res, _, _, _, text = count_run
    nb = res.to_notebook()
    blob = nbformat.writes(nb)
    assert SECRET not in blob
    assert len(blob) < len(text) / 2
    header = nb.cells[0].metadata["rlm"]["header"]["context"]
    assert header["sha256"] == sha256_text(text) and header["length"] == len(text)
    for cell in (c for c in nb.cells if c.metadata["rlm"]["kind"] == "llm"):
        call = cell.metadata["rlm"]["call"]
        assert call["prompt_truncated"] is True and "prompt" not in call
        assert call["prompt_chars"] > 2000 and re.fullmatch(r"[0-9a-f]{64}", call["prompt_sha256"])
        assert len(cell.source) < 1000 and "characters omitted" in cell.source
        assert cell.outputs[0].data["text/plain"] == res.run.subcalls[cell.id].response  # whole


def test_short_prompts_whole_nudges_errors_and_budget_stop(rlm_inproc) -> None:
    long_prompt = "summarise: " + "word " * 1000
    rlm = rlm_inproc([
        "Thinking first.",
        repl_block("a = llm('short prompt here')\nb = llm('summarise: ' + 'word ' * 1000)"),
        repl_block("1 / 0"),
        repl_block("print('again')"),
    ], max_steps=4, record_prompt_chars=2000)
    res = rlm.run("q", "ctx")
    assert res.status == "stopped" and res.answer is None
    nb = res.to_notebook()
    # Code-only replies have no prose, hence no thought cell.
    assert kinds(nb) == ["query", "thought", "step", "llm", "llm", "step", "step", "final"]
    nudge_cell = nb.cells[1]
    assert "nudged" in nudge_cell.source and nudge_cell.metadata["rlm"]["record"]["nudge"]
    short, long_ = (c for c in nb.cells if c.metadata["rlm"]["kind"] == "llm")
    assert short.source.split("\n", 1)[1] == "short prompt here"
    assert short.metadata["rlm"]["call"]["prompt_truncated"] is False
    assert long_.metadata["rlm"]["call"]["prompt_truncated"] is True
    assert long_.metadata["rlm"]["call"]["prompt_sha256"] == sha256_text(long_prompt)
    assert long_prompt not in nbformat.writes(nb)
    assert short.outputs[0].data["text/plain"] == SUB_FALLBACK_ANSWER
    error_step = nb.cells[5]
    assert error_step.outputs[-1].output_type == "error"
    assert error_step.outputs[-1].ename == "ZeroDivisionError"
    final = nb.cells[-1]
    assert "ended without an answer" in final.source and "max_steps=4" in final.source
    assert final.metadata["rlm"]["status"] == "stopped"


def test_api_key_is_not_in_the_notebook(rlm_inproc) -> None:
    from support import TEST_KEY

    rlm = rlm_inproc([repl_block("FINAL('x')")])
    blob = nbformat.writes(rlm.run("q", "ctx").to_notebook())
    assert TEST_KEY not in blob and TEST_KEY[:12] not in blob and "api_key" not in blob


# ---------------------------------------------------------------------------- round trip, replay


def test_runs_from_notebook_round_trips_the_trajectory(count_run, tmp_path) -> None:
    res, _, _, _, _ = count_run
    path = res.save(str(tmp_path / "t.ipynb"))
    runs = runs_from_notebook(nbformat.read(path, as_version=4))
    assert list(runs) == [res.run.run_id]
    run = runs[res.run.run_id]
    orig = res.run
    assert (run.query, run.answer, run.status, run.model, run.sub_model) == (
        orig.query, orig.answer, orig.status, orig.model, orig.sub_model)
    assert run.context.to_dict() == orig.context.to_dict()
    assert [s.n for s in run.steps] == [s.n for s in orig.steps]
    for got, want in zip(run.steps, orig.steps, strict=True):
        assert (got.reply, got.code, got.output_text, got.cache_key, got.error) == (
            want.reply, want.code, want.output_text, want.cache_key, want.error)
    assert run.subcalls.keys() == orig.subcalls.keys()
    for cid, call in run.subcalls.items():
        want = orig.subcalls[cid]
        assert (call.response, call.cache_key, call.prompt_sha256, call.batch_index) == (
            want.response, want.cache_key, want.prompt_sha256, want.batch_index)


def test_replay_from_the_notebook_needs_no_network(count_run, rlm_http, tmp_path) -> None:
    res, srv, _, query, text = count_run
    path = res.save(str(tmp_path / "t.ipynb"))
    recorded = recorded_responses(runs_from_notebook(nbformat.read(path, as_version=4)))
    assert len(recorded) == len(res.steps) + res.subcalls
    before = srv.model.stats.requests
    rlm, again = replay(rlm_http, srv, query, text, recorded)
    assert again.ok and again.answer == res.answer
    assert [s.reply for s in again.steps] == [s.reply for s in res.steps]
    assert srv.model.stats.requests == before  # zero HTTP requests
    assert rlm.client.ledger.http_attempts == 0 and rlm.client.ledger.total.requests == 0
    assert rlm.client.ledger.cache_hits == len(recorded)


def test_replay_with_a_different_context_says_so(count_run, rlm_http) -> None:
    res, srv, _, query, text = count_run
    recorded = recorded_responses(runs_from_notebook(res.to_notebook()))
    _, again = replay(rlm_http, srv, query, text.replace("ERROR", "OK", 1), recorded)
    assert again.status == "error" and again.answer is None
    assert "replay has no recorded response" in again.stop_reason


def test_recursive_run_notebook_and_replay(scripted_server, rlm_http, make_log) -> None:
    log = make_log(600, seed=8)
    query = "How many log lines have level ERROR? [strategy=recurse]"
    srv = scripted_server()
    res = rlm_http(srv, max_depth=2).run(query, log.text)
    assert res.ok and res.answer == str(log.level_error)
    nb = res.to_notebook()
    nbformat.validate(nb)
    sub_heads = [c for c in nb.cells if c.cell_type == "markdown"
                 and c.source.startswith("**Sub-RLM**")]
    assert len(sub_heads) == 2
    assert {c.metadata["rlm"]["depth"] for c in nb.cells} == {0, 1}
    runs = runs_from_notebook(nbformat.reads(nbformat.writes(nb), 4))
    assert set(runs) == set(res.runs)
    before = srv.model.stats.requests
    rlm, again = replay(rlm_http, srv, query, log.text, recorded_responses(runs), max_depth=2)
    assert again.answer == res.answer
    assert srv.model.stats.requests == before and rlm.client.ledger.http_attempts == 0


def test_recursive_run_round_trips_child_step_outputs(scripted_server, rlm_http, make_log) -> None:
    log = make_log(600, seed=8)
    srv = scripted_server()
    res = rlm_http(srv, max_depth=2).run(
        "How many log lines have level ERROR? [strategy=recurse]", log.text)
    runs = runs_from_notebook(nbformat.reads(nbformat.writes(res.to_notebook()), 4))
    for rid, orig in res.runs.items():
        assert [s.output_text for s in runs[rid].steps] == [s.output_text for s in orig.steps]


def test_the_projects_signature_is_the_one_jupyter_computes(tmp_path, monkeypatch) -> None:
    """Trajectories are signed with a one-pass digest; JupyterLab and ``jupyter trust`` must
    find the same signature nbformat's own notary computes."""
    import nbformat
    from nbformat.sign import NotebookNotary

    from rlm_kernel.trust import _notary

    nb = nbformat.v4.new_notebook()
    nb.metadata["rlm"] = {"runs": ["r1"], "n": [1, 2.5, None, True, -3], "é": "✓ 𝄞"}
    nb.cells.append(nbformat.v4.new_code_cell("print('héllo')\n# two lines", metadata={
        "rlm": {"kind": "step", "record": {"latency_s": 0.125, "error": None}}}))
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="héllo\n")]
    nb.cells.append(nbformat.v4.new_markdown_cell(["a\n", "b"]))
    ours = _notary()
    assert ours.compute_signature(nb) == NotebookNotary().compute_signature(nb)
    nb.metadata["signature"] = "sha256:old"  # a stale signature is left out of the digest
    assert ours.compute_signature(nb) == NotebookNotary().compute_signature(nb)


def test_a_sub_call_summary_reads_only_the_start_of_a_huge_prompt() -> None:
    from rlm_kernel.notebook import call_summary
    from rlm_kernel.states import CallState
    from rlm_kernel.trajectory import SubCall

    call = SubCall(call_id="c1", model="m", prompt="word  " * 1_000_000, response="42",
                   status=CallState.OK)
    line = call_summary(call)
    assert line.startswith("word word") and "… → 42" in line
    short = SubCall(call_id="c2", model="m", prompt="two\n words", response="x",
                    status=CallState.OK)
    assert call_summary(short).startswith("two words → x")
