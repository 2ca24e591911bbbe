"""The client's lean HTTP/1.1 transport against what real endpoints send: chunked bodies, gzip,
``Connection: close``, keep-alive reuse, a dropped connection. A raw asyncio server on 127.0.0.1
answers, so every byte on the wire is the test's choice; the openai client is the real one."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import threading
from collections.abc import Iterator

import pytest

from rlm_kernel.config import RLMConfig
from rlm_kernel.lm import LMClient


def _completion(text: str) -> bytes:
    return json.dumps({
        "id": "x", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }).encode()


class RawServer:
    """Answers each request in the mode named by the prompt's first word."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.trickle = False
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", 0))
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        threading.Thread(target=main, daemon=True).start()
        ready.wait()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode().split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":")[1])
                if head.startswith(b"POST /v1/chat/completions") and self.trickle:
                    raw = bytearray()  # a slow reader: the client must wait for the socket
                    while len(raw) < length:
                        raw += await reader.read(min(65536, length - len(raw)))
                        await asyncio.sleep(0.001)
                    body = json.loads(raw)
                else:
                    body = json.loads(await reader.readexactly(length))
                self.requests += 1
                prompt = body["messages"][-1]["content"]
                mode = prompt.split()[0]
                payload = _completion(f"answer to {prompt}")
                if mode == "digest":
                    payload = _completion(hashlib.sha256(prompt.encode()).hexdigest())
                if mode == "chunked":
                    parts = [payload[:10], payload[10:25], payload[25:]]
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"transfer-encoding: chunked\r\n\r\n")
                    for p in parts:
                        writer.write(f"{len(p):x}\r\n".encode() + p + b"\r\n")
                    writer.write(b"0\r\n\r\n")
                elif mode == "gzip":
                    z = gzip.compress(payload)
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-encoding: gzip\r\ncontent-length: "
                                 + str(len(z)).encode() + b"\r\n\r\n" + z)
                elif mode == "close":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: "
                                 + str(len(payload)).encode() + b"\r\n\r\n" + payload)
                    await writer.drain()
                    writer.close()
                    return
                elif mode == "drop":  # read the request, then hang up without an answer
                    writer.close()
                    return
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: " + str(len(payload)).encode() + b"\r\n\r\n"
                                 + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def raw_server() -> Iterator[RawServer]:
    srv = RawServer()
    yield srv
    srv.stop()


def _client(srv: RawServer, **kw) -> LMClient:
    cfg = RLMConfig(base_url=srv.base_url, api_key="sk-test-transport-0000", cache=False,
                    max_retries=kw.pop("max_retries", 2), **kw)
    return LMClient(cfg)


def _ask(client: LMClient, prompt: str) -> str:
    return client.complete([{"role": "user", "content": prompt}], model="m", depth=1).text


def test_chunked_gzip_and_plain_bodies(raw_server) -> None:
    client = _client(raw_server)
    try:
        for mode in ("plain", "chunked", "gzip", "plain"):
            assert _ask(client, f"{mode} question") == f"answer to {mode} question"
        assert client.ledger.total.prompt_tokens == 12  # usage read from every body shape
        assert raw_server.connections == 1  # keep-alive: one connection served all four
    finally:
        client.close()


def test_connection_close_and_a_dropped_connection(raw_server) -> None:
    client = _client(raw_server)
    try:
        assert _ask(client, "close once") == "answer to close once"
        assert _ask(client, "plain after close") == "answer to plain after close"
        assert raw_server.connections == 2  # a closed connection is not reused
        before = raw_server.requests
        with pytest.raises(Exception, match="could not connect|connection"):
            _ask(client, "drop this")
        assert raw_server.requests - before == 3  # the client's retries: 1 + max_retries
        assert _ask(client, "plain again") == "answer to plain again"
    finally:
        client.close()


def test_parallel_calls_and_the_standard_transport(raw_server) -> None:
    for fast in (True, False):
        client = _client(raw_server, concurrency=8, fast_transport=fast)
        try:
            async def many(client: LMClient = client) -> list[str]:
                return [c.text for c in await client.acomplete_many(
                    [[{"role": "user", "content": f"plain {i}"}] for i in range(24)],
                    model="m", depth=1)]

            assert client.loop.run(many()) == [f"answer to plain {i}" for i in range(24)]
        finally:
            client.close()


def test_large_bodies_reach_a_slow_reader_whole(raw_server) -> None:
    """Multi-megabyte prompts are written in slices as the socket drains (flow control), and
    every byte arrives, also with several such calls sharing the loop."""
    raw_server.trickle = True
    # 12 MB each: more than loopback's socket buffers take (4 MB), so the writer must pause.
    prompts = [f"digest {i} " + "é" * 2_000_000 + "x" * 8_000_000 for i in range(3)]
    client = _client(raw_server, concurrency=3)
    try:
        async def many() -> list[str]:
            return [c.text for c in await client.acomplete_many(
                [[{"role": "user", "content": p}] for p in prompts], model="m", depth=1)]

        assert client.loop.run(many()) == [hashlib.sha256(p.encode()).hexdigest()
                                           for p in prompts]
        assert raw_server.requests == 3
    finally:
        client.close()
