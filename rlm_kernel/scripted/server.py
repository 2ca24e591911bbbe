"""``ScriptedServer``: the scripted model as a loopback OpenAI-compatible HTTP server.

Why a hand-written asyncio HTTP/1.1 server: the double must never be the bottleneck a benchmark
measures (1000 requests at 64-way concurrency with about a millisecond of overhead each), must not
pull in a web framework, and must exercise the openai client's real HTTP stack (keep-alive
connection pool, timeouts, retries, SSE). One event loop on one daemon thread serves every
connection; latency and hangs are ``asyncio.sleep``s, so nothing blocks and no thread is spawned
per request.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models`` and ``GET /v1/models/{id}`` (also without
the ``/v1`` prefix). Request bodies by Content-Length or chunked; streamed answers are sent chunked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
import time
from http import HTTPStatus
from typing import Any

from .model import FAULT_KINDS, FaultPlan, Reply, ScriptedModel
from .wire import DEFAULT_MODELS, NOT_AN_LLM, encode_json, error_body

__all__ = ["ScriptedServer", "main"]

_MAX_BODY = 64 * 1024 * 1024
_STREAM_LIMIT = 1024 * 1024


class _BadRequest(Exception):
    pass


class ScriptedServer:
    """Serve a :class:`ScriptedModel` on ``http://host:port/v1`` from a background thread.

    ``start()`` returns the base URL to give the openai client (``base_url=``); ``port=0`` picks a
    free port. Use as a context manager to stop it reliably.
    """

    def __init__(self, model: ScriptedModel | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.model = model or ScriptedModel()
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> str:
        """Start serving (idempotent); returns the base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        if self._thread is not None:
            return self.base_url
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="rlm-scripted-server", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self.base_url

    def stop(self) -> None:
        """Close the listening socket and every open connection (hanging requests included)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> ScriptedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(asyncio.start_server(
                self._connection, self.host, self.port, backlog=2048, limit=_STREAM_LIMIT))
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # e.g. port in use: re-raised by start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    # ------------------------------------------------------------------------------------ HTTP/1.1
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                if line in (b"\r\n", b"\n"):
                    continue
                try:
                    method, target, version = line.decode("latin-1").split()
                    headers = await self._read_headers(reader)
                    body = await self._read_body(reader, headers)
                except (_BadRequest, ValueError) as exc:
                    await self._send(writer, Reply(400, {"content-type": "application/json"},
                                                   error_body(f"Bad HTTP request: {exc}")), False)
                    break
                conn = headers.get("connection", "").lower()
                keep_alive = (conn != "close") if version == "HTTP/1.1" else (conn == "keep-alive")
                reply = await self._route(method, target.split("?", 1)[0], body)
                await self._send(writer, reply, keep_alive)
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
        headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                return headers
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise _BadRequest(f"malformed header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            total = 0
            while True:
                size = int((await reader.readline()).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                total += size
                if total > _MAX_BODY:
                    raise _BadRequest("body too large")
                parts.append(await reader.readexactly(size))
                await reader.readline()
        length = int(headers.get("content-length", "0") or 0)
        if length < 0 or length > _MAX_BODY:
            raise _BadRequest("bad Content-Length")
        return await reader.readexactly(length) if length else b""

    async def _route(self, method: str, path: str, body: bytes) -> Reply:
        path = path.rstrip("/")
        if path.startswith("/v1/"):
            path = path[3:]
        json_headers = {"content-type": "application/json", "x-scripted-model": NOT_AN_LLM}
        if path == "/chat/completions":
            if method != "POST":
                return Reply(405, json_headers, error_body("Use POST for /v1/chat/completions."))
            return await self.model.handle(body)
        if path == "/models" and method == "GET":
            return self.model.models()
        if path.startswith("/models/") and method == "GET":
            name = path[len("/models/"):]
            if name.startswith("scripted"):
                return Reply(200, json_headers, {"id": name, "object": "model", "created": 0,
                                                 "owned_by": NOT_AN_LLM})
            return Reply(404, json_headers, error_body(
                f"The model `{name}` does not exist (this is the scripted demonstration model; "
                f"try {', '.join(DEFAULT_MODELS)}).", code="model_not_found"))
        return Reply(404, json_headers, error_body(
            f"No route {method} {path} on the scripted demonstration server; it serves "
            "POST /v1/chat/completions and GET /v1/models.", code="not_found"))

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, reply: Reply, keep_alive: bool) -> None:
        status, headers, payload = reply
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        head = [f"HTTP/1.1 {status} {reason}", "server: rlm-kernel-scripted",
                f"connection: {'keep-alive' if keep_alive else 'close'}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if isinstance(payload, dict):
            data = encode_json(payload)
            head.append(f"content-length: {len(data)}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
            await writer.drain()
            return
        head.append("transfer-encoding: chunked")
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            async for chunk in payload:
                writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            await payload.aclose()  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rlm-kernel serve-scripted",
        description="Serve the rlm-kernel scripted demonstration model (deterministic rules, not "
                    "an LLM) over the OpenAI chat-completions protocol on the loopback interface.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    lat = p.add_mutually_exclusive_group()
    lat.add_argument("--latency", type=float, default=0.0, metavar="S",
                     help="seconds added to every answer")
    lat.add_argument("--latency-range", type=float, nargs=2, metavar=("LO", "HI"),
                     help="uniform random latency in [LO, HI] seconds (seeded)")
    p.add_argument("--fault-rate", type=float, default=0.0, metavar="R",
                   help="probability in 0..1 that a request fails")
    p.add_argument("--fault-kinds", default="429,500,503", metavar="K,K",
                   help=f"comma-separated kinds among {', '.join(map(str, FAULT_KINDS))}")
    p.add_argument("--hang", type=float, default=30.0, metavar="S",
                   help="seconds a 'timeout' fault hangs before answering (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latency and fault RNGs")
    return p


def _parse_kinds(text: str) -> tuple[int | str, ...]:
    kinds: list[int | str] = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        kinds.append(int(item) if item.isdigit() else item)
    return tuple(kinds)


def main(argv: list[str] | None = None) -> int:
    """``rlm-kernel serve-scripted``: print the base URL, serve until Ctrl-C (or SIGTERM)."""
    args = _parser().parse_args(argv)
    try:
        faults = FaultPlan(rate=args.fault_rate, kinds=_parse_kinds(args.fault_kinds),
                           hang_s=args.hang, seed=args.seed)
        latency = tuple(args.latency_range) if args.latency_range else args.latency
        model = ScriptedModel(latency=latency, faults=faults, seed=args.seed)
    except ValueError as exc:
        print(f"rlm-kernel serve-scripted: {exc}", file=sys.stderr)
        return 2
    server = ScriptedServer(model, host=args.host, port=args.port)
    try:
        url = server.start()
    except OSError as exc:
        print(f"rlm-kernel serve-scripted: cannot listen on {args.host}:{args.port}: {exc}",
              file=sys.stderr)
        return 1
    print(url, flush=True)
    print(f"Serving the {NOT_AN_LLM} at {url}; models {', '.join(DEFAULT_MODELS)}. "
          f"Point a client at it with OPENAI_BASE_URL={url} (any API key). Ctrl-C stops.",
          file=sys.stderr, flush=True)

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        server.stop()
        print(f"stopped; {model.stats.snapshot()['requests']} requests served", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
