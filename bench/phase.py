"""Issue 13, figure 1: the sub-call phase against its limit, every runtime on one server.

The task: ``How many lines contain 'ERROR'? [chunks=N]`` over a generated log, so every runtime
makes exactly N sub-calls in one batch (each runtime's scripted root plays the same peek ->
partition -> batch -> sum strategy in its own convention). The server answers every request
after a fixed latency L. The phase is measured at the server, the same way for every runtime:
from the first sub-call request's arrival to the last sub-call's answer. Its limit is
ceil(N/c)·L for the concurrency c the runtime actually used (a zero-overhead client reaches it).

Runtimes (each in a process of its own; rows of a peer that is not installed are skipped):

- ``library``: ``RLM(concurrency=c).run`` in a scratch process.
- ``kernel``: ``rlm-kernel run --concurrency c`` end to end (a real kernel and its front-end).
- ``rlms``: rlms 0.1.3 at its default batch cap (16), and ``rlms-cap``: the cap patched to c at
  run time in the scratch process.
- ``dspy``: dspy.RLM 3.x at its default (8 threads in ``llm_query_batched``), and ``dspy-cap``:
  patched to c.

    python bench/phase.py [--n 1000] [--c 64] [--latency 0.25] [--repeat 3]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _procs  # noqa: E402
from _common import Server, count_query, figure, median, save, subcall_phase, write_log  # noqa: E402

RUNTIMES = ["library", "kernel", "rlms", "rlms-cap", "dspy", "dspy-cap"]
DEFAULT_CAP = {"rlms": 16, "dspy": 8}
LABEL = {"library": "library RLM(...).run", "kernel": "kernel path rlm-kernel run",
         "rlms": "rlms 0.1.3 (default cap 16)", "rlms-cap": "rlms 0.1.3 (cap patched to {c})",
         "dspy": "dspy.RLM (default 8 threads)", "dspy-cap": "dspy.RLM (threads patched to {c})"}


def run_one(runtime: str, url: str, ctx: Path, query: str, c: int, tmp: Path,
            timeout: float) -> tuple[_procs.Proc | None, int]:
    """Start ``runtime`` on the task; returns its process and the concurrency it used."""
    args = ["--url", url, "--context", str(ctx), "--query", query]
    if runtime == "library":
        return _procs.peer_job("library", [*args, "--c", str(c)], timeout=timeout), c
    if runtime == "kernel":
        return _procs.kernel_run(url, ctx, query, tmp / "phase.ipynb", concurrency=c,
                                 timeout=timeout), c
    peer, patched = runtime.split("-")[0], runtime.endswith("-cap")
    extra = ["--c", str(c)] if patched else []
    return _procs.peer_job(peer, [*args, *extra], timeout=timeout), c if patched else \
        DEFAULT_CAP[peer]


def measure(server: Server, runtime: str, ctx: Path, truth: int, n: int, c: int,
            latency: float, repeat: int, tmp: Path, timeout: float) -> dict | None:
    phases, walls, correct, subs, inflight = [], [], [], [], []
    used_c = c
    for _ in range(repeat):
        server.log()
        proc, used_c = run_one(runtime, server.base_url, ctx, count_query(n), c, tmp, timeout)
        if proc is None:
            return None
        log = server.log()
        if proc.returncode != 0:
            why = f"did not finish in {timeout:g} s" if proc.timed_out else "failed"
            print(f"{runtime}: {why}\n{proc.stderr[-1500:]}", file=sys.stderr)
            return {"runtime": runtime, "label": LABEL[runtime].format(c=c), "c": used_c,
                    "error": "timeout" if proc.timed_out else f"exit {proc.returncode}"}
        answer = proc.result.get("answer") if proc.result else proc.stdout.strip().splitlines()[-1]
        phases.append(subcall_phase(log["spans"]))
        walls.append(proc.wall_s)
        correct.append(str(answer).strip() == str(truth))
        subs.append(log["stats"]["sub_requests"])
        inflight.append(log["stats"]["max_in_flight"])
    limit = math.ceil(n / used_c) * latency
    phase = median(phases)
    return {"runtime": runtime, "label": LABEL[runtime].format(c=c), "n": n, "c": used_c,
            "latency_s": latency, "phase_s": phase, "phases_s": phases, "limit_s": limit,
            "ratio": phase / limit if limit else float("nan"),
            "ratio_vs_c_limit": phase / (math.ceil(n / c) * latency) if latency else float("nan"),
            "wall_s": median(walls), "correct": all(correct), "sub_requests": max(subs),
            "max_in_flight": max(inflight)}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--c", type=int, default=64)
    p.add_argument("--latency", type=float, default=0.25)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--lines", type=int, default=40_000)
    p.add_argument("--runtimes", nargs="+", default=RUNTIMES, choices=RUNTIMES)
    p.add_argument("--timeout", type=float, default=600, help="seconds per run")
    a = p.parse_args(argv)
    rows = []
    with Server(a.latency) as server, tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp) / "log.txt"
        truth = write_log(ctx, a.lines)
        for runtime in a.runtimes:
            r = measure(server, runtime, ctx, truth, a.n, a.c, a.latency, a.repeat, Path(tmp),
                        a.timeout)
            if r is None:
                continue
            rows.append(r)
            if "error" in r:
                figure(f"phase runtime={runtime} error={r['error']}")
                continue
            figure(f"phase runtime={runtime} label={r['label']!r} n={a.n} c={r['c']} "
                   f"L={a.latency} phase_s={r['phase_s']:.3f} limit_s={r['limit_s']:.3f} "
                   f"ratio={r['ratio']:.3f} ratio_vs_ceil(n/{a.c})L={r['ratio_vs_c_limit']:.3f} "
                   f"wall_s={r['wall_s']:.2f} max_in_flight={r['max_in_flight']} "
                   f"correct={r['correct']}")
        nodelay = server.log()["stats"].get("nodelay")
    save("phase", {"n": a.n, "c": a.c, "latency_s": a.latency, "repeat": a.repeat,
                   "nodelay": nodelay, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
