"""Bench 1: the sub-call phase against the physical limit.

For each (n, c): n distinct sub-call prompts (counting prompts over ~4 KB chunks) go out through
``Repl.llm_batch`` (the same path a cell's ``llm_batch`` takes: SubCall records, observer hooks, a
``CellEmitter`` whose sends are JSON-encoded as a comm would), against the scripted server in its
own process with latency drawn uniformly from [lo, hi] (seeded).

The limit: the actual latencies the server drew for this batch, scheduled greedily in arrival order
on c slots (what a zero-overhead client achieves; for a fixed latency L it is ceil(n/c)·L). Also
printed: ceil(n/c)·mean(L). Client CPU per call = this process's CPU time (user+sys) during the
phase / n (the server runs in another process).

    python bench/subcalls.py [--n 64 256 1000] [--c 8 32 64] [--latency 0.1 0.25]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Server, ceil_limit, cpu, figure, greedy_limit, save  # noqa: E402

from rlm_kernel.budgets import Budget  # noqa: E402
from rlm_kernel.config import RLMConfig  # noqa: E402
from rlm_kernel.kernel.emitter import CellEmitter  # noqa: E402
from rlm_kernel.lm import LMClient  # noqa: E402
from rlm_kernel.repl import Repl  # noqa: E402
from rlm_kernel.trajectory import Run  # noqa: E402

HEAD = ("Count the lines of the text below that contain the exact text 'ERROR' (case-sensitive). "
        "Answer with a number only.\n<text>\n")


def prompts(n: int, tag: str, chunk_chars: int) -> list[str]:
    line = "2024-01-01 12:00:00 INFO service started request handled ok\n"
    body = (line * (chunk_chars // len(line) + 1))[:chunk_chars]
    return [f"{HEAD}{tag} chunk {i}\n{body}ERROR at {i}\n</text>" for i in range(n)]


def baseline_client_class(rev: str) -> type:
    """``LMClient`` as it was at git revision ``rev`` (read with ``git show``), for before/after
    figures from one run."""
    import importlib.util
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parent.parent
    src = subprocess.run(["git", "-C", str(root), "show", f"{rev}:rlm_kernel/lm/client.py"],
                         check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "client_baseline.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("rlm_kernel.lm._client_baseline", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    from rlm_kernel.lm import client as current

    mod.Completion = current.Completion  # the REPL checks isinstance against this one
    return mod.LMClient


class _Sink:
    """The emitter's channel: JSON-encodes each message as a comm would, keeps its size."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def send(self, msg: dict) -> None:
        self.sizes.append(len(json.dumps(msg)))

    def barrier(self, done: threading.Event) -> None:
        done.set()


def one(server: Server, n: int, c: int, chunk_chars: int, level: str,
        client_cls: type = LMClient) -> dict:
    cfg = RLMConfig(base_url=server.base_url, api_key="bench", model="scripted-root",
                    sub_model="scripted-sub", concurrency=c)
    client = client_cls(cfg)
    sink = _Sink()
    run = Run(run_id="rbench", query="bench")
    emitter = CellEmitter(sink, run, {run.run_id: run}, anchor="q", query_id="q")
    repl = Repl({}, context="", client=client, config=cfg, run=run,
                budget=Budget(cfg, client.ledger), observer=emitter)
    repl.current_step = 1
    # warm-up: open connections and import paths, then clear the server's log
    client.loop.run(client.acomplete_many([[{"role": "user", "content": f"warm {i}"}]
                                           for i in range(c)], model="scripted-sub", depth=1))
    server.log()
    ps = prompts(n, f"n{n}c{c}{level}", chunk_chars)
    emitter.start()
    t0, c0, s0 = time.perf_counter(), cpu(), server.cpu()
    if level == "repl":
        answers = repl.llm_batch(ps)
    elif level == "generator":  # the streaming path: one prompt pulled per free slot
        answers = repl.llm_batch(p for p in ps)
    else:
        res = client.loop.run(client.acomplete_many(
            [[{"role": "user", "content": p}] for p in ps], model="scripted-sub", depth=1))
        answers = [r.text for r in res]
    wall, cpu_s, server_s = time.perf_counter() - t0, cpu() - c0, server.cpu() - s0
    load1 = os.getloadavg()[0]
    emitter.stop()
    log = server.log()
    assert answers == ["1"] * n, answers[:5]
    lat = log["latencies"]
    assert len(lat) == n, (len(lat), n)
    limit = greedy_limit(lat, c)
    mean = sum(lat) / len(lat)
    client.close()
    return {"n": n, "c": c, "level": level, "wall_s": wall, "limit_s": limit,
            "ratio": wall / limit, "ceil_mean_s": ceil_limit(n, c, mean),
            "cpu_ms_per_call": 1000 * cpu_s / n, "server_cpu_ms_per_call": 1000 * server_s / n,
            "loadavg_1min": load1, "max_in_flight": log["stats"]["max_in_flight"],
            "requests": log["stats"]["requests"], "cells_sent": len(sink.sizes)}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, nargs="+", default=[64, 256, 1000])
    p.add_argument("--c", type=int, nargs="+", default=[8, 32, 64])
    p.add_argument("--latency", type=float, nargs=2, default=[0.1, 0.25])
    p.add_argument("--chunk-chars", type=int, default=4000)
    p.add_argument("--level", choices=["repl", "generator", "client"], default="repl")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--baseline", metavar="REV", default=None,
                   help="also run LMClient as of git revision REV, interleaved (before/after)")
    a = p.parse_args(argv)
    rows = []
    clients: list[tuple[str, type]] = [("current", LMClient)]
    if a.baseline:
        clients.insert(0, (f"baseline@{a.baseline}", baseline_client_class(a.baseline)))
    with Server(tuple(a.latency), seed=a.seed) as server:
        for n in a.n:
            for c in a.c:
              for label, cls in clients:
                r = one(server, n, c, a.chunk_chars, a.level, cls)
                r["client"] = label
                rows.append(r)
                figure(f"subcalls client={label} n={n} c={c} level={r['level']} "
                       f"wall_s={r['wall_s']:.3f} "
                       f"limit_s={r['limit_s']:.3f} ratio={r['ratio']:.3f} "
                       f"ceil_mean_s={r['ceil_mean_s']:.3f} "
                       f"cpu_ms_per_call={r['cpu_ms_per_call']:.2f} "
                       f"server_cpu_ms_per_call={r['server_cpu_ms_per_call']:.2f} "
                       f"load1={r['loadavg_1min']:.1f} "
                       f"max_in_flight={r['max_in_flight']}")
    save("subcalls", {"latency": a.latency, "chunk_chars": a.chunk_chars, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
