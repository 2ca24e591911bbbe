"""Issue 13, figure 7 (and dspy's row of it): one counting task end to end, whole processes, this
project against rlms 0.1.3 and dspy.RLM 3.x on one server.

The task: ``How many lines contain 'ERROR'? [chunks=256]`` over a generated 40,000-line log, the
server answering every request after 0.25 s. Each runtime plays the same strategy in its own
convention (peek, one batch of 256 sub-calls, sum; ours reads the printed total and ends with
``FINAL_VAR`` one root request later, rlms and dspy submit from the batch's step). Wall = the whole
process, start to exit: for ``rlm-kernel run`` that includes starting and stopping the kernel.

Rows, each labelled with the concurrency it used: ours through ``rlm-kernel run`` and through the
library at their default concurrency (RLMConfig's, 64: halved on a 429) and at ``--c``; rlms at its defaults (batch cap 16) and with
the cap patched to 64; dspy at its defaults (8 threads) and patched to 64. The figure of issue 13
is rlms (defaults) wall / ``rlm-kernel run`` wall (goal >= 1.6), for ours at default and at 64.

    python bench/side_by_side.py [--n 256] [--latency 0.25] [--c 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _procs  # noqa: E402
from _common import (  # noqa: E402
    Server,
    ceil_limit,
    count_query,
    figure,
    median,
    save,
    subcall_phase,
    write_log,
)

from rlm_kernel.config import RLMConfig  # noqa: E402

_OURS = RLMConfig.class_traits()["concurrency"].default_value  # declared once, in config.py
DEFAULT_C = {"kernel": _OURS, "library": _OURS, "rlms": 16, "dspy": 8}


def configs(c: int) -> list[tuple[str, str, int | None]]:
    """(label, runtime, concurrency to set or None for the runtime's default)."""
    return [("rlm-kernel run (default)", "kernel", None), (f"rlm-kernel run (c={c})", "kernel", c),
            ("library (default)", "library", None), (f"library (c={c})", "library", c),
            ("rlms 0.1.3 (default)", "rlms", None), (f"rlms 0.1.3 (cap patched to {c})", "rlms", c),
            ("dspy.RLM (default)", "dspy", None), (f"dspy.RLM (threads patched to {c})", "dspy", c)]


def start(runtime: str, url: str, ctx: Path, query: str, c: int | None, tmp: Path,
          timeout: float) -> _procs.Proc | None:
    if runtime == "kernel":
        return _procs.kernel_run(url, ctx, query, tmp / "sbs.ipynb", concurrency=c,
                                 timeout=timeout)
    extra = ["--c", str(c)] if c else []
    return _procs.peer_job(runtime, ["--url", url, "--context", str(ctx), "--query", query,
                                     *extra], timeout=timeout)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=256, help="sub-calls (chunks)")
    p.add_argument("--latency", type=float, default=0.25)
    p.add_argument("--c", type=int, default=64, help="the concurrency of the non-default rows")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--lines", type=int, default=40_000)
    p.add_argument("--runtimes", nargs="+", default=["kernel", "library", "rlms", "dspy"],
                   choices=["kernel", "library", "rlms", "dspy"])
    p.add_argument("--timeout", type=float, default=600, help="seconds per run")
    a = p.parse_args(argv)
    query = count_query(a.n)
    rows = []
    with Server(a.latency) as server, tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp) / "log.txt"
        truth = write_log(ctx, a.lines)
        for label, runtime, c in configs(a.c):
            if runtime not in a.runtimes:
                continue
            walls, phases, ok, stats = [], [], [], {}
            for _ in range(a.repeat):
                server.log()
                proc = start(runtime, server.base_url, ctx, query, c, Path(tmp), a.timeout)
                if proc is None:
                    break
                proc.check()
                log = server.log()
                stats = log["stats"]
                answer = proc.result.get("answer") if proc.result else \
                    proc.stdout.strip().splitlines()[-1]
                ok.append(str(answer).strip() == str(truth))
                walls.append(proc.wall_s)
                phases.append(subcall_phase(log["spans"]))
            if not walls:
                continue
            used = c or DEFAULT_C[runtime]
            limit = ceil_limit(a.n, used, a.latency)
            row = {"label": label, "runtime": runtime, "c": used, "default": c is None,
                   "n": a.n, "latency_s": a.latency, "wall_s": median(walls), "walls_s": walls,
                   "subcall_phase_s": median(phases), "limit_s": limit,
                   "phase_ratio": median(phases) / limit if limit else float("nan"),
                   "root_requests": stats.get("root_requests"),
                   "sub_requests": stats.get("sub_requests"),
                   "max_in_flight": stats.get("max_in_flight"), "correct": all(ok)}
            rows.append(row)
            figure(f"side_by_side {label!r} c={used} wall_s={row['wall_s']:.2f} "
                   f"subcall_phase_s={row['subcall_phase_s']:.2f} limit_s={limit:.2f} "
                   f"root_requests={row['root_requests']} sub_requests={row['sub_requests']} "
                   f"correct={row['correct']}")
    ref = next((r for r in rows if r["runtime"] == "rlms" and r["default"]), None)
    if ref is not None:
        for r in rows:
            if r["runtime"] in ("kernel", "library"):
                r["rlms_default_over_this"] = ref["wall_s"] / r["wall_s"]
                figure(f"side_by_side_ratio rlms(default) wall / {r['label']} wall = "
                       f"{r['rlms_default_over_this']:.2f}")
    save("side_by_side", {"n": a.n, "latency_s": a.latency, "truth": truth, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
