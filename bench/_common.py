"""Helpers shared by the bench scripts: the server subprocess, the limit, output."""

from __future__ import annotations

import heapq
import json
import math
import os
import random
import statistics
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


def make_log(lines: int, seed: int = 7) -> tuple[str, int]:
    """A generated log of ``lines`` lines and how many of them contain 'ERROR' (about 10%)."""
    rng = random.Random(seed)
    levels = ["INFO"] * 8 + ["WARN", "ERROR"]
    out, errors = [], 0
    for i in range(lines):
        lvl = rng.choice(levels)
        errors += lvl == "ERROR"
        out.append(f"2024-05-01T12:{i // 60 % 60:02d}:{i % 60:02d} {lvl} svc-{rng.randint(1, 9)} "
                   f"request {i} handled in {rng.randint(1, 999)} ms")
    return "\n".join(out), errors


def write_log(path: Path, lines: int) -> int:
    """Write ``make_log(lines)`` to ``path``; return the true count."""
    text, errors = make_log(lines)
    path.write_text(text)
    return errors


def count_query(n: int) -> str:
    """The counting query that makes exactly n sub-calls in every runtime's scripted policy."""
    return f"How many lines contain 'ERROR'? [chunks={n}]"


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def root_gaps(spans: list[list[Any]]) -> list[float]:
    """Seconds between one root request's answer and the next root request's arrival: the
    client's whole cost of a step (parse, run the code, capture, emit, build the next request)
    when the model answers at once. Spans are in arrival order per run."""
    roots = sorted((s, e) for root, s, e in spans if root)
    return [s2 - e1 for (_, e1), (s2, _) in zip(roots, roots[1:], strict=False)]
