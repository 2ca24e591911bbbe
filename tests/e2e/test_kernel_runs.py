"""Runs through a real ``rlm`` kernel: cells mirrored live, rich output without a front-end,
human edits and continue, magics, clear errors."""

from __future__ import annotations

import re
from collections.abc import Iterator

import nbformat
import pytest
from support import count_prompt, scripted_env

from rlm_kernel.notebook import MARKER_RE
from rlm_kernel.scripted import ScriptedModel, ScriptedServer
from rlm_kernel.scripted.policies import RootView, register_root_policy, unregister_policy

LEVEL_QUERY = "How many log lines have level ERROR?"


def _load(kernel, tmp_path, text: str) -> None:
    path = tmp_path / "context.txt"
    path.write_text(text, encoding="utf-8")
    ran = kernel.run(f"%rlm load {path}")
    assert ran.reply["status"] == "ok", ran.outputs_text


def _kinds(cells_: list[dict]) -> list[str]:
    return [c.get("metadata", {}).get("rlm", {}).get("kind", "?") for c in cells_]


def test_run_mirrors_every_step_and_subcall(kernel_factory, tmp_path, log_context,
                                            scripted_server) -> None:
    server = scripted_server()
    k = kernel_factory(scripted_env(server.base_url))
    _load(k, tmp_path, log_context.text)
    k.open_comm(mirrors=True)
    k.mirror.cells.append(nbformat.v4.new_code_cell("%%rlm\n" + LEVEL_QUERY, id="q1"))
    ran = k.run("%%rlm\n" + LEVEL_QUERY, cell_id="q1")
    assert ran.reply["status"] == "ok", ran.outputs_text
    finish = [m for m in ran.comm if m["type"] == "finish"]
    assert finish and finish[-1]["outcome"] == "final"
    assert finish[-1]["answer"].strip() == str(log_context.level_error)

    cells_ = k.mirror.cells
    assert cells_[0]["id"] == "q1"
    assert cells_[0]["metadata"]["rlm"]["kind"] == "query"
    kinds = _kinds(cells_)
    assert kinds.count("step") >= 2 and kinds.count("final") == 1 and kinds[-1] == "final"
    run_id = finish[-1]["run"]
    steps = [c for c in cells_ if c["metadata"].get("rlm", {}).get("kind") == "step"]
    for c in steps:
        m = MARKER_RE.match(c["source"])
        assert m and m.group("run") == run_id
        assert c["execution_count"] is not None and c["outputs"], c["source"][:80]
    llm_cells = [c for c in cells_ if c["metadata"].get("rlm", {}).get("kind") == "llm"]
    assert llm_cells, "a counting run makes sub-calls"
    for c in llm_cells:
        assert c["source"].startswith("%%llm --call ")
        assert c["metadata"]["jupyter"]["source_hidden"] is True
        assert c["outputs"] and c["outputs"][0]["output_type"] == "execute_result"
        assert c["metadata"]["rlm"]["call"]["status"] == "ok"
    # Sub-call cells follow the step that made them.
    first_llm = kinds.index("llm")
    assert "step" in kinds[:first_llm]
    # Live: cells were inserted before the run finished, and status messages came along.
    types = [m["type"] for m in ran.comm]
    assert types.index("insert") < types.index("finish")
    assert "status" in types
    # With a mirroring front-end the query cell stays compact: no per-step rich output there.
    assert "**Step 1**" not in "".join(
        str(m["content"].get("data", {}).get("text/markdown", "")) for m in ran.msgs)
    # The model's variables live in the kernel's namespace, for the human to inspect.
    ran = k.run("print(type(answer).__name__, answer)")
    assert ran.outputs_text.strip() == f"str {log_context.level_error}"
    nb = k.mirror.notebook()
    nbformat.validate(nb)

    # A sub-call cell re-run unedited shows its record: no call (its body is only a preview of
    # the prompt, which must never be sent as if it were the prompt).
    call = llm_cells[0]["metadata"]["rlm"]["call"]
    assert call["prompt_chars"] > 2_000 and "prompt" not in call
    requests = server.model.stats.requests
    ran = k.run(llm_cells[0]["source"])
    assert ran.reply["status"] == "ok", ran.outputs_text
    assert ran.outputs_text.strip() == llm_cells[0]["outputs"][0]["data"]["text/plain"]
    assert server.model.stats.requests == requests
    # Edited, it is a live call with the body as written.
    head, _, _ = llm_cells[0]["source"].partition("\n")
    ran = k.run(f"{head}\n{count_prompt(3, 'edited')}")
    assert ran.reply["status"] == "ok" and ran.outputs_text.strip() == "3", ran.outputs_text
    assert server.model.stats.requests == requests + 1
    # A --call the kernel cannot find sends nothing.
    ran = k.run("%%llm --call r0000000000-s1c1\nCount the lines [... 900 characters omitted ...]")
    assert ran.reply["status"] == "error" and "nothing was sent" in ran.outputs_text


def test_without_frontend_the_query_cell_shows_each_step(kernel_factory, tmp_path,
                                                         needle_haystack) -> None:
    k = kernel_factory()
    _load(k, tmp_path, needle_haystack.text)
    ran = k.run("%%rlm\n" + needle_haystack.query)
    assert ran.reply["status"] == "ok"
    md = [str(m["content"]["data"].get("text/markdown", "")) for m in ran.msgs
          if m["msg_type"] == "display_data"]
    assert any(t.startswith("**Step 1**") for t in md)
    assert any("Final answer" in t and needle_haystack.value in t for t in md)
    assert "scripted demonstration model" in ran.outputs_text  # the banner says so
    out = tmp_path / "export.ipynb"
    ran = k.run(f"%rlm export {out}")
    assert ran.reply["status"] == "ok"
    nb = nbformat.read(out, as_version=4)
    nbformat.validate(nb)
    assert _kinds(nb.cells)[0] == "query" and _kinds(nb.cells)[-1] == "final"
    # The context never enters the notebook, only its description.
    raw = out.read_text()
    assert needle_haystack.text[1000:1200] not in raw
    header = nb.cells[0].metadata["rlm"]["header"]
    assert header["context"]["length"] == len(needle_haystack.text)
    assert header["context"]["source"].endswith("context.txt")


def test_clear_errors_for_bad_input(kernel_factory) -> None:
    k = kernel_factory()
    ran = k.run("%%rlm\nWhat is in it?")
    assert ran.reply["status"] == "error"
    assert "no context" in ran.reply["evalue"] and "%rlm load" in ran.reply["evalue"]
    ran = k.run("context = 'abc'")
    ran = k.run("%%rlm --bogus 3\nWhat is in it?")
    assert ran.reply["status"] == "error" and "unrecognized arguments: --bogus" in ran.reply["evalue"]
    ran = k.run("%%rlm\n   ")
    assert ran.reply["status"] == "error" and "needs a query" in ran.reply["evalue"]
    ran = k.run("%rlm frobnicate")
    assert ran.reply["status"] == "error" and "unknown %rlm subcommand" in ran.outputs_text
    ran = k.run("%rlm continue")
    assert ran.reply["status"] == "error" and "no run to continue" in ran.reply["evalue"]


def test_config_never_shows_the_key(kernel_factory) -> None:
    k = kernel_factory()
    secret = "sk-test-SECRET-0123456789abcdef"
    ran = k.run(f"%rlm config api_key={secret} max_steps=12")
    assert ran.reply["status"] == "ok"
    assert secret not in ran.outputs_text and secret[:12] not in ran.outputs_text
    assert "set (hidden)" in ran.outputs_text and "max_steps" in ran.outputs_text
    ran = k.run("%rlm config max_stepz=3")
    assert ran.reply["status"] == "error" and "unknown setting 'max_stepz'" in ran.outputs_text


def test_llm_magic_is_an_editable_subcall(kernel_factory) -> None:
    k = kernel_factory()
    ran = k.run("%%llm\nSay something about rivers.")
    assert ran.reply["status"] == "ok"
    results = [m for m in ran.msgs if m["msg_type"] == "execute_result"]
    assert results and "not an LLM" in results[0]["content"]["data"]["text/plain"]


# ------------------------------------------------------------------ edit a step, then continue

@pytest.fixture
def echo_server() -> Iterator[ScriptedServer]:
    """A root policy that prints in step 1 and answers, in step 2, the output it was shown."""

    def matches(view: RootView) -> bool:
        return "echo-edit" in view.query

    def reply(view: RootView) -> str:
        if view.step == 1:
            return "I print something.\n```repl\nprint('original-output')\n```"
        seen = view.outputs.get(1, "").strip()
        return f"The step printed it.\nFINAL({seen})"

    register_root_policy("echo-edit", matches, reply)
    srv = ScriptedServer(ScriptedModel(), host="127.0.0.1", port=0)
    srv.start()
    yield srv
    srv.stop()
    unregister_policy("echo-edit")



def test_step_mode_edit_and_continue(kernel_factory, echo_server) -> None:
    k = kernel_factory(scripted_env(echo_server.base_url))
    k.open_comm()
    assert k.run("context = 'tiny'").reply["status"] == "ok"
    ran = k.run("%%rlm --step\necho-edit", cell_id="q1")
    assert ran.reply["status"] == "ok"
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["outcome"] == "paused" and "proposed" in finish["reason"]
    run_id = finish["run"]
    step = next(c for c in k.mirror.cells if c["id"] == f"{run_id}-s1")
    assert step["metadata"]["rlm"]["status"] == "proposed" and not step["outputs"]
    # The human edits the proposed step and runs it: that is now step 1.
    ran = k.run(f"# rlm: run={run_id} step=1\nprint('EDITED-OUTPUT')")
    assert ran.reply["status"] == "ok" and "EDITED-OUTPUT" in ran.outputs_text
    ran = k.run("%rlm continue")
    assert ran.reply["status"] == "ok", ran.outputs_text
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["outcome"] == "final" and finish["answer"] == "EDITED-OUTPUT"


def test_rerun_finished_step_marks_later_stale_and_continue_sees_it(kernel_factory,
                                                                    echo_server) -> None:
    k = kernel_factory(scripted_env(echo_server.base_url))
    k.open_comm()
    k.run("context = 'tiny'")
    ran = k.run("%%rlm\necho-edit", cell_id="q1")
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["answer"] == "original-output"
    run_id = finish["run"]
    ran = k.run(f"# rlm: run={run_id} step=1\nprint('EDITED-OUTPUT')")
    assert ran.reply["status"] == "ok"
    # Step 2 had no code (its FINAL was prose): its thought cell is the one marked stale.
    thought2 = next(c for c in k.mirror.cells if c["id"] == f"{run_id}-t2")
    assert thought2["metadata"]["rlm"]["status"] == "stale"
    step1 = next(c for c in k.mirror.cells if c["id"] == f"{run_id}-s1")
    assert step1["metadata"]["rlm"]["record"]["edited"] is True
    ran = k.run("%rlm status")
    assert re.search(rf"{run_id}\s+paused", ran.outputs_text), ran.outputs_text
    ran = k.run("%rlm continue")
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["outcome"] == "final" and finish["answer"] == "EDITED-OUTPUT"


def test_prices_set_after_a_first_run_cost_the_next_and_trip_max_cost(kernel_factory, tmp_path,
                                                                      log_context) -> None:
    k = kernel_factory()
    _load(k, tmp_path, log_context.text)
    first = k.run("%%rlm\nHow many log lines have level ERROR? [chunks=4]")
    assert first.reply["status"] == "ok", first.outputs_text
    # The first run built the session's client; prices set now must reach the next run's.
    prices = '{"scripted-root": {"prompt": 1000, "completion": 1000}, ' \
             '"scripted-sub": {"prompt": 1000, "completion": 1000}}'
    assert k.run(f"%rlm config 'prices={prices}'").reply["status"] == "ok"
    costed = k.run("%%rlm\nHow many log lines have level ERROR? [chunks=5]")
    assert costed.reply["status"] == "ok", costed.outputs_text
    status = [m for m in costed.comm if m["type"] == "status"][-1]["status"]
    assert status["cost_usd"] > 0, status
    capped = k.run("%%rlm --max-cost 0.0001 --no-best-effort\n"
                   "How many log lines have level ERROR? [chunks=6]")
    finish = [m for m in capped.comm if m["type"] == "finish"][-1]
    assert finish["outcome"] == "stopped" and "cost budget exhausted" in finish["reason"], finish
