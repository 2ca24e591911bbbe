"""The model client and the engine against a real server: bounds, streaming, cancellation, cut
replies, dropped instructions, the window. The machinery is asserted, never the answers' quality
(a 270M base model rarely writes working code)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from realmodel_support import LlamaServer

from rlm_kernel import RLM
from rlm_kernel.config import RLMConfig
from rlm_kernel.engine import Engine
from rlm_kernel.errors import RunStopped
from rlm_kernel.executor import InProcessExecutor
from rlm_kernel.lm import LMClient
from rlm_kernel.states import RunState, StepState
from rlm_kernel.trajectory import ContextInfo, Run, Step

STORY = [{"role": "user", "content": "Write a very long story about a dragon and a lighthouse."}]


def _config(server: LlamaServer, **settings: Any) -> RLMConfig:
    settings.setdefault("root_max_tokens", 24)
    settings.setdefault("sub_max_tokens", 12)
    settings.setdefault("call_timeout", 60.0)
    return RLMConfig(base_url=server.base_url, api_key="not-needed", model=server.model,
                     **settings)


@pytest.fixture
def client(llama_server: LlamaServer) -> Iterator[LMClient]:
    c = LMClient(_config(llama_server, concurrency=4, cache=False))
    yield c
    c.close()


def test_a_streamed_reply_is_bounded_and_its_usage_marked_not_reported(client: LMClient) -> None:
    pieces: list[str] = []
    comp = client.loop.run(client.acomplete(STORY, model=client.config.model, depth=0, root=True,
                                            on_text=pieces.append))
    assert comp.finish_reason == "length"  # cut at root_max_tokens=24
    assert len(pieces) > 3 and "".join(pieces) == comp.text
    # llama-cpp-python sends no usage in a stream, even when asked: counted, not invented.
    assert comp.usage.unreported == 1 and comp.usage.total_tokens == 0
    assert client.ledger.total.unreported == 1


def test_sub_calls_the_server_cuts_short_are_asked_again_whole(client: LMClient) -> None:
    """Four streams at once on llama-cpp-python: it cuts each running one when another waits
    (no finish reason). Each cut call is asked again unstreamed; all four end complete."""
    batch = [[{"role": "user", "content": f"Count from 1 to {20 + i}."}] for i in range(4)]
    results = client.loop.run(client.acomplete_many(batch, model=client.config.model, depth=1))
    assert all(not isinstance(r, BaseException) for r in results), results
    assert {r.finish_reason for r in results} == {"length"}  # type: ignore[union-attr]
    assert all(r.usage.completion_tokens == 12 for r in results)  # type: ignore[union-attr]
    assert client.cuts_streams  # remembered: only a call alone in flight streams from now on


def test_stopping_a_long_generation_frees_the_server_at_once(llama_server: LlamaServer) -> None:
    c = LMClient(_config(llama_server, root_max_tokens=2000, cache=False))
    started = threading.Event()
    fut = c.loop.submit(c.acomplete(STORY, model=c.config.model, depth=0, root=True,
                                    on_text=lambda _: started.set()))
    try:
        assert started.wait(60), "no token streamed within 60 s"
        c.stop()
        stopped = time.perf_counter()
        with pytest.raises(BaseException) as stopped_with:
            fut.result(30)
        assert isinstance(stopped_with.value, (RunStopped, concurrent.futures.CancelledError))
        answer = httpx2.post(f"{llama_server.base_url}/chat/completions", timeout=120, json={
            "model": llama_server.model, "max_tokens": 1,
            "messages": [{"role": "user", "content": "Hi"}]})
        freed = time.perf_counter() - stopped
    finally:
        c.close()
    print(f"FIGURE after Stop during a 2000-token generation, the next request was answered "
          f"in {freed:.2f} s")
    assert answer.status_code == 200
    assert freed < 10  # liveness bound; the abandoned 2000 tokens alone take 40 s or more


def test_a_cut_root_reply_is_told_to_the_model_and_in_its_thought_cell(
        llama_server: LlamaServer) -> None:
    cfg = _config(llama_server, max_steps=2, root_max_tokens=16, system_role="user")
    with RLM(config=cfg) as rlm:
        res = rlm.run("What is the first word of the context?", "alpha beta gamma")
    first = res.steps[0]
    assert first.finish_reason == "length"
    assert "your reply was cut at the limit of 16 tokens" in first.output_text
    assert res.status in ("stopped", "final") and res.stop_reason != "internal error"
    thought = [c for c in res.to_notebook().cells
               if c.metadata.get("rlm", {}).get("kind") == "thought"]
    assert "cut at the token limit" in thought[0].source


def test_instructions_move_to_the_user_message_when_the_template_drops_system(
        llama_server: LlamaServer) -> None:
    """The gemma chat format drops system messages: the first call's stream has no usage, so a
    one-token probe tells, and from the next call on the instructions lead the user message."""
    with RLM(config=_config(llama_server, max_steps=2, root_max_tokens=8)) as rlm:
        res = rlm.run("What is the first word?", "alpha beta")
        assert rlm.client.system_dropped
    assert res.run.settings["system_role"] == "user"
    # the run went on with the instructions where the model sees them (a best-effort answer
    # step may follow at the step limit)
    assert len([s for s in res.steps if not s.best_effort]) == 2


@pytest.mark.realmodel(n_ctx=2048)
def test_an_overflow_teaches_the_window_and_older_steps_are_compacted(
        llama_server: LlamaServer) -> None:
    """A resumed run whose recorded outputs no longer fit a 2048-token window: the first call
    overflows (a streamed overflow is an empty 200 here, asked again unstreamed for the 400),
    the window is read from the error, older outputs are elided, and the call goes through."""
    cfg = _config(llama_server, max_steps=4, root_max_tokens=8, output_chars=0,
                  system_role="user")
    run = Run(run_id="rwin", query="Count the lines.", model=cfg.model, settings=cfg.settings(),
              context=ContextInfo.describe("line\n" * 10))
    # Two big outputs, then a small one: compaction keeps the last step whole, so the retried
    # prompt is small (a quick call even on a slow machine).
    # (Digits: a token each for Gemma's tokenizer, so 6,000 characters surely overflow 2048.)
    numbers = " ".join(str(i) for i in range(1000, 2200))
    for n, output in ((1, numbers), (2, numbers[::-1]), (3, "3")):
        step = Step(n=n, reply=f"```repl\nprint(out{n})\n```", code=f"print(out{n})",
                    output_text=output, status=StepState.DONE)
        run.steps.append(step)
    run.status = RunState.PAUSED
    client = LMClient(cfg)
    try:
        engine = Engine(client=client, config=cfg, run=run, executor=InProcessExecutor(),
                        context="line\n" * 10)
        engine.controller.request("step")  # step mode: propose step 4, then pause
        asyncio.run(engine.arun())
    finally:
        client.close()
    assert run.stop_reason is None or "root step" not in run.stop_reason, run.stop_reason
    proposed = run.step(4)
    assert proposed is not None
    assert client.window == 2048
    assert run.elided_through >= 1 and proposed.compaction is not None
    assert "were elided from the model's view" in proposed.compaction


@pytest.mark.realmodel(n_ctx=2048)
def test_a_prompt_that_cannot_fit_ends_with_a_message_naming_the_call(
        llama_server: LlamaServer) -> None:
    with RLM(config=_config(llama_server, max_steps=2, system_role="user")) as rlm:
        res = rlm.run("word " * 2500, "alpha")
    assert res.status == "error"
    assert res.stop_reason.startswith("root step 1: ")
    assert "maximum context length is 2048 tokens" in res.stop_reason
    assert "output_chars" in res.stop_reason and "context_window" in res.stop_reason
