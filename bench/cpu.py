"""Issue 13, figure 2: client CPU per sub-call at zero model latency.

Each runtime runs the counting task twice in fresh processes, with N sub-calls and with 1, against
a server answering at once (its CPU is its own process's). CPU per sub-call = (CPU of the N-call
run - CPU of the 1-call run) / (N - 1): start-up, imports and the root steps cancel out. CPU is the
operating system's account of each process (user+sys, ``os.wait4``).

- ``library``: the scratch process running ``RLM(concurrency=c).run``.
- ``kernel``: ``rlm-kernel run --concurrency c``; the kernel process (psutil, sampled until it
  exits) and the front-end process (the CLI: its total minus the kernel it reaped) separately.
- ``rlms``: rlms 0.1.3 at its defaults (one process: its REPL and LM handler are in-process).
- ``openai``: the raw ``openai.AsyncOpenAI`` client, N prompts of the same shape at c.
- ``dspy``: dspy.RLM 3.x at its defaults; the Python process plus its Deno child.

    python bench/cpu.py [--n 1000] [--c 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _procs  # noqa: E402
from _common import Server, count_query, figure, median, save, write_log  # noqa: E402

RUNTIMES = ["library", "kernel", "rlms", "openai", "dspy"]


def run_one(runtime: str, url: str, ctx: Path, n: int, c: int, tmp: Path,
            timeout: float) -> _procs.Proc | None:
    args = ["--url", url, "--context", str(ctx), "--query", count_query(n)]
    if runtime == "kernel":
        return _procs.kernel_run(url, ctx, count_query(n), tmp / "cpu.ipynb", concurrency=c,
                                 timeout=timeout).check()
    if runtime in ("library", "openai"):
        args += ["--c", str(c), "--n", str(n)]
    proc = _procs.peer_job(runtime, args, timeout=timeout)
    return proc.check() if proc is not None else None


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--c", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--lines", type=int, default=40_000)
    p.add_argument("--runtimes", nargs="+", default=RUNTIMES, choices=RUNTIMES)
    p.add_argument("--timeout", type=float, default=600, help="seconds per run")
    a = p.parse_args(argv)
    rows = []
    with Server(0.0) as server, tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp) / "log.txt"
        write_log(ctx, a.lines)
        for runtime in a.runtimes:
            per: dict[str, list[float]] = {"total": [], "kernel": [], "frontend": []}
            skipped = False
            for _ in range(a.repeat):
                big = run_one(runtime, server.base_url, ctx, a.n, a.c, Path(tmp), a.timeout)
                one = run_one(runtime, server.base_url, ctx, 1, a.c, Path(tmp), a.timeout)
                if big is None or one is None:
                    skipped = True
                    break
                per["total"].append((big.cpu_s - one.cpu_s) / (a.n - 1))
                if big.kernel_cpu_s is not None and one.kernel_cpu_s is not None:
                    per["kernel"].append((big.kernel_cpu_s - one.kernel_cpu_s) / (a.n - 1))
                    per["frontend"].append(
                        (big.frontend_cpu_s - one.frontend_cpu_s) / (a.n - 1))  # type: ignore[operator]
            if skipped:
                continue
            row = {"runtime": runtime, "n": a.n, "c": a.c,
                   "cpu_ms_per_call": 1000 * median(per["total"])}
            text = f"total_ms_per_call={row['cpu_ms_per_call']:.2f}"
            if per["kernel"]:
                row["kernel_ms_per_call"] = 1000 * median(per["kernel"])
                row["frontend_ms_per_call"] = 1000 * median(per["frontend"])
                text += (f" kernel_ms_per_call={row['kernel_ms_per_call']:.2f} "
                         f"frontend_ms_per_call={row['frontend_ms_per_call']:.2f}")
            rows.append(row)
            figure(f"cpu runtime={runtime} n={a.n} c={a.c} {text}")
    save("cpu", {"n": a.n, "c": a.c, "repeat": a.repeat, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
