"""A scripted server in its own process, for the benchmarks (so its CPU is not the client's).

Run as ``python bench/_server.py --latency LO HI --seed S``: prints the base URL, then answers
commands on stdin, one per line:

- ``log``: prints one JSON line ``{"latencies": [...], "root": [[messages...], ...],
  "spans": [[is_root, start, end], ...], "stats": {...}}`` (latencies drawn since the last ``log``,
  in arrival order; the messages of every root request; each request's time.monotonic span, the
  same clock as the benchmark process) and clears the log.
- ``quit`` (or EOF): stops.

Why a subclass here and not in the package: request logging, the replies for peers' conventions
and trivial runs (``bench/_bench_policies.py``) are benchmark instruments only.

TCP_NODELAY: without it a reused connection waits for a delayed ACK (~40 ms) per response, which
would hide real differences. asyncio already sets it on every accepted TCP socket; this server sets
it again on each connection (so it holds whatever the package's server does) and reports, in
``stats.nodelay``, how many connections had it already and how many it had to set.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_policies import bench_reply  # noqa: E402

from rlm_kernel.scripted import ScriptedModel, ScriptedServer, policies  # noqa: E402


class LoggingModel(ScriptedModel):
    def __init__(self, **kw):
        super().__init__(**kw)
        self._log_lock = threading.Lock()
        self.latencies: list[float] = []
        self.root: list[list[dict]] = []
        self.spans: list[tuple[bool, float, float]] = []  # (root?, start, end), time.monotonic

    def _draw_latency(self) -> float:
        d = super()._draw_latency()
        with self._log_lock:
            self.latencies.append(d)
        return d

    async def handle(self, body):
        t0 = time.monotonic()
        raw = body if isinstance(body, bytes) else str(body).encode()
        root = b'"system"' in raw  # sub-calls are a lone user message
        try:
            return await self._handle(body, root)
        finally:
            with self._log_lock:
                self.spans.append((root, t0, time.monotonic()))

    async def _handle(self, body, root):
        try:
            if not root:
                return await super().handle(body)
            data = json.loads(body) if isinstance(body, (bytes, str)) else body
            msgs = data.get("messages") or []
            pairs = tuple((m.get("role", ""), m.get("content") if isinstance(m.get("content"), str)
                           else json.dumps(m.get("content"))) for m in msgs)
            if policies.is_root_request(pairs) or any(
                    r == "system" for r, _ in pairs):
                with self._log_lock:
                    self.root.append(msgs)
        except Exception:  # noqa: BLE001 - logging must never change what is served
            pass
        return await super().handle(body)

    def answer(self, request):
        found = bench_reply(request.messages)
        if found is not None:
            return (True, *found)
        return super().answer(request)

    def take_log(self) -> dict:
        with self._log_lock:
            out = {"latencies": self.latencies, "root": self.root, "spans": self.spans,
                   "stats": {**self.stats.snapshot(), "nodelay": dict(NODELAY)}}
            self.latencies, self.root, self.spans = [], [], []
        self.stats.reset()
        return out


NODELAY = {"already_set": 0, "set_here": 0, "not_tcp": 0}


class NoDelayServer(ScriptedServer):
    """The package's server with TCP_NODELAY asserted on every accepted connection."""

    async def _connection(self, reader, writer):  # type: ignore[override]
        sock = writer.get_extra_info("socket")
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            NODELAY["not_tcp"] += 1
        elif sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY):
            NODELAY["already_set"] += 1
        else:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            NODELAY["set_here"] += 1
        return await super()._connection(reader, writer)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--latency", type=float, nargs="+", default=[0.0])
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    lat = a.latency[0] if len(a.latency) == 1 else (a.latency[0], a.latency[1])
    model = LoggingModel(latency=lat, seed=a.seed)
    server = NoDelayServer(model)
    print(server.start(), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "log":
            sys.stdout.write(json.dumps(model.take_log()) + "\n")
            sys.stdout.flush()
        elif cmd == "quit":
            break
    server.stop()


if __name__ == "__main__":
    main()
