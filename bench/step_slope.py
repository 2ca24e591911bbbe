"""Issue 13, figure 3: what one more root step costs, at zero model latency.

One definition for every runtime: a run of S trivial steps (``[steps=S]``: each step assigns and
prints, then a step ends the run from code), against a server that answers at once; the server logs
when each root request arrives and when its answer leaves. A step's cost is the gap between one
root answer leaving and the next root request arriving: everything the client does for a step
(parse the reply, run the code, capture output, emit its cell, build and send the next request).
With zero latency the run's time grows by exactly this gap (plus the server's own sub-millisecond
handling) per step, so it is the slope of run time against steps, without the run's fixed costs.
The figure is the median gap of a run (the mean is printed too), median over repeats.

Compared with a bare ipykernel: the execute round trip of the same step code in a plain
``python3`` kernel through jupyter_client (mean over S cells), the least a notebook front-end pays
per cell. Goal of issue 13: kernel path <= bare round trip + 3 ms.

    python bench/step_slope.py [--steps 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _procs  # noqa: E402
from _common import Server, figure, median, root_gaps, save  # noqa: E402

RUNTIMES = ["kernel", "library", "rlms", "dspy"]


def bare_round_trip(steps: int) -> float:
    """Mean execute round trip of the trivial step code in a plain python3 kernel, over IPC
    sockets as ``rlm-kernel run`` talks to its kernel."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3", transport="ipc")
    km.ip = os.path.join(tempfile.gettempdir(), f"bench-bare-{uuid.uuid4().hex[:12]}")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        kc.execute_interactive("x0 = 0", timeout=60)  # warm-up
        times = []
        for i in range(1, steps + 1):
            t = time.perf_counter()
            kc.execute_interactive(f"x{i} = {i}\nprint(x{i})", timeout=60,
                                   output_hook=lambda m: None)
            times.append(time.perf_counter() - t)
        return statistics.mean(times)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--runtimes", nargs="+", default=RUNTIMES, choices=RUNTIMES)
    p.add_argument("--timeout", type=float, default=300, help="seconds per run")
    a = p.parse_args(argv)
    query = f"Trivial steps [steps={a.steps}]"
    rows = []
    with Server(0.0) as server, tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp) / "tiny.txt"
        ctx.write_text("tiny context\n")
        for runtime in a.runtimes:
            medians, means = [], []
            for _ in range(a.repeat):
                server.log()
                if runtime == "kernel":
                    proc = _procs.kernel_run(server.base_url, ctx, query, Path(tmp) / "s.ipynb",
                                             concurrency=None, max_steps=a.steps + 5,
                                             timeout=a.timeout)
                else:
                    proc = _procs.peer_job(runtime, ["--url", server.base_url, "--context",
                                                     str(ctx), "--query", query,
                                                     "--max-steps", str(a.steps + 5)],
                                           timeout=a.timeout)
                if proc is None:
                    break
                proc.check()
                gaps = root_gaps(server.log()["spans"])
                if len(gaps) != a.steps:
                    raise RuntimeError(f"{runtime}: expected {a.steps} step gaps, saw {len(gaps)}")
                medians.append(median(gaps))
                means.append(statistics.mean(gaps))
            if not medians:
                continue
            rows.append({"runtime": runtime, "steps": a.steps, "step_ms": 1000 * median(medians),
                         "step_mean_ms": 1000 * median(means)})
            figure(f"step runtime={runtime} steps={a.steps} step_ms={1000 * median(medians):.1f} "
                   f"(mean {1000 * median(means):.1f})")
    bare = bare_round_trip(a.steps)
    out = {"steps": a.steps, "repeat": a.repeat, "rows": rows, "bare_ipykernel_ms": 1000 * bare}
    kernel = next((r for r in rows if r["runtime"] == "kernel"), None)
    text = ""
    if kernel is not None:
        out["goal_ms"] = 1000 * bare + 3
        out["met"] = kernel["step_ms"] <= out["goal_ms"]
        text = (f" kernel_step_ms={kernel['step_ms']:.1f} goal(bare+3ms)={out['goal_ms']:.1f} "
                f"met={out['met']}")
    figure(f"step bare_ipykernel_round_trip_ms={1000 * bare:.1f}{text}")
    save("step_slope", out)
    return out


if __name__ == "__main__":
    main()
