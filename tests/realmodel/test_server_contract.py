"""What llama-cpp-python's server does that the client relies on (or must work around).

These pin the server's behaviour the model client is designed against (see docs): if a new server
version changes one of them, the client's handling of it must be revisited. Plain HTTP here, so
that the server's own answer is what is checked.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx2
import pytest
from realmodel_support import LlamaServer

HI = [{"role": "user", "content": "Say hello."}]
STORY = [{"role": "user", "content": "Write a very long story about a dragon and a lighthouse."}]


def _post(server: LlamaServer, messages: list[dict[str, Any]], **params: Any) -> httpx2.Response:
    return httpx2.post(f"{server.base_url}/chat/completions", timeout=120,
                       json={"model": server.model, "messages": messages, **params})


def _events(server: LlamaServer, client: httpx2.Client, messages: list[dict[str, Any]],
            **params: Any) -> list[dict[str, Any] | str]:
    """Every SSE data payload of a streamed call (JSON decoded; ``"[DONE]"`` as a string)."""
    out: list[dict[str, Any] | str] = []
    with client.stream("POST", f"{server.base_url}/chat/completions",
                       json={"model": server.model, "messages": messages, "stream": True,
                             **params}) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: "):]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_a_reply_cut_at_max_tokens_says_finish_reason_length(llama_server: LlamaServer) -> None:
    body = _post(llama_server, STORY, max_tokens=8).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 8


def test_a_stream_ends_with_finish_reason_and_done_but_no_usage(llama_server: LlamaServer) -> None:
    with httpx2.Client(timeout=120) as client:
        events = _events(llama_server, client, STORY, max_tokens=8,
                         stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    chunks = [e for e in events if isinstance(e, dict)]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
    # include_usage is accepted and ignored: a streamed call's usage is "not reported".
    assert not any(c.get("usage") for c in chunks)


def test_max_completion_tokens_is_ignored_so_only_max_tokens_bounds_a_reply(
        llama_server: LlamaServer) -> None:
    """Sending max_completion_tokens instead of max_tokens leaves the reply unbounded here."""
    with httpx2.Client(timeout=120) as client:
        got = 0
        with client.stream("POST", f"{llama_server.base_url}/chat/completions",
                           json={"model": llama_server.model, "messages": STORY, "stream": True,
                                 "max_completion_tokens": 4}) as resp:
            for line in resp.iter_lines():
                if '"content"' in line:
                    got += 1
                if got > 12:
                    break  # closing the stream stops the generation (see below)
    assert got > 12


def test_the_gemma_chat_format_drops_system_messages(llama_server: LlamaServer) -> None:
    system = {"role": "system", "content": "You write Python in ```repl blocks, one per reply."}

    def prompt_tokens(messages: list[dict[str, Any]]) -> int:
        return int(_post(llama_server, messages, max_tokens=1).json()["usage"]["prompt_tokens"])

    alone = prompt_tokens(HI)
    assert prompt_tokens([system, *HI]) == alone
    assert prompt_tokens([{"role": "user", "content": system["content"] + "\n\n" + HI[0]["content"]}
                          ]) > alone


@pytest.mark.realmodel(n_ctx=2048)
def test_an_overflow_is_a_400_naming_the_window_but_streamed_it_is_an_empty_200(
        llama_server: LlamaServer) -> None:
    big = [{"role": "user", "content": "word " * 2100}]
    resp = _post(llama_server, big, max_tokens=4)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "maximum context length is 2048 tokens" in error["message"]
    # Streamed, the server has sent 200 and its headers before it fails: no event, no message.
    with httpx2.Client(timeout=120) as client:
        try:
            events = _events(llama_server, client, big, max_tokens=4)
        except httpx2.TransportError:
            events = []
    assert events == []


def test_closing_a_stream_stops_the_generation_and_frees_the_server(
        llama_server: LlamaServer) -> None:
    with httpx2.Client(timeout=120) as client:
        tokens = 0
        with client.stream("POST", f"{llama_server.base_url}/chat/completions",
                           json={"model": llama_server.model, "messages": STORY, "stream": True,
                                 "max_tokens": 2000}) as resp:
            for line in resp.iter_lines():
                tokens += '"content"' in line
                if tokens >= 3:
                    break
    closed = time.perf_counter()
    answer = _post(llama_server, HI, max_tokens=1)
    freed = time.perf_counter() - closed
    print(f"FIGURE next request answered {freed:.2f} s after a 2000-token stream was closed")
    assert answer.status_code == 200
    assert "Disconnected from client" in llama_server.log_path.read_text(errors="replace")
    # Generous liveness bound: the abandoned 2000 tokens alone would take 40 s or more here.
    assert freed < 30


def test_a_waiting_request_cuts_a_running_stream_without_a_finish_reason(
        llama_server: LlamaServer) -> None:
    """llama-cpp-python's --interrupt_requests (default true): a stream ends at [DONE], with no
    finish_reason, as soon as another request waits. A client must not take it for an answer."""
    first: list[dict[str, Any] | str] = []
    started = threading.Event()

    def run_first() -> None:
        with httpx2.Client(timeout=300) as client, client.stream(
                "POST", f"{llama_server.base_url}/chat/completions",
                json={"model": llama_server.model, "messages": STORY, "stream": True,
                      "max_tokens": 2000}) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    data = line[len("data: "):]
                    first.append(data if data == "[DONE]" else json.loads(data))
                    started.set()

    thread = threading.Thread(target=run_first)
    thread.start()
    assert started.wait(120)
    second = _post(llama_server, HI, max_tokens=2)
    thread.join(120)
    assert second.status_code == 200
    assert first[-1] == "[DONE]"
    reasons = [c["choices"][0]["finish_reason"] for c in first if isinstance(c, dict)]
    assert reasons and all(r is None for r in reasons)
