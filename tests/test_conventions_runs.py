"""Other runtimes' conventions in whole runs of the library (``RLM(...).run``), every call over
real HTTP to the scripted server on 127.0.0.1: the rlms convention, parallel sub-RLMs, models per
depth, best-effort answers, reasoning models and tool-calling mode."""

from __future__ import annotations

import time

from rlm_kernel.prompts import RLM_QUERY_TASK
from rlm_kernel.scripted.policies import count_lines
from rlm_kernel.scripted.reasoning import DECOY_ANSWER, DECOY_MARK

LOG = "\n".join(f"2025-01-01T00:00:{i % 60:02d}Z {'ERROR' if i % 7 == 0 else 'INFO'} line {i}"
                for i in range(400))
TRUTH = str(count_lines(LOG, "ERROR", False))
COUNT_Q = "How many lines contain 'ERROR'?"
NEEDLE_TEXT = ("Filler sentence number one. " * 60 + "One of the special magic numbers for "
               "quiet-river is: 4417093. " + "More filler text here. " * 60)
NEEDLE_Q = "What is the special magic number for quiet-river mentioned in the provided text?"


def outputs_text(res) -> str:
    return "".join(o.get("text", "") for r in res.runs.values() for s in r.steps
                   for o in s.outputs)


def test_a_model_speaking_only_rlms_finishes_a_count_with_the_answer_dict(scripted_server,
                                                                          rlm_http):
    srv = scripted_server()
    res = rlm_http(srv).run(COUNT_Q + " [chunks=3] [convention=rlms]", LOG)
    assert res.ok and res.answer == TRUTH
    assert not any("FINAL" in s.reply for s in res.steps)
    assert "llm_query_batched(" in (res.steps[-1].code or "")
    assert srv.model.stats.by_policy["rlms_speaker"] == 2


def test_rlm_query_children_read_their_task_from_their_context(scripted_server, rlm_http):
    srv = scripted_server()
    res = rlm_http(srv, max_depth=1).run(
        NEEDLE_Q + " [convention=rlms] [strategy=rlm_query_batched] [chunks=3]", NEEDLE_TEXT)
    assert res.ok and res.answer == "4417093"
    children = [res.runs[c] for c in res.run.children]
    assert len(children) == 3 and all(c.query == RLM_QUERY_TASK for c in children)
    assert all(c.context.length > 0 and c.depth == 1 for c in children)
    assert sorted(c.answer for c in children) == ["4417093", "NONE", "NONE"]


def test_rlm_batch_of_8_children_at_concurrency_8_takes_about_one_childs_time(scripted_server,
                                                                             rlm_http):
    """Children run at once: the step that starts them lasts about as long as the slowest,
    not their sum (each child makes 3 root calls and 1 sub-call at 0.15 s each)."""
    srv = scripted_server(latency=0.15)
    res = rlm_http(srv, max_depth=1, concurrency=8).run(
        COUNT_Q + " [strategy=rlm_batch] [parts=8]", LOG)
    assert res.ok and res.answer == TRUTH
    children = [res.runs[c] for c in res.run.children]
    assert len(children) == 8 and all(c.answer for c in children)
    batch_step = next(s for s in res.steps if s.code and "rlm_batch(" in s.code)
    one = max(c.elapsed_s for c in children)
    total = sum(c.elapsed_s for c in children)
    print(f"rlm_batch: step {batch_step.exec_s:.2f}s, slowest child {one:.2f}s, "
          f"sum of children {total:.2f}s, ratio {total / batch_step.exec_s:.1f}")
    assert batch_step.exec_s < 2.0 * one  # liveness bound: about one child's time
    assert total / batch_step.exec_s > 4  # not eight children one after the other
    assert srv.model.stats.max_in_flight == 8


def test_models_per_depth_are_used_and_recorded(scripted_server, rlm_http):
    srv = scripted_server()
    models = "scripted-root,scripted-depth1,scripted-depth2"
    res = rlm_http(srv, models=models, max_depth=1).run(
        COUNT_Q + " [strategy=recurse] [parts=2]", LOG)
    assert res.ok and res.answer == TRUTH
    assert res.run.model == "scripted-root" and {s.model for s in res.steps} == {"scripted-root"}
    for child in (res.runs[c] for c in res.run.children):
        assert child.model == "scripted-depth1"
        assert {s.model for s in child.steps} == {"scripted-depth1"}
        assert {c.model for c in child.subcalls.values()} == {"scripted-depth2"}


def test_a_spent_step_budget_gets_one_best_effort_answer(scripted_server, rlm_http):
    srv = scripted_server()
    res = rlm_http(srv, max_steps=3).run(COUNT_Q + " [convention=rlms] [stall=yes]", LOG)
    half = count_lines("\n".join(LOG.split("\n")[:200]), "ERROR", False)
    assert res.status == "final" and res.run.best_effort
    assert res.answer.startswith(f"{half} (best effort")
    assert res.stop_reason.startswith("best-effort answer: step budget exhausted")
    last = res.steps[-1]
    assert last.best_effort and last.code is None and len(res.steps) == 4
    off = rlm_http(srv, max_steps=3, best_effort=False).run(
        COUNT_Q + " [convention=rlms] [stall=yes]", LOG)
    assert off.status == "stopped" and off.answer is None and not off.run.best_effort


def test_after_the_wall_time_budget_the_best_effort_ask_gets_only_a_short_grace(
        scripted_server, rlm_http):
    """A run told to end after 1 s ends near then: the best-effort ask is bounded by a tenth of
    the budget (at least 2 s), not by the 60 s it gets after a step budget."""
    srv = scripted_server(latency=10.0)
    started = time.monotonic()
    res = rlm_http(srv, max_wall_time=1.0).run(COUNT_Q, LOG)
    took = time.monotonic() - started
    assert res.status == "stopped" and res.answer is None
    assert res.stop_reason.startswith("wall-time budget exhausted: 1 s"), res.stop_reason
    assert took < 7.0, took  # 1 s + a 2 s grace (+ slack), never 1 s + the model's 10 s
    assert srv.model.stats.requests == 2  # the step's call and the best-effort ask


def test_reasoning_is_shown_never_run_nor_parsed(scripted_server, rlm_http):
    srv = scripted_server()
    for root, sub in (("scripted-root-think", "scripted-sub-think"),
                      ("scripted-root-reasoner", "scripted-sub-reasoner")):
        res = rlm_http(srv, model=root, sub_model=sub).run(COUNT_Q + " [chunks=2]", LOG)
        assert res.ok and res.answer == TRUTH != DECOY_ANSWER
        assert DECOY_MARK not in outputs_text(res)
        assert all(DECOY_MARK in s.reasoning for s in res.steps)
        assert all("<think>" not in s.thought for s in res.steps)


def test_parameters_reasoning_models_refuse_are_not_sent(scripted_server, rlm_http):
    srv = scripted_server()
    res = rlm_http(srv, model="scripted-root-o-series", sub_model="scripted-sub-o-series",
                   temperature=0.3, reasoning_model="yes", reasoning_effort="high").run(
        COUNT_Q + " [chunks=2]", LOG)
    assert res.ok and res.answer == TRUTH
    stats = srv.model.stats.snapshot()
    assert 400 not in stats["by_status"] and "temperature" not in stats["params"]
    assert stats["params"]["reasoning_effort"] == stats["requests"]


def test_tool_calling_mode_runs_each_tool_call_as_a_step(scripted_server, rlm_http):
    srv = scripted_server()
    t0 = time.monotonic()
    res = rlm_http(srv, mode="tools").run(COUNT_Q + " [chunks=2]", LOG)
    assert res.ok and res.answer == TRUTH, res.stop_reason
    assert all("<tool_calls>" in s.reply for s in res.steps)
    assert all(s.code for s in res.steps)  # every turn ran as code, the last one FINAL_VAR
    assert 'FINAL_VAR(' in (res.steps[-1].code or "")
    assert srv.model.stats.snapshot()["params"]["tools"] == len(res.steps)
    assert time.monotonic() - t0 < 30


def count_term(text: str, term: str) -> int:
    """Count the lines of ``text`` that contain ``term``."""
    return sum(term in line for line in text.split("\n"))


def test_custom_tools_are_listed_in_the_system_prompt_and_callable_from_code(scripted_server,
                                                                             rlm_http):
    srv = scripted_server()
    res = rlm_http(srv, tools=[count_term]).run(COUNT_Q + " [use_tool=count_term]", LOG)
    assert res.ok and res.answer == TRUTH and "count_term(text" in res.steps[0].code
    without = rlm_http(srv).run(COUNT_Q + " [use_tool=count_term]", LOG)
    assert without.answer == "the tool count_term is not offered in this run"


def test_a_persistent_query_sees_earlier_answers_and_variables_only_when_asked(scripted_server,
                                                                              rlm_http):
    srv = scripted_server()
    rlm = rlm_http(srv)
    first = rlm.run(COUNT_Q, LOG, persistent=True)
    second = rlm.run("What did the previous run answer?", LOG, persistent=True)
    assert second.answer == f"{TRUTH} / total={TRUTH}"
    assert second.run.builds_on == [first.run.run_id]
    assert rlm.run("What did the previous run answer?", LOG).answer == "no previous run"


def test_trust_reads_reasoning_and_tool_replies_as_the_engine_runs_them(scripted_server,
                                                                        rlm_http, tmp_path):
    """A trajectory of a reasoning model in tool mode shows no code but what ran: its decoy
    reasoning and its tool-call envelope are not 'hidden code'."""
    import nbformat

    from rlm_kernel.trust import review

    srv = scripted_server()
    res = rlm_http(srv, model="scripted-root-think", mode="tools").run(COUNT_Q + " [chunks=2]",
                                                                      LOG)
    assert res.ok and res.answer == TRUTH
    path = str(tmp_path / "t.ipynb")
    res.save(path)
    report = review(nbformat.read(path, as_version=4), path)
    assert report.hidden == [] and report.signed
    assert all(DECOY_MARK not in code for _, _, code in report.code)
