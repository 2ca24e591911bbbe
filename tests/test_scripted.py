"""The scripted model: wire protocol, policies, faults and stats, through the real openai client.

Every model call goes over real HTTP on 127.0.0.1 (``ScriptedServer``) or through the in-process
``ScriptedTransport``; the openai client is never mocked. The policy tests run the code each root
policy writes in a plain namespace with tiny ``llm``/``llm_batch``/``rlm``/``FINAL`` functions, so
they check both that the code is valid Python for the REPL and that it yields the exact answer.
"""

from __future__ import annotations

import asyncio
import io
import math
import random
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import redirect_stdout
from typing import Any

import httpx2
import openai
import pytest

from rlm_kernel.prompts import first_user_message, step_feedback, system_prompt
from rlm_kernel.scripted import (
    NOT_AN_LLM,
    ROOT_FALLBACK_ANSWER,
    SUB_FALLBACK_ANSWER,
    SYSTEM_FINGERPRINT,
    FaultPlan,
    ScriptedModel,
    ScriptedServer,
    ScriptedTransport,
    policies,
    register_root_policy,
    register_sub_policy,
)
from rlm_kernel.scripted.wire import count_tokens
from rlm_kernel.trajectory import ContextInfo

# ------------------------------------------------------------------------------------- data

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
         "sierra", "tango", "uniform", "victor", "whiskey"]


def haystack(n_chars: int, needle: str | None, *, seed: int = 1, depth: float = 0.6) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < n_chars:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize()
        sentence += f" {rng.randint(10, 999)}. "  # short numbers: never mistaken for the value
        parts.append(sentence)
        size += len(sentence)
    text = "".join(parts)[:n_chars]
    if needle:
        at = text.rfind(". ", 0, int(len(text) * depth)) + 2
        text = text[:at] + needle + " " + text[at:]
    return text


def log_text(n_lines: int, *, seed: int = 2) -> tuple[str, int, int]:
    """A log; returns (text, lines whose level is ERROR, lines containing the text 'ERROR')."""
    rng = random.Random(seed)
    lines, level_error, contains_error = [], 0, 0
    for i in range(n_lines):
        level = rng.choices(["INFO", "DEBUG", "WARN", "ERROR"], [60, 20, 12, 8])[0]
        msg = rng.choice(["request served", "cache miss", "retrying upstream",
                          "ERRORS cleared from queue", "user login", "disk at 71%"])
        line = f"2025-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z {level} svc-{i % 7} {msg}"
        lines.append(line)
        level_error += level == "ERROR"
        contains_error += "ERROR" in line
    return "\n".join(lines), level_error, contains_error


# ------------------------------------------------------------------------------------- a tiny REPL

FENCE_RE = re.compile(r"```(?:repl|python)\n(.*?)```", re.S)
PROSE_FINAL_VAR_RE = re.compile(r"^FINAL_VAR\((.*?)\)\s*$", re.M)
PROSE_FINAL_RE = re.compile(r"^FINAL\((.*)\)\s*$", re.M)


class _Final(Exception):
    def __init__(self, value: str) -> None:
        self.value = value


RootFn = Callable[[list[dict[str, str]]], str]
SubFn = Callable[[str], str]


def direct_root(messages: list[dict[str, str]]) -> str:
    return policies.root_reply(tuple((m["role"], m["content"]) for m in messages))[1]


def direct_sub(prompt: str) -> str:
    return policies.sub_answer(prompt)[1]


def run_root(query: str, context: Any, *, root: RootFn = direct_root, sub: SubFn = direct_sub,
             calls: list[str] | None = None, max_steps: int = 8) -> tuple[str, int]:
    """Play a root conversation as the engine would (prompts from ``rlm_kernel.prompts``);
    return (final answer, steps used). Code errors fail the test: policy code must be correct."""
    info = ContextInfo.describe(context)
    messages = [{"role": "system", "content": system_prompt(info)},
                {"role": "user", "content": first_user_message(query, info, max_steps)}]
    calls = calls if calls is not None else []
    ns: dict[str, Any] = {}

    def FINAL(answer: object) -> None:  # noqa: N802
        raise _Final(str(answer))

    def FINAL_VAR(name: str) -> None:  # noqa: N802
        raise _Final(str(ns[name]))

    def llm(prompt: str) -> str:
        calls.append(prompt)
        return sub(prompt)

    def llm_batch(prompts: list[str]) -> list[str]:
        return [llm(p) for p in prompts]

    def rlm(q: str, context: Any = None) -> str:
        return run_root(q, context, root=root, sub=sub, calls=calls, max_steps=max_steps)[0]

    ns.update(context=context, llm=llm, llm_batch=llm_batch, rlm=rlm, FINAL=FINAL,
              FINAL_VAR=FINAL_VAR, SHOW_VARS=lambda: None)
    for step in range(1, max_steps + 1):
        reply = root(messages)
        messages.append({"role": "assistant", "content": reply})
        blocks = FENCE_RE.findall(reply)
        assert len(blocks) <= 1, reply
        out = io.StringIO()
        if blocks:
            try:
                with redirect_stdout(out):
                    exec(blocks[0], ns)
            except _Final as final:
                return final.value, step
        prose = FENCE_RE.sub("", reply)
        if m := PROSE_FINAL_VAR_RE.search(prose):
            return str(ns[m.group(1).strip("'\" ")]), step
        if m := PROSE_FINAL_RE.search(prose):
            return m.group(1), step
        messages.append({"role": "user", "content": step_feedback(
            step, out.getvalue(), steps_left=max_steps - step)})
    raise AssertionError(f"no FINAL after {max_steps} steps; last reply:\n{reply}")


# ------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def server():
    srv = ScriptedServer(ScriptedModel())
    srv.start()
    yield srv
    srv.stop()


def sync_client(srv: ScriptedServer, **kw: Any) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=srv.base_url, api_key="scripted", **kw)


def transport_client(model: ScriptedModel, **kw: Any) -> openai.AsyncOpenAI:
    kw.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url="http://scripted.local/v1", api_key="scripted",
                              http_client=httpx2.AsyncClient(transport=ScriptedTransport(model)),
                              **kw)


def root_messages(query: str, context: Any) -> list[dict[str, str]]:
    info = ContextInfo.describe(context)
    return [{"role": "system", "content": system_prompt(info)},
            {"role": "user", "content": first_user_message(query, info, 10)}]


NEEDLE_Q = "What is the special magic number for curious-guava mentioned in the provided text?"

# ------------------------------------------------------------------------------------- policies


def test_needle_regex_path_exact_answer():
    ctx = haystack(200_000, "One of the special magic numbers for curious-guava is: 4817302.")
    calls: list[str] = []
    answer, steps = run_root(NEEDLE_Q, ctx, calls=calls)
    assert (answer, steps, calls) == ("4817302", 3, [])


def test_needle_uuid_falls_back_to_chunked_sub_calls():
    value = str(uuid.UUID(int=random.Random(5).getrandbits(128)))
    ctx = haystack(200_000, f"Note for silent-otter: its special magic uuid reads {value}.")
    calls: list[str] = []
    q = "What is the special magic uuid for silent-otter mentioned in the provided text?"
    answer, steps = run_root(q, ctx, calls=calls)
    assert answer == value and steps == 4
    assert len(calls) == math.ceil(len(ctx) / policies.DEFAULT_CHUNK_CHARS)
    calls.clear()
    assert run_root(q + " [chunks=4]", ctx, calls=calls)[0] == value
    assert len(calls) == 4


def test_needle_absent_says_not_found():
    answer, _ = run_root(NEEDLE_Q, haystack(50_000, None))
    assert answer.startswith("Not found") and "curious-guava" in answer


@pytest.mark.parametrize("query,which", [
    ("How many lines contain 'ERROR'? [chunks=7]", "contains"),
    ('How many log lines have level ERROR?', "level"),
    ('Count the lines containing the word "ERROR".', "level"),
])
def test_counting_partition_map_sum(query: str, which: str):
    ctx, level_error, contains_error = log_text(6000)
    assert contains_error > level_error > 0
    calls: list[str] = []
    answer, steps = run_root(query, ctx, calls=calls)
    assert answer == str(contains_error if which == "contains" else level_error)
    assert steps == 3
    expected_chunks = 7 if "[chunks=7]" in query else math.ceil(len(ctx) / 20_000)
    assert len(calls) == expected_chunks


def test_recursion_splits_in_two_sub_rlms():
    ctx, level_error, _ = log_text(3000, seed=9)
    calls: list[str] = []
    answer, steps = run_root("How many log lines have level ERROR? [strategy=recurse] [chunks=3]",
                             ctx, calls=calls)
    assert answer == str(level_error) and steps == 3
    assert len(calls) == 6  # two child RLMs, each forced to 3 chunks


def test_fallbacks_say_not_an_llm():
    answer, steps = run_root("Summarise the plot of this novel.", "Call me Ishmael.")
    assert answer == ROOT_FALLBACK_ANSWER and steps == 1
    assert "not an LLM" in answer and "OPENAI_API_KEY" in answer
    assert "not an LLM" in SUB_FALLBACK_ANSWER
    assert direct_sub("What is the capital of France?") == SUB_FALLBACK_ANSWER


def test_policy_code_handles_list_context():
    ctx, level_error, _ = log_text(500, seed=3)
    answer, _ = run_root("How many log lines have level ERROR?", ctx.split("\n"))
    assert answer == str(level_error)


def test_registered_policies_come_before_builtins():
    register_root_policy("test-echo", lambda v: v.directives.get("mode") == "echo",
                         lambda v: f"Echo.\n\nFINAL(step {v.step}: {v.task})")
    register_sub_policy("test-upper", lambda p: p.startswith("UPPER:"), lambda p: p[6:].upper())
    try:
        assert run_root("[mode=echo] How many lines contain 'x'?", "x")[0] == "step 1: How many lines contain 'x'?"
        assert direct_sub("UPPER:abc") == "ABC"
        assert [p.name for p in policies.root_policies()][0] == "test-echo"
    finally:
        policies.unregister_policy("test-echo")
        policies.unregister_policy("test-upper")
    assert direct_sub("UPPER:abc") == SUB_FALLBACK_ANSWER


# ------------------------------------------------------------------------------------- wire, HTTP


def test_full_runs_through_http_server(server: ScriptedServer):
    client = sync_client(server)

    def root(msgs: list[dict[str, str]]) -> str:
        r = client.chat.completions.create(model="scripted-root", messages=msgs)
        return r.choices[0].message.content or ""

    def sub(prompt: str) -> str:
        r = client.chat.completions.create(model="scripted-sub",
                                           messages=[{"role": "user", "content": prompt}])
        return r.choices[0].message.content or ""

    ctx = haystack(200_000, "One of the special magic numbers for curious-guava is: 9031177.")
    assert run_root(NEEDLE_Q, ctx, root=root, sub=sub)[0] == "9031177"
    log, level_error, _ = log_text(2000)
    assert run_root("How many log lines have level ERROR? [chunks=5]", log, root=root,
                    sub=sub)[0] == str(level_error)
    s = server.model.stats.snapshot()
    assert s["root_requests"] == 6 and s["sub_requests"] == 5
    assert s["by_policy"] == {"needle": 3, "count": 8}


def test_plain_and_streaming_with_usage(server: ScriptedServer):
    client = sync_client(server)
    msgs = root_messages(NEEDLE_Q, "abc")
    r = client.chat.completions.create(model="scripted-root", messages=msgs)
    content = r.choices[0].message.content or ""
    assert "```repl" in content and r.choices[0].finish_reason == "stop"
    assert r.system_fingerprint == SYSTEM_FINGERPRINT and "not-an-llm" in r.system_fingerprint
    assert r.object == "chat.completion" and r.model == "scripted-root"
    prompt_tokens = sum(count_tokens(m["content"]) for m in msgs)
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (prompt_tokens, count_tokens(content))
    assert r.usage.total_tokens == prompt_tokens + count_tokens(content)

    stream = client.chat.completions.create(model="scripted-root", messages=msgs, stream=True,
                                            stream_options={"include_usage": True})
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces) == content and finish == "stop" and len(pieces) > 3
    assert usage is not None and usage.prompt_tokens == prompt_tokens
    assert usage.prompt_tokens_details.cached_tokens == prompt_tokens  # same prompt again

    plain_stream = client.chat.completions.create(model="scripted-root", messages=msgs, stream=True)
    assert all(c.usage is None for c in plain_stream)

    short = client.chat.completions.create(model="scripted-root", messages=msgs, max_tokens=5)
    assert short.choices[0].finish_reason == "length"
    assert len(short.choices[0].message.content or "") == 20
    models = [m.id for m in client.models.list().data]
    assert models == ["scripted-root", "scripted-sub"]
    assert server.model.stats.snapshot()["in_flight"] == 0


def test_transport_plain_streaming_and_errors():
    model = ScriptedModel()

    async def go() -> None:
        client = transport_client(model)
        msgs = root_messages("How many lines contain 'x'?", "x\ny")
        r = await client.chat.completions.create(model="scripted-root", messages=msgs)
        assert "llm_batch" not in (r.choices[0].message.content or "")  # step 1 is a peek
        stream = await client.chat.completions.create(
            model="scripted-root", messages=msgs, stream=True,
            stream_options={"include_usage": True})
        text, usage = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            usage = chunk.usage or usage
        assert text == r.choices[0].message.content and usage is not None
        with pytest.raises(openai.NotFoundError) as err:
            await client.chat.completions.create(model="gpt-4o", messages=msgs)
        assert err.value.code == "model_not_found" and "not an LLM" in err.value.message
        assert [m.id async for m in client.models.list()] == ["scripted-root", "scripted-sub"]

    asyncio.run(go())
    s = model.stats.snapshot()
    assert s["in_flight"] == 0 and s["by_status"] == {200: 2, 404: 1}


def test_cached_tokens_on_growing_conversation(server: ScriptedServer):
    client = sync_client(server)
    msgs = root_messages(NEEDLE_Q, haystack(1000, None))

    def cached(messages: list[dict[str, str]]) -> tuple[int, int, str]:
        r = client.chat.completions.create(model="scripted-root", messages=messages)
        assert r.usage is not None
        return (r.usage.prompt_tokens, r.usage.prompt_tokens_details.cached_tokens,
                r.choices[0].message.content or "")

    total, hit, reply = cached(msgs)
    assert hit == 0
    previous = total
    for step in (1, 2):
        msgs = [*msgs, {"role": "assistant", "content": reply},
                {"role": "user", "content": step_feedback(step, "some output", steps_left=5)}]
        total, hit, reply = cached(msgs)
        assert hit == previous and total > previous  # the whole earlier request is a prefix
        previous = total
    assert cached(msgs)[1] == total  # identical request: fully cached
    edited = [msgs[0], {"role": "user", "content": msgs[1]["content"] + " "}, *msgs[2:]]
    assert cached(edited)[1] == 0  # an edit early in the history breaks the prefix


def test_unknown_model_is_404_in_openai_shape(server: ScriptedServer):
    with pytest.raises(openai.NotFoundError) as err:
        sync_client(server).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 404 and err.value.code == "model_not_found"
    assert isinstance(err.value.body, dict) and err.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        sync_client(server).chat.completions.create(model="scripted-sub", messages=[])


@pytest.mark.parametrize("kind,exc", [
    (429, openai.RateLimitError), (500, openai.InternalServerError),
    (503, openai.InternalServerError),
])
def test_faults_without_retries(kind: int, exc: type[Exception]):
    model = ScriptedModel(faults=FaultPlan(rate=1.0, kinds=(kind,)))
    with ScriptedServer(model) as srv, pytest.raises(exc) as err:
        sync_client(srv).chat.completions.create(
            model="scripted-sub", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == kind  # type: ignore[attr-defined]
    assert err.value.response.headers["retry-after-ms"] == "50"  # type: ignore[attr-defined]
    assert model.stats.by_status == {kind: 1} and model.stats.faults == {str(kind): 1}


def test_timeout_fault_server_and_transport():
    model = ScriptedModel(faults=FaultPlan(rate=1.0, kinds=("timeout",), hang_s=1.0))
    with ScriptedServer(model) as srv, pytest.raises(openai.APITimeoutError):
        sync_client(srv, timeout=0.3).chat.completions.create(
            model="scripted-sub", messages=[{"role": "user", "content": "hi"}])

    async def go() -> None:
        with pytest.raises(openai.APITimeoutError):
            await transport_client(model, timeout=0.3).chat.completions.create(
                model="scripted-sub", messages=[{"role": "user", "content": "hi"}])
        # a hang shorter than the client's timeout is just a slow answer
        slow = ScriptedModel(faults=FaultPlan(rate=1.0, kinds=("timeout",), hang_s=0.1))
        r = await transport_client(slow, timeout=2).chat.completions.create(
            model="scripted-sub", messages=[{"role": "user", "content": "hi"}])
        assert "not an LLM" in (r.choices[0].message.content or "")

    asyncio.run(go())


def test_faults_with_retries_succeed():
    model = ScriptedModel(faults=FaultPlan(rate=0.4, kinds=(429, 500, 503), seed=3))
    with ScriptedServer(model) as srv:
        client = sync_client(srv, max_retries=10)
        for i in range(15):
            r = client.chat.completions.create(
                model="scripted-sub", messages=[{"role": "user", "content": f"q{i}"}])
            assert r.choices[0].message.content == SUB_FALLBACK_ANSWER
    s = model.stats.snapshot()
    assert s["by_status"][200] == 15 and sum(s["faults"].values()) >= 3
    assert s["requests"] == 15 + sum(s["faults"].values())


async def _gather(client: openai.AsyncOpenAI, n: int, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            r = await client.chat.completions.create(
                model="scripted-sub", messages=[{"role": "user", "content": f"prompt {i}"}])
            assert r.choices[0].message.content

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - t0


def test_concurrency_reaches_server_and_transport():
    model = ScriptedModel(latency=0.2)
    with ScriptedServer(model) as srv:
        client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        wall = asyncio.run(_gather(client, 64, 64))
    assert model.stats.max_in_flight >= 12 and model.stats.requests == 64
    assert wall < 3.0, wall  # 0.2 s of latency + the openai client's own CPU
    model.stats.reset()
    wall = asyncio.run(_gather(transport_client(model), 64, 16))
    assert model.stats.max_in_flight == 16 and wall < 0.2 * 4 + 1.7, wall


async def _raw_keepalive_load(port: int, n: int, concurrency: int) -> float:
    """``n`` POSTs over ``concurrency`` keep-alive connections with a minimal HTTP/1.1 client.

    Why not the openai client here: on a slow machine it spends several ms of CPU per request in
    its own process, which would hide what this test checks, the server's own overhead."""
    body = b'{"model":"scripted-sub","messages":[{"role":"user","content":"hi"}]}'
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
               b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
               % (len(body), body))
    todo = list(range(n))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while todo:
            todo.pop()
            writer.write(request)
            status = await reader.readline()
            assert b" 200 " in status, status
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0


def test_server_overhead_1000_requests_at_64():
    latency, n, c = 0.05, 1000, 64
    model = ScriptedModel(latency=latency)
    with ScriptedServer(model) as srv:
        wall = asyncio.run(_raw_keepalive_load(srv.port, n, c))
    ideal = math.ceil(n / c) * latency
    print(f"\n{n} requests at {c}: {wall:.2f} s wall vs ideal {ideal:.2f} s "
          f"({(wall - ideal) / n * 1000:.2f} ms overhead per request, client included)")
    assert model.stats.requests == n and model.stats.max_in_flight == c
    # ~0.2 ms per request measured; the margin absorbs a loaded CI machine
    assert wall < ideal + 1.5, (wall, ideal)


def test_root_replies_override_and_latency_range():
    hostile = ["no code here", "```repl\nFINAL(')')\n```", "last"]
    model = ScriptedModel(root_replies=hostile, latency=(0.0, 0.01), seed=7)

    async def go() -> list[str]:
        client = transport_client(model)
        msgs = root_messages("anything", "ctx")
        out = []
        for k in range(5):
            r = await client.chat.completions.create(model="scripted-root", messages=msgs)
            out.append(r.choices[0].message.content or "")
            msgs = [*msgs, {"role": "assistant", "content": out[-1]},
                    {"role": "user", "content": step_feedback(k + 1, "", steps_left=3)}]
        return out

    assert asyncio.run(go()) == [*hostile, "last", "last"]
    a = ScriptedModel(latency=(0.1, 0.2), seed=4)
    b = ScriptedModel(latency=(0.1, 0.2), seed=4)
    draws = [a._draw_latency() for _ in range(5)]
    assert draws == [b._draw_latency() for _ in range(5)] and all(0.1 <= d <= 0.2 for d in draws)


def test_cli_serves_until_interrupted():
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlm_kernel.scripted.server", "--port", "0", "--latency", "0.01",
         "--seed", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = (proc.stdout.readline() if proc.stdout else "").strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", url), url
        r = openai.OpenAI(base_url=url, api_key="x", max_retries=0).chat.completions.create(
            model="scripted-sub", messages=[{"role": "user", "content": "hello"}])
        assert r.choices[0].message.content == SUB_FALLBACK_ANSWER
        proc.send_signal(2)  # SIGINT, as Ctrl-C
        assert proc.wait(timeout=10) == 0
        assert NOT_AN_LLM in (proc.stderr.read() if proc.stderr else "")
    finally:
        if proc.poll() is None:
            proc.kill()
