"""Bench: HTTP transports under the model client, plain and streamed (issue 13 item 4, issue 15).

Compared, each under the ``openai.AsyncOpenAI`` clients that ``LMClient`` builds:

- ``ours``: the project's ``Http11Transport`` (``fast_transport=True``, ``lm/http11.py``); a
  chunked body (a streamed answer) is handed over chunk by chunk, the connection reused after a
  complete body and closed when the body is abandoned. (It first read whole bodies; the figures
  for that, and for the streaming version as a prototype, are in the notes of issue 15.)
- ``httpx2``: httpx2's own transport (httpcore), as ``LMClient`` arranges it when
  ``fast_transport=False`` (one pool of 8 connections per 8 calls of concurrency).
- ``httpx2-1pool``: httpx2's own transport as one pool of ``c + 2`` connections (the SDK's way).
- ``aiohttp``: ``openai[aiohttp]``'s transport (``openai._vendor.httpx_aiohttp.AiohttpTransport``,
  what ``openai.DefaultAioHttpClient`` installs), one aiohttp connector of ``c + 2``.

Modes: ``plain`` (a JSON body, as ``LMClient._call`` reads it today) and ``stream``
(``stream: true`` + ``stream_options.include_usage``; SSE events read from ``aiter_bytes`` and
decoded as a streaming client would). Both call paths live here (a semaphore, ``post`` with a
pre-serialised body, plain JSON decode), so transports are compared on the same work.

Per (transport, mode): n distinct counting sub-prompts at concurrency c against ``bench/_server.py``
(the scripted server in its own process, fixed latency L); wall time vs the limit ceil(n/c)·L, and
client CPU per call (this process's user+sys over the phase / n). Median of ``--repeats`` runs,
interleaved. Plus a keep-alive round trip (sequential calls at L=0), which exposes a missing
TCP_NODELAY on either side as ~40 ms per reused-connection request (asyncio sets TCP_NODELAY on
every TCP socket it wraps, which covers the scripted server and our transport; aiohttp sets it too).

    python bench/transports.py [--n 1000] [--c 64] [--latency 0.25] [--repeats 3]
        [--transports ours httpx2 httpx2-1pool aiohttp] [--modes plain stream]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx2  # noqa: E402
from _common import Server, ceil_limit, cpu, figure, greedy_limit, save  # noqa: E402
from subcalls import prompts  # noqa: E402

from rlm_kernel.config import RLMConfig  # noqa: E402
from rlm_kernel.lm import LMClient  # noqa: E402
from rlm_kernel.lm.client import _dumps, _loads  # noqa: E402

TRANSPORTS = ("ours", "httpx2", "httpx2-1pool", "aiohttp")


# ------------------------------------------------------------------------------ the clients
def make_client(name: str, base_url: str, c: int) -> LMClient:
    cfg = RLMConfig(base_url=base_url, api_key="bench", model="scripted-root",
                    sub_model="scripted-sub", concurrency=c, fast_transport=(name == "ours"))
    limits = httpx2.Limits(max_connections=c + 2, max_keepalive_connections=c + 2)
    transport: httpx2.AsyncBaseTransport | None = None
    if name == "httpx2-1pool":
        transport = httpx2.AsyncHTTPTransport(limits=limits)
    elif name == "aiohttp":
        from openai._vendor.httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits)
    return LMClient(cfg, transport=transport)


def _pool(client: LMClient) -> int:
    load = client._load
    return min(range(len(load)), key=load.__getitem__) if len(load) > 1 else 0


async def plain_call(client: LMClient, messages: list[dict[str, Any]]) -> str:
    async with client._sem:
        pool = _pool(client)
        client._load[pool] += 1
        try:
            raw = await client._clients[pool].post(
                "/chat/completions", cast_to=httpx2.Response,
                content=_dumps({"model": "scripted-sub", "messages": messages}))
            data = _loads(raw.content)
        finally:
            client._load[pool] -= 1
    return str(data["choices"][0]["message"]["content"])


async def stream_call(client: LMClient, messages: list[dict[str, Any]]) -> str:
    """Stream the reply: the text from content deltas, and the finish reason and usage seen."""
    async with client._sem:
        pool = _pool(client)
        client._load[pool] += 1
        try:
            resp = await client._clients[pool].post(
                "/chat/completions", cast_to=httpx2.Response, stream=True,
                content=_dumps({"model": "scripted-sub", "messages": messages, "stream": True,
                                "stream_options": {"include_usage": True}}))
            parts: list[str] = []
            finish = usage = None
            buf = b""
            try:
                async for piece in resp.aiter_bytes():
                    buf += piece
                    while True:
                        end = buf.find(b"\n\n")
                        if end < 0:
                            break
                        event, buf = buf[:end], buf[end + 2:]
                        if not event.startswith(b"data: ") or event == b"data: [DONE]":
                            continue
                        chunk = json.loads(event[6:])
                        usage = chunk.get("usage") or usage
                        for choice in chunk.get("choices") or ():
                            text = (choice.get("delta") or {}).get("content")
                            if text:
                                parts.append(text)
                            finish = choice.get("finish_reason") or finish
            finally:
                await resp.aclose()
        finally:
            client._load[pool] -= 1
    assert finish == "stop" and usage is not None, (finish, usage)
    return "".join(parts)


def one(server: Server, name: str, mode: str, n: int, c: int, tag: str) -> dict[str, Any]:
    client = make_client(name, server.base_url, c)
    call = stream_call if mode == "stream" else plain_call
    try:
        warm = [[{"role": "user", "content": f"warm {i}"}] for i in range(c)]

        async def batch(msgs: list[list[dict[str, Any]]]) -> list[str]:
            return list(await asyncio.gather(*(call(client, m) for m in msgs)))

        client.loop.run(batch(warm))
        server.log()
        msgs = [[{"role": "user", "content": p}] for p in prompts(n, tag, 4000)]
        t0, c0 = time.perf_counter(), cpu()
        answers = client.loop.run(batch(msgs))
        wall, cpu_s = time.perf_counter() - t0, cpu() - c0
    finally:
        client.close()
    log = server.log()
    assert answers == ["1"] * n, answers[:3]
    limit = greedy_limit(log["latencies"], c)
    return {"transport": name, "mode": mode, "n": n, "c": c, "wall_s": wall, "limit_s": limit,
            "ratio": wall / limit, "cpu_ms_per_call": 1000 * cpu_s / n,
            "loadavg_1min": os.getloadavg()[0]}


def round_trip_ms(server: Server, name: str, mode: str, calls: int = 100) -> float:
    """Median ms of sequential calls on one kept-alive connection, at zero server latency."""
    client = make_client(name, server.base_url, 1)
    call = stream_call if mode == "stream" else plain_call
    times: list[float] = []

    async def seq() -> None:
        for i in range(calls):
            t = time.perf_counter()
            await call(client, [{"role": "user", "content": f"rtt {i}"}])
            times.append(1000 * (time.perf_counter() - t))

    try:
        client.loop.run(seq())
    finally:
        client.close()
    server.log()
    return statistics.median(times[10:])


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--c", type=int, default=64)
    p.add_argument("--latency", type=float, default=0.25)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--transports", nargs="+", choices=TRANSPORTS, default=list(TRANSPORTS))
    p.add_argument("--modes", nargs="+", choices=("plain", "stream"), default=["plain", "stream"])
    a = p.parse_args(argv)
    combos = [(t, m) for t in a.transports for m in a.modes]
    rtt: dict[tuple[str, str], float] = {}
    with Server(0.0) as server:
        for t, m in combos:
            rtt[t, m] = round_trip_ms(server, t, m)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {k: [] for k in combos}
    with Server(a.latency) as server:
        for r in range(a.repeats):
            for t, m in combos:  # interleaved, so machine load hits every transport alike
                runs[t, m].append(one(server, t, m, a.n, a.c, f"r{r}{t}{m}"))
    rows = []
    for (t, m), rs in runs.items():
        row = {"transport": t, "mode": m, "n": a.n, "c": a.c, "latency": a.latency,
               "limit_s": ceil_limit(a.n, a.c, a.latency),
               "ratio": statistics.median(x["ratio"] for x in rs),
               "cpu_ms_per_call": statistics.median(x["cpu_ms_per_call"] for x in rs),
               "ratios": [round(x["ratio"], 3) for x in rs],
               "cpu_ms": [round(x["cpu_ms_per_call"], 2) for x in rs],
               "round_trip_ms": rtt[t, m],
               "loadavg_1min": [round(x["loadavg_1min"], 1) for x in rs]}
        rows.append(row)
        figure(f"transports transport={t} mode={m} n={a.n} c={a.c} L={a.latency} "
               f"ratio={row['ratio']:.3f} cpu_ms_per_call={row['cpu_ms_per_call']:.2f} "
               f"round_trip_ms={row['round_trip_ms']:.2f} ratios={row['ratios']} "
               f"cpu_ms={row['cpu_ms']} load1={row['loadavg_1min']}")
    save("transports", {"rows": rows})
    return rows


if __name__ == "__main__":
    main()
