"""Issue 13, figure 5: one ``llm_batch`` of 5,000 at c=256, L=0.05 s, through the kernel, against
plain threads on the same server.

- kernel: ``rlm-kernel run --concurrency 256`` on ``How many lines contain 'ERROR'?
  [chunks=5000]`` (one ``llm_batch`` of 5,000 in one step).
- threads: 256 plain threads, each with one keep-alive ``http.client`` connection, sending the
  same shape of 5,000 prompts (blocking HTTP): what a client with no runtime around it reaches.

Both phases are measured at the server (first sub-call request in to last answer out); the floor
is ceil(5000/256)·0.05 = 1.0 s. Figure: kernel phase / threads phase (goal of issue 13: <= 1.3).

    python bench/big_batch.py [--n 5000] [--c 256] [--latency 0.05] [--repeat 1]
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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--c", type=int, default=256)
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--lines", type=int, default=40_000)
    p.add_argument("--timeout", type=float, default=600, help="seconds per run")
    a = p.parse_args(argv)
    floor = math.ceil(a.n / a.c) * a.latency
    out: dict = {"n": a.n, "c": a.c, "latency_s": a.latency, "floor_s": floor}
    with Server(a.latency) as server, tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp) / "log.txt"
        truth = write_log(ctx, a.lines)
        for who in ("kernel", "threads"):
            phases, walls = [], []
            for _ in range(a.repeat):
                server.log()
                if who == "kernel":
                    proc = _procs.kernel_run(server.base_url, ctx, count_query(a.n),
                                             Path(tmp) / "b.ipynb", concurrency=a.c,
                                             timeout=a.timeout)
                    answer = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
                else:
                    proc = _procs.peer_job("threads", ["--url", server.base_url, "--context",
                                                       str(ctx), "--n", str(a.n), "--c", str(a.c)],
                                           timeout=a.timeout)
                    assert proc is not None
                    answer = proc.result.get("answer", "")
                if proc.timed_out:
                    out[who] = {"error": f"did not finish in {a.timeout:g} s"}
                    figure(f"big_batch {who} did not finish in {a.timeout:g} s")
                    break
                proc.check()
                if answer != str(truth):
                    raise RuntimeError(f"{who}: answered {answer!r}, expected {truth}")
                log = server.log()
                if log["stats"]["sub_requests"] != a.n:
                    raise RuntimeError(f"{who}: {log['stats']['sub_requests']} sub-calls, not {a.n}")
                phases.append(subcall_phase(log["spans"]))
                walls.append(proc.wall_s)
            else:
                out[who] = {"phase_s": median(phases), "phases_s": phases, "wall_s": median(walls)}
                figure(f"big_batch {who} n={a.n} c={a.c} L={a.latency} phase_s={median(phases):.2f}"
                       f" floor_s={floor:.2f} wall_s={median(walls):.2f}")
    if "phase_s" in out.get("kernel", {}) and "phase_s" in out.get("threads", {}):
        out["ratio"] = out["kernel"]["phase_s"] / out["threads"]["phase_s"]
        figure(f"big_batch ratio kernel/threads={out['ratio']:.2f} (goal <= 1.3)")
    save("big_batch", out)
    return out


if __name__ == "__main__":
    main()
