"""The root loop: feedback, nudges, FINAL handling, budgets, failures, recursion, concurrency.

Engine logic runs against the in-process scripted transport (``rlm_inproc``, which records every
request body); wire behaviour (faults, retries, concurrency) against a loopback server.
"""

from __future__ import annotations

import json
import math
import re
import socket
import time

import pytest
from support import repl_block

from rlm_kernel.scripted import SUB_FALLBACK_ANSWER, FaultPlan
from rlm_kernel.scripted.policies import count_lines

NEVER_DONE = [repl_block("print('still looking')")]  # root_replies clamp to the last reply


def last_user(messages: list[dict]) -> str:
    return messages[-1]["content"]


# ------------------------------------------------------------------------------- feedback loop


def test_reply_without_code_or_final_gets_a_nudge_and_the_loop_goes_on(rlm_inproc) -> None:
    rlm = rlm_inproc(["Let me think about how the context is organised.",
                      repl_block("FINAL('after the nudge')")])
    res = rlm.run("q", "ctx")
    assert res.ok and res.answer == "after the nudge"
    first, second = res.steps
    assert first.code is None and first.nudge is not None and first.final is None
    roots = rlm.transport.root_requests()
    assert len(roots) == 2
    assert last_user(roots[1]) == first.nudge
    assert "no ```repl block and no FINAL" in first.nudge
    assert roots[1][-2] == {"role": "assistant", "content": first.reply}


def test_a_step_that_raises_feeds_its_traceback_back(rlm_inproc) -> None:
    rlm = rlm_inproc([repl_block("print('partial')\nparts = context.split(',')\nparts[99]"),
                      repl_block("FINAL(str(len(parts)))")])
    res = rlm.run("q", "a,b,c")
    assert res.answer == "3"
    step = res.steps[0]
    assert step.error == "IndexError: list index out of range"
    fed = last_user(rlm.transport.root_requests()[1])
    assert '<output step="1">' in fed and "partial" in fed
    assert "Traceback" in fed and '<rlm step 1>", line 3' in fed and "IndexError" in fed
    assert "engine.py" not in fed and "executor.py" not in fed


def test_final_var_of_a_missing_name_is_fed_back_and_the_run_continues(rlm_inproc) -> None:
    rlm = rlm_inproc(["I am sure I stored it.\nFINAL_VAR(the_answer)",
                      repl_block("FINAL_VAR('still_missing')"),
                      repl_block("the_answer = 'forty-two'"),
                      "FINAL_VAR(the_answer)"])
    res = rlm.run("q", "ctx")
    assert res.ok and res.answer == "forty-two" and len(res.steps) == 4
    roots = rlm.transport.root_requests()
    assert "FINAL_VAR('the_answer') failed: there is no REPL variable named 'the_answer'" in (
        last_user(roots[1]))
    assert res.steps[0].nudge is None  # an error was fed back, not a nudge
    assert "NameError" in last_user(roots[2]) and "still_missing" in last_user(roots[2])


def test_code_final_is_authoritative_over_prose_final(rlm_inproc) -> None:
    rlm = rlm_inproc(["```repl\nFINAL('from code')\n```\nFINAL(from prose)"])
    res = rlm.run("q", "ctx")
    assert res.answer == "from code" and len(res.steps) == 1


def test_prose_final_var_reads_what_the_same_steps_code_set(rlm_inproc) -> None:
    rlm = rlm_inproc(["```repl\nanswer = str(6 * 7)\n```\nFINAL_VAR(answer)"])
    res = rlm.run("q", "ctx")
    assert res.answer == "42" and len(res.steps) == 1


@pytest.mark.parametrize("reply, expected", [
    (repl_block("FINAL('f(x) = (a, \"b\")\\nsecond line')"), 'f(x) = (a, "b")\nsecond line'),
    ('Done.\nFINAL("""It\'s (really)\n"two" lines""")', 'It\'s (really)\n"two" lines'),
    ("FINAL(it's 3 (three))", "it's 3 (three)"),
])
def test_final_answers_with_parentheses_quotes_and_newlines(rlm_inproc, reply, expected) -> None:
    assert rlm_inproc([reply]).run("q", "ctx").answer == expected


def test_root_history_is_append_only_and_never_holds_the_context(rlm_inproc) -> None:
    secret = "ZEBRA-7781-SECRET"
    context = ("filler text " * 500) + secret + (" more filler" * 500)
    rlm = rlm_inproc([repl_block("print(len(context))"),
                      "No code here.",
                      repl_block("n = context.count('filler')\nprint(n)"),
                      "FINAL_VAR(n)"])
    res = rlm.run("How often does filler occur?", context)
    assert res.answer == "1000"
    roots = rlm.transport.root_requests()
    assert len(roots) == 4
    for before, after in zip(roots, roots[1:], strict=False):
        assert after[:len(before)] == before and len(after) == len(before) + 2
    system = roots[0][0]["content"]
    assert f"type str, total length {len(context):,} characters" in system
    assert secret not in json.dumps(rlm.transport.requests)
    assert "filler text filler" not in json.dumps(roots)


def test_protected_names_are_restored_and_the_model_is_told(rlm_inproc) -> None:
    rlm = rlm_inproc([repl_block("del llm\ncontext = 'my own'\nFINAL = None\nSHOW_VARS = 1"),
                      repl_block("print(len(context))\nprint(llm('hi')[:14])\nFINAL('ok')")])
    res = rlm.run("q", "the real context")
    assert res.answer == "ok"
    fed = last_user(rlm.transport.root_requests()[1])
    note = re.search(r"\[note: your code deleted or rebound ([^;]+); restored", fed)
    assert note and set(note.group(1).split(", ")) == {"context", "llm", "FINAL", "SHOW_VARS"}
    assert res.steps[1].output_text.startswith(f"{len('the real context')}\n{SUB_FALLBACK_ANSWER[:14]}")


def test_a_five_megabyte_print_reaches_the_model_bounded(rlm_inproc) -> None:
    rlm = rlm_inproc([repl_block("print('x' * 5_000_000)"), "FINAL(done)"], output_chars=20_000)
    res = rlm.run("q", "ctx")
    step = res.steps[0]
    assert len(step.output_text) < 20_100
    assert "[... 4,980,001 characters omitted ...]" in step.output_text
    assert sum(len(o.get("text", "")) for o in step.outputs) < 300_100
    assert len(last_user(rlm.transport.root_requests()[1])) < 20_400


# -------------------------------------------------------------------------------------- budgets


def test_max_steps_stops_a_model_that_never_finishes(rlm_inproc) -> None:
    rlm = rlm_inproc(NEVER_DONE, max_steps=3, best_effort=False)
    res = rlm.run("q", "ctx")
    assert not res.ok and res.status == "stopped" and res.answer is None
    assert res.stop_reason == "step budget exhausted: 3 steps without FINAL (max_steps=3)"
    assert len(res.steps) == 3 and all(s.output_text == "still looking\n" for s in res.steps)
    assert len(rlm.transport.root_requests()) == 3


def test_max_subcalls_ends_the_run_even_if_the_code_swallows_it(rlm_inproc) -> None:
    code = ("try:\n    llm_batch(['a', 'b', 'c'])\nexcept Exception as exc:\n"
            "    print('caught', type(exc).__name__)")
    rlm = rlm_inproc([repl_block(code), "FINAL(should not get here)"], max_subcalls=2,
                     best_effort=False)
    res = rlm.run("q", "ctx")
    assert res.status == "stopped" and res.answer is None
    assert res.stop_reason.startswith("sub-call budget exhausted") and "max_subcalls=2" in res.stop_reason
    assert res.steps[0].output_text.startswith("caught SubcallBudgetExceeded")  # partial kept
    assert rlm.transport.sub_requests() == [] and len(rlm.transport.root_requests()) == 1


def test_max_tokens_stops_between_steps(rlm_inproc) -> None:
    limit = 2_000
    rlm = rlm_inproc(NEVER_DONE, max_tokens=limit, max_steps=50)
    res = rlm.run("q", "ctx")
    assert res.status == "stopped" and res.stop_reason.startswith("token budget exhausted")
    assert f"max_tokens={limit:,}" in res.stop_reason
    used = [s.usage.total_tokens for s in res.steps]
    assert sum(used[:-1]) < limit <= sum(used)  # stopped at the first step boundary past it
    assert len(res.steps) >= 2


def test_max_cost_with_a_price_table(rlm_inproc) -> None:
    prices = {"scripted-root": {"prompt": 1000.0, "completion": 1000.0}}  # $0.001 per token
    rlm = rlm_inproc(NEVER_DONE, prices=prices, max_cost=2.0, max_steps=50)
    res = rlm.run("q", "ctx")
    assert res.status == "stopped" and res.stop_reason.startswith("cost budget exhausted: $")
    assert "max_cost=$2" in res.stop_reason
    costs = [s.usage.cost_usd for s in res.steps]
    assert all(c == pytest.approx(s.usage.total_tokens / 1000) for c, s in zip(costs, res.steps,
                                                                              strict=True))
    assert sum(costs[:-1]) < 2.0 <= sum(costs)
    assert res.usage.cost_usd == pytest.approx(sum(costs))


def test_max_wall_time_cuts_a_slow_model_call(rlm_inproc) -> None:
    rlm = rlm_inproc(NEVER_DONE, latency=0.4, max_wall_time=1.0, max_steps=50)
    started = time.monotonic()
    res = rlm.run("q", "ctx")
    elapsed = time.monotonic() - started
    assert res.status == "stopped"
    assert res.stop_reason == "wall-time budget exhausted: 1 s (max_wall_time)"
    assert 1 <= len(res.steps) <= 3
    assert elapsed < 4.0  # the third 0.4 s call is cut at the deadline, not awaited


def test_max_wall_time_also_bounds_a_running_step(rlm_inproc) -> None:
    rlm = rlm_inproc([repl_block("while True:\n    pass"), "FINAL(late)"], max_wall_time=0.5,
                     best_effort=False,
                     step_timeout=3.0)
    started = time.monotonic()
    res = rlm.run("q", "ctx")
    assert res.stop_reason == "wall-time budget exhausted: 0.5 s (max_wall_time)"
    assert time.monotonic() - started < 2.0


def test_step_timeout_interrupts_an_infinite_loop_and_the_run_goes_on(rlm_inproc) -> None:
    rlm = rlm_inproc([repl_block("i = 0\nwhile True:\n    i += 1"),
                      repl_block("FINAL('survived, i > 0: ' + str(i > 0))")], step_timeout=0.5)
    started = time.monotonic()
    res = rlm.run("q", "ctx")
    assert res.ok and res.answer == "survived, i > 0: True"
    assert res.steps[0].error.startswith("StepTimeout: step timed out after 0.5 s")
    assert "step timed out after 0.5 s (step_timeout" in last_user(rlm.transport.root_requests()[1])
    assert time.monotonic() - started < 10


# ------------------------------------------------------------------------------------- failures


def test_retries_under_injected_faults_give_the_exact_answer(scripted_server, rlm_http,
                                                             log_context) -> None:
    srv = scripted_server(faults=FaultPlan(rate=0.3, kinds=(429, 500, 503), retry_after_s=0.01,
                                           seed=4))
    rlm = rlm_http(srv, max_retries=8)
    res = rlm.run(log_context.query + " [chunks=12]", log_context.text)
    assert res.ok, res.stop_reason
    assert res.answer == str(log_context.contains_error)
    stats = srv.model.stats.snapshot()
    assert sum(stats["faults"].values()) > 0 and stats["sub_requests"] == 12
    assert rlm.client.ledger.retries == sum(stats["faults"].values())


def test_provider_that_stays_down_ends_the_run_with_a_clear_error(scripted_server,
                                                                  rlm_http) -> None:
    srv = scripted_server(faults=FaultPlan(rate=1.0, kinds=(500, 503), retry_after_s=0.01))
    res = rlm_http(srv, max_retries=1).run("q", "ctx")
    assert res.status == "error" and res.answer is None and res.steps == []
    assert re.fullmatch(rf"root step 1: {re.escape(srv.base_url)} answered HTTP 50[03] after 1 retries: .*",
                        res.stop_reason)
    assert srv.model.stats.requests == 2


def test_closed_port_ends_the_run_with_a_clear_error(rlm_http) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    class Closed:
        base_url = f"http://127.0.0.1:{port}/v1"

    res = rlm_http(Closed, max_retries=0).run("q", "ctx")
    assert res.status == "error"
    assert res.stop_reason.startswith(f"root step 1: could not connect to {Closed.base_url} after 1 attempts")


def test_a_failed_sub_call_is_an_error_in_the_step_not_the_end(rlm_inproc) -> None:
    rlm = rlm_inproc([repl_block("llm('hi', model='gpt-not-served')"), "FINAL(went on)"],
                     max_retries=0)
    res = rlm.run("q", "ctx")
    assert res.answer == "went on"
    (call,) = res.run.subcalls.values()
    # The step's traceback names the call, whose %%llm cell carries the same id.
    assert res.steps[0].error.startswith(
        f"ModelNotFound: sub-call {call.call_id}: model 'gpt-not-served' was not found")
    assert call.status == "error" and "404" in call.error


# ---------------------------------------------------------------------------------- concurrency


def test_llm_batch_in_a_step_reaches_the_concurrency_limit(scripted_server, rlm_http) -> None:
    n, c, latency = 64, 16, 0.2
    code = (
        "import time\n"
        "prompts = [f'item {i}: say something' for i in range(64)]\n"
        "t0 = time.perf_counter()\n"
        "out = llm_batch(prompts)\n"
        "print('BATCH', len(out), time.perf_counter() - t0)\n"
        "FINAL(str(len(out)))"
    )
    srv = scripted_server(latency=latency, root_replies=[repl_block(code)])
    res = rlm_http(srv, concurrency=c).run("q", "ctx")
    assert res.answer == "64" and res.subcalls == n
    stats = srv.model.stats.snapshot()
    assert stats["sub_requests"] == n
    assert 12 <= stats["max_in_flight"] <= c, stats
    wall = float(res.steps[0].output_text.split()[2])
    floor = math.ceil(n / c) * latency
    assert floor * 0.95 <= wall < floor + 3.0


# ------------------------------------------------------------------------------------ recursion


def test_recursion_to_depth_two_then_a_plain_call(rlm_inproc) -> None:
    """Every level gets the same replies: recurse, then finish with what the level below said."""
    rlm = rlm_inproc([repl_block("r = rlm('inner question', context=context[:-1])\nprint(len(r))"),
                      repl_block("FINAL('up:' + r)")], max_depth=2)
    res = rlm.run("q", "abcd")
    assert res.ok and res.answer == "up:up:up:" + SUB_FALLBACK_ANSWER
    runs = sorted(res.runs.values(), key=lambda r: r.depth)
    assert [r.depth for r in runs] == [0, 1, 2]
    assert runs[1].parent == runs[0].run_id and runs[2].parent == runs[1].run_id
    assert runs[0].children == [runs[1].run_id] and runs[1].parent_step == 1
    assert [r.context.length for r in runs] == [4, 3, 2]
    deepest = runs[2]
    (call,) = deepest.subcalls.values()  # rlm() at the depth limit became llm()
    assert call.prompt == "inner question\n\na" and call.depth == 3
    assert rlm.client.ledger.by_depth.keys() == {0, 1, 2, 3}


def test_rlm_at_depth_limit_zero_is_one_sub_call(rlm_inproc) -> None:
    rlm = rlm_inproc([repl_block("FINAL(rlm('what is this?', context='xyz'))")], max_depth=0)
    res = rlm.run("q", "ctx")
    assert res.answer == SUB_FALLBACK_ANSWER
    assert list(res.runs) == [res.run.run_id]
    assert [m[0]["content"] for m in rlm.transport.sub_requests()] == ["what is this?\n\nxyz"]


def test_scripted_recursive_strategy_at_depth_two(scripted_server, rlm_http, make_log) -> None:
    log = make_log(800, seed=5)
    srv = scripted_server()
    rlm = rlm_http(srv, max_depth=2)
    res = rlm.run("How many log lines have level ERROR? [strategy=recurse]", log.text)
    assert res.ok, res.stop_reason
    assert res.answer == str(log.level_error) == str(count_lines(log.text, "ERROR", True))
    children = [r for r in res.runs.values() if r.depth == 1]
    assert len(children) == 2 and all(c.status == "final" for c in children)
    assert all(c.subcalls for c in children)  # the children partitioned and mapped
    by_depth = rlm.client.ledger.by_depth
    assert set(by_depth) == {0, 1, 2} and by_depth[2].requests == sum(
        len(c.subcalls) for c in children)
    assert srv.model.stats.by_policy.get("recurse", 0) >= 2


def test_recursion_usage_adds_up_over_the_run_tree(rlm_inproc) -> None:
    rlm = rlm_inproc([repl_block("r = rlm('inner', context=context[:2])\nx = llm('side')"),
                      repl_block("FINAL(r)")], max_depth=1)
    res = rlm.run("q", "abcd")
    assert len(res.runs) == 2
    ledger = rlm.client.ledger.total
    assert res.usage.requests == ledger.requests == len(rlm.transport.requests)
    assert res.usage.prompt_tokens == ledger.prompt_tokens
    assert res.subcalls == sum(len(r.subcalls) for r in res.runs.values()) >= 3


# -------------------------------------------------------------------------- the human's controls


def test_keyboard_interrupt_in_a_step_stops_the_run(rlm_inproc) -> None:
    rlm = rlm_inproc([repl_block("print('working')\nraise KeyboardInterrupt"), "FINAL(no)"])
    res = rlm.run("q", "ctx")
    assert res.status == "stopped" and res.answer is None
    assert res.stop_reason == "interrupted during step 1"
    assert len(rlm.transport.root_requests()) == 1


def _paused_run_with_an_edited_step(rlm_inproc):
    import asyncio

    from rlm_kernel.engine import Controller, Engine
    from rlm_kernel.executor import InProcessExecutor
    from rlm_kernel.trajectory import ContextInfo, Run

    rlm = rlm_inproc([repl_block("x = 5\nprint(x)"), repl_block("FINAL(str(x * 2))")])
    cfg = rlm.config
    run = Run(run_id="rstep", query="q", model=cfg.root_model, sub_model=cfg.subcall_model,
              context=ContextInfo.describe("ctx"))
    controller = Controller(step_mode=True)
    executor = InProcessExecutor()
    engine = Engine(client=rlm.client, config=cfg, run=run, executor=executor, context="ctx",
                    controller=controller)
    asyncio.run(engine.arun())
    assert run.status == "paused" and "step mode" in run.stop_reason
    assert [s.status for s in run.steps] == ["proposed"] and "x" not in executor.namespace

    run.steps[0].code, run.steps[0].edited = "x = 7\nprint(x)", True  # the human edits the cell
    controller.request("continue")
    asyncio.run(engine.arun())
    return rlm, run


def test_step_mode_pauses_then_an_edited_step_runs_as_edited(rlm_inproc) -> None:
    rlm, run = _paused_run_with_an_edited_step(rlm_inproc)
    assert run.status == "final" and run.answer == "14"
    roots = rlm.transport.root_requests()
    assert len(roots) == 2  # the proposal was not asked for again
    assert roots[1][-1]["content"].startswith('<output step="1">\n7\n')


def test_history_after_an_edited_step_shows_the_edited_code(rlm_inproc) -> None:
    rlm, _ = _paused_run_with_an_edited_step(rlm_inproc)
    said = rlm.transport.root_requests()[1][-2]["content"]
    assert "x = 7" in said and "x = 5" not in said
