"""Issue 13, figure 6: ``rlm-kernel replay`` of trajectories with 1,000, 2,000 and 10,000 sub-calls.

Each trajectory is made by ``rlm-kernel run`` (counting with ``[chunks=N]``: one ``llm_batch`` of
N, concurrency 64) against a server answering at once, then replayed offline with ``rlm-kernel
replay`` (every model answer from the record). Both are whole processes with a time bound each; one
that runs past it is killed and reported as "did not finish in T s", never waited on. Figures: the
replay's wall per size, and the 10k/1k ratio (goal of issue 13: at most 11, i.e. linear).

    python bench/replay.py [--sizes 1000 2000 10000] [--timeout 300] [--make-timeout 600]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _procs  # noqa: E402
from _common import Server, count_query, figure, save, write_log  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 10000])
    p.add_argument("--c", type=int, default=64)
    p.add_argument("--lines", type=int, default=40_000)
    p.add_argument("--timeout", type=float, default=300, help="seconds per replay")
    p.add_argument("--make-timeout", type=float, default=600,
                   help="seconds for making each trajectory with rlm-kernel run")
    a = p.parse_args(argv)
    rows = []
    with Server(0.0) as server, tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp) / "log.txt"
        truth = write_log(ctx, a.lines)
        for n in a.sizes:
            nb = Path(tmp) / f"traj-{n}.ipynb"
            row: dict = {"n": n}
            made = _procs.kernel_run(server.base_url, ctx, count_query(n), nb, concurrency=a.c,
                                     timeout=a.make_timeout)
            server.log()
            row["make_s"] = made.wall_s
            if made.timed_out or made.returncode != 0:
                row["error"] = (f"making it with rlm-kernel run did not finish in "
                                f"{a.make_timeout:g} s" if made.timed_out else
                                f"rlm-kernel run exited {made.returncode}")
                rows.append(row)
                figure(f"replay n={n} {row['error']}")
                continue
            proc = _procs.replay(nb, Path(tmp) / f"replayed-{n}.ipynb", a.timeout)
            if proc.timed_out:
                row["error"] = f"replay did not finish in {a.timeout:g} s"
            elif proc.returncode != 0:
                row["error"] = f"replay exited {proc.returncode}: {proc.stderr[-300:]}"
            else:
                answer = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
                row.update(replay_s=proc.wall_s, correct=answer == str(truth),
                           kernel_cpu_s=proc.kernel_cpu_s, frontend_cpu_s=proc.frontend_cpu_s)
            if server.log()["stats"]["requests"]:
                row["network_requests"] = True  # a replay must not call the model
            rows.append(row)
            figure(f"replay n={n} make_s={made.wall_s:.1f} " + (
                row["error"] if "error" in row else
                f"replay_s={row['replay_s']:.2f} correct={row['correct']} "
                f"kernel_cpu_s={row['kernel_cpu_s']:.1f} frontend_cpu_s={row['frontend_cpu_s']:.1f}"))
    out: dict = {"rows": rows, "timeout_s": a.timeout, "make_timeout_s": a.make_timeout}
    done = {r["n"]: r["replay_s"] for r in rows if "replay_s" in r}
    lo, hi = min(a.sizes), max(a.sizes)
    if lo in done and hi in done and hi > lo:
        out["ratio"] = done[hi] / done[lo]
        figure(f"replay ratio {hi}/{lo}={out['ratio']:.2f} (linear: {hi / lo:.0f})")
    save("replay", out)
    return out


if __name__ == "__main__":
    main()
