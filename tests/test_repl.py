"""The REPL namespace a run injects: sub-calls, batches, recursion at the limit, FINAL, protection."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import SCRIPTED_ROOT, SCRIPTED_SUB, TEST_KEY, count_prompt

from rlm_kernel.budgets import Budget
from rlm_kernel.config import RLMConfig
from rlm_kernel.errors import (
    LLMBatchError,
    RunStopped,
    SubcallBudgetExceeded,
    TokenBudgetExceeded,
)
from rlm_kernel.lm import LMClient
from rlm_kernel.repl import PROTECTED_NAMES, Repl
from rlm_kernel.scripted import SUB_FALLBACK_ANSWER, FaultPlan, ScriptedServer
from rlm_kernel.trajectory import Run, sha256_text


@pytest.fixture
def make_repl() -> Iterator[Callable[..., tuple[Repl, dict[str, Any]]]]:
    clients: list[LMClient] = []

    def make(server: ScriptedServer, *, context: Any = "the context", depth: int = 0,
             child_runner: Any = None, **settings: Any) -> tuple[Repl, dict[str, Any]]:
        cfg = RLMConfig(base_url=server.base_url, api_key=TEST_KEY, model=SCRIPTED_ROOT,
                        sub_model=SCRIPTED_SUB, **settings)
        client = LMClient(cfg)
        clients.append(client)
        ns: dict[str, Any] = {}
        run = Run(run_id="rtest", query="q", depth=depth)
        repl = Repl(ns, context=context, client=client, config=cfg, run=run,
                    budget=Budget(cfg, client.ledger), child_runner=child_runner)
        return repl, ns

    yield make
    for client in clients:
        client.close()


def test_names_and_aliases_are_injected(scripted_server, make_repl) -> None:
    repl, ns = make_repl(scripted_server(), context=[1, 2])
    assert set(PROTECTED_NAMES) <= set(ns)
    assert ns["context"] == [1, 2]
    assert ns["llm_query"] == ns["llm"] and ns["llm_query_batched"] == ns["llm_batch"]


def test_llm_records_the_call(scripted_server, make_repl) -> None:
    srv = scripted_server()
    repl, ns = make_repl(srv)
    repl.current_step = 2
    assert ns["llm"](count_prompt(4)) == "4"
    (call,) = repl.run.subcalls.values()
    assert call.status == "ok" and call.response == "4" and call.step == 2
    assert call.depth == 1 and call.model == SCRIPTED_SUB
    assert call.prompt == count_prompt(4)  # short: kept whole
    assert call.usage.requests == 1 and repl.run.usage.requests == 1
    assert ns["llm"]("hello", model="scripted-other") == SUB_FALLBACK_ANSWER
    assert srv.model.stats.sub_requests == 2


def test_long_prompt_is_recorded_as_preview_and_hash(scripted_server, make_repl) -> None:
    repl, ns = make_repl(scripted_server(), record_prompt_chars=500)
    long_prompt = count_prompt(300)
    assert len(long_prompt) > 500
    assert ns["llm"](long_prompt) == "300"
    (call,) = repl.run.subcalls.values()
    assert call.prompt is None
    assert call.prompt_chars == len(long_prompt)
    assert call.prompt_sha256 == sha256_text(long_prompt)
    assert "characters omitted" in call.prompt_preview and len(call.prompt_preview) < 500
    assert repl.prompts[call.call_id] == long_prompt  # the session keeps the full prompt


def test_llm_batch_keeps_prompt_order(scripted_server, make_repl) -> None:
    srv = scripted_server(latency=(0.0, 0.05))  # answers arrive out of order
    repl, ns = make_repl(srv)
    answers = ns["llm_batch"]([count_prompt(i, tag=i) for i in range(25)])
    assert answers == [str(i) for i in range(25)]
    calls = sorted(repl.run.subcalls.values(), key=lambda c: c.batch_index)
    assert [c.batch_index for c in calls] == list(range(25))
    assert len({c.batch_id for c in calls}) == 1
    assert ns["llm_batch"]([]) == []
    with pytest.raises(TypeError, match="for one prompt use llm"):
        ns["llm_batch"]("one prompt")


def test_llm_batch_partial_failure_raises_with_results(scripted_server, make_repl) -> None:
    srv = scripted_server(faults=FaultPlan(rate=0.5, kinds=(500,), retry_after_s=0.01, seed=9))
    repl, ns = make_repl(srv, max_retries=0)
    prompts = [count_prompt(i, tag=i) for i in range(16)]
    with pytest.raises(LLMBatchError) as err:
        ns["llm_batch"](prompts)
    exc = err.value
    assert len(exc.results) == 16
    failed = {i for i, r in enumerate(exc.results) if r is None}
    assert failed and failed == set(exc.errors) and len(failed) < 16
    assert all(exc.results[i] == str(i) for i in range(16) if i not in failed)
    assert f"{len(failed)} of 16 calls failed" in str(exc)
    statuses = [c.status for c in sorted(repl.run.subcalls.values(), key=lambda c: c.batch_index)]
    assert [s == "error" for s in statuses] == [i in failed for i in range(16)]

    # Retrying the batch pays only for the failures: the successes are cached.
    srv.model.faults = FaultPlan()
    before = srv.model.stats.sub_requests
    assert ns["llm_batch"](prompts) == [str(i) for i in range(16)]
    assert srv.model.stats.sub_requests - before == len(failed)


def test_llm_batch_over_a_generator_builds_prompts_only_as_slots_free(scripted_server,
                                                                      make_repl) -> None:
    srv = scripted_server(latency=(0.02, 0.08))
    repl, ns = make_repl(srv, concurrency=3)
    built: list[int] = []
    ahead: list[int] = []  # at each pull: prompts alive (not yet answered), this one included

    def prompts() -> Iterator[str]:
        for i in range(20):
            done = sum(c.status == "ok" for c in repl.run.subcalls.values())
            ahead.append(len(built) + 1 - done)
            built.append(i)
            yield count_prompt(i, tag=i)

    repl.current_step = 1
    assert ns["llm_batch"](prompts()) == [str(i) for i in range(20)]
    assert max(ahead) <= 3, ahead  # never more prompts alive than the 3 slots
    assert max(ahead) == 3  # ...and the slots were used
    calls = sorted(repl.run.subcalls.values(), key=lambda c: c.batch_index)
    assert [c.batch_index for c in calls] == list(range(20))
    assert len({c.batch_id for c in calls}) == 1
    assert [c.call_id for c in calls] == [f"rtest-s1c{i}" for i in range(1, 21)]  # as a list's
    assert srv.model.stats.max_in_flight == 3
    assert ns["llm_batch"](p for p in []) == []
    assert ns["llm_batch"](map(str.upper, ["a", "b"])) == [SUB_FALLBACK_ANSWER] * 2


def test_llm_batch_generator_failing_midway_lets_sent_calls_land(scripted_server,
                                                                make_repl) -> None:
    srv = scripted_server(latency=0.05)
    repl, ns = make_repl(srv, concurrency=4)

    def prompts() -> Iterator[str]:
        for i in range(3):
            yield count_prompt(i, tag=i)
        raise ValueError("bad chunk")

    with pytest.raises(ValueError, match="bad chunk"):
        ns["llm_batch"](prompts())
    assert sorted(c.status for c in repl.run.subcalls.values()) == ["ok"] * 3
    # They were paid for and cached: a fixed re-run pays nothing for them.
    before = srv.model.stats.sub_requests
    assert ns["llm_batch"](count_prompt(i, tag=i) for i in range(4)) == ["0", "1", "2", "3"]
    assert srv.model.stats.sub_requests - before == 1

    repl, ns = make_repl(srv, max_subcalls=2)
    with pytest.raises(SubcallBudgetExceeded):
        ns["llm_batch"](f"q{i}" for i in range(5))
    assert [c.status for c in repl.run.subcalls.values()] == ["ok", "ok"]


def test_llm_batch_generator_is_cancelled_by_stop(scripted_server, make_repl) -> None:
    srv = scripted_server(latency=5.0)
    repl, ns = make_repl(srv, concurrency=2)
    threading.Timer(0.5, repl.client.stop).start()
    started = time.monotonic()
    with pytest.raises(RunStopped):
        ns["llm_batch"](f"slow {i}" for i in range(10))
    assert time.monotonic() - started < 4  # not the 5 s a call would take
    assert sorted(c.status for c in repl.run.subcalls.values()) == ["cancelled"] * 2


def test_subcall_budget_refuses_a_batch_before_sending(scripted_server, make_repl) -> None:
    srv = scripted_server()
    repl, ns = make_repl(srv, max_subcalls=4)
    ns["llm"]("one")
    with pytest.raises(SubcallBudgetExceeded, match="1 made, 5 more asked, max_subcalls=4"):
        ns["llm_batch"]([f"p{i}" for i in range(5)])
    assert srv.model.stats.requests == 1
    assert repl.budget.exceeded is not None  # remembered even if model code swallows it
    with pytest.raises(SubcallBudgetExceeded):
        ns["llm"]("would fit, but the run is already over budget")
    assert srv.model.stats.requests == 1

    repl, ns = make_repl(srv, max_subcalls=4)
    assert ns["llm_batch"](["a", "b", "c", "d"]) == [SUB_FALLBACK_ANSWER] * 4  # exactly the limit


@pytest.mark.parametrize("as_generator", [False, True])
def test_a_spent_token_budget_stops_a_batch_from_sending_more(scripted_server, make_repl,
                                                             as_generator) -> None:
    srv = scripted_server(latency=0.02)
    repl, ns = make_repl(srv, max_tokens=300, concurrency=2)
    prompts = [count_prompt(i, tag=i) for i in range(40)]
    with pytest.raises(TokenBudgetExceeded, match="max_tokens=300"):
        ns["llm_batch"](iter(prompts) if as_generator else prompts)
    per_call = srv.model.stats.prompt_tokens // max(1, srv.model.stats.requests)
    sent = srv.model.stats.sub_requests
    # Sending stopped once the budget was spent: at most one slot-full past it, not all 40.
    assert sent <= 300 // per_call + 1 + 2, (sent, per_call)
    calls = list(repl.run.subcalls.values())
    assert sum(c.status == "ok" for c in calls) == sent
    unsent = [c for c in calls if c.status != "ok"]
    if as_generator:
        assert not unsent  # the generator was simply not pulled further
    else:  # a list's calls were all made: the unsent ones say why
        assert unsent and all("token budget exhausted" in c.error for c in unsent)
    assert repl.budget.exceeded is not None


def test_stopped_client_refuses_new_calls(scripted_server, make_repl) -> None:
    srv = scripted_server()
    repl, ns = make_repl(srv)
    repl.client.stop()
    with pytest.raises(RunStopped):
        ns["llm"]("hi")
    assert srv.model.stats.requests == 0


def test_protected_names_are_restored(scripted_server, make_repl) -> None:
    repl, ns = make_repl(scripted_server(), context="ctx")
    original = {n: ns[n] for n in PROTECTED_NAMES}
    del ns["llm"]
    ns["context"] = "rebound"
    ns["FINAL"] = print
    ns["my_var"] = 1
    assert sorted(repl.restore()) == ["FINAL", "context", "llm"]
    assert all(ns[n] is original[n] for n in PROTECTED_NAMES)
    assert ns["my_var"] == 1
    assert repl.restore() == []


def test_final_and_final_var(scripted_server, make_repl) -> None:
    repl, ns = make_repl(scripted_server())
    ns["FINAL"](42)
    assert repl.final == "42"
    ns["result"] = ["a", "b"]
    ns["FINAL_VAR"]("result")
    assert repl.final == "['a', 'b']"
    ns["FINAL_VAR"](" result ")
    assert repl.final == "['a', 'b']"
    ns["FINAL_VAR"]("a sentence that is not a name")  # given the value itself: accepted
    assert repl.final == "a sentence that is not a name"
    with pytest.raises(NameError) as err:
        ns["FINAL_VAR"]("missing")
    assert "no REPL variable named 'missing'" in str(err.value)
    assert "result" in str(err.value)  # tells the model what it does have


def test_show_vars_lists_only_the_models_variables(scripted_server, make_repl, capsys) -> None:
    repl, ns = make_repl(scripted_server())
    ns["SHOW_VARS"]()
    assert capsys.readouterr().out == "No variables yet.\n"
    exec("import re\nchunks = ['a', 'b']\ncount = 3\n_private = 1", ns)
    ns["SHOW_VARS"]()
    out = capsys.readouterr().out
    assert "chunks: list, len 2" in out and "count: int" in out
    assert "re" not in out.split() and "_private" not in out and "llm" not in out


def test_rlm_at_the_depth_limit_is_a_plain_llm_call(scripted_server, make_repl) -> None:
    srv = scripted_server()
    children: list[tuple[str, Any, int]] = []
    repl, ns = make_repl(srv, max_depth=1, depth=1,
                         child_runner=lambda specs, d, m: [children.append((q, c, d)) or "child"
                                                           for q, c in specs])
    assert ns["rlm"]("What is in here?", context="some text") == SUB_FALLBACK_ANSWER
    assert children == []
    (call,) = repl.run.subcalls.values()
    assert call.prompt == "What is in here?\n\nsome text"
    assert srv.model.stats.sub_requests == 1


def test_rlm_below_the_limit_starts_a_child(scripted_server, make_repl) -> None:
    srv = scripted_server()
    children: list[tuple[str, Any, int]] = []
    repl, ns = make_repl(srv, max_depth=2, depth=1,
                         child_runner=lambda specs, d, m: [
                             children.append((q, c, d)) or "child answer" for q, c in specs])
    assert ns["rlm"]("sub question", context=[1, 2]) == "child answer"
    assert children == [("sub question", [1, 2], 2)]
    assert srv.model.stats.requests == 0
