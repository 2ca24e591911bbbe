"""Helpers shared by the bench scripts: the server subprocess, the limit, output."""

from __future__ import annotations

import heapq
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"


class Server:
    """``bench/_server.py`` in a subprocess (its CPU is not counted as the client's)."""

    def __init__(self, latency: float | tuple[float, float] = 0.0, seed: int = 0,
                 python: str | None = None) -> None:
        lat = [str(latency)] if isinstance(latency, (int, float)) else [str(x) for x in latency]
        self.proc = subprocess.Popen(
            [python or sys.executable, str(HERE / "_server.py"), "--latency", *lat,
             "--seed", str(seed)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.proc.stdout is not None
        self.base_url = self.proc.stdout.readline().strip()
        if not self.base_url.startswith("http"):
            raise RuntimeError(f"scripted server did not start: {self.base_url!r}")

    def cpu(self) -> float:
        """CPU seconds (user+sys) the server process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("log\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
            except Exception:  # noqa: BLE001
                self.proc.kill()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def greedy_limit(latencies: list[float], c: int) -> float:
    """Makespan of the drawn latencies on c slots, each request taken in arrival order by the
    first free slot: what a client with zero overhead would achieve against this server."""
    slots = [0.0] * min(c, max(1, len(latencies)))
    for d in latencies:
        t = heapq.heappop(slots)
        heapq.heappush(slots, t + d)
    return max(slots) if latencies else 0.0


def ceil_limit(n: int, c: int, latency: float) -> float:
    return math.ceil(n / c) * latency


def save(name: str, data: Any) -> None:
    OUT.mkdir(exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(data, indent=1))


def figure(line: str) -> None:
    """One figure line, greppable: ``FIGURE <name> key=value ...``."""
    print("FIGURE " + line, flush=True)


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def subcall_phase(spans: list[list[Any]]) -> float:
    """Seconds from the first sub-call request's arrival at the server to the last one's answer
    (the server's view: the same measure for any client)."""
    subs = [(s, e) for root, s, e in spans if not root]
    return (max(e for _, e in subs) - min(s for s, _ in subs)) if subs else 0.0
