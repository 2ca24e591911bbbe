"""Issue 13, figure 4: a trivial one-step run, whole process, start to exit.

The run: a tiny context and ``[steps=0]``, so the scripted root's first and only reply ends the
run from code (``FINAL('done')``; ``answer["ready"] = True`` for rlms; ``SUBMIT('done')`` for
dspy). One root request, no sub-call. Wall = from the process's start to its exit, interpreter
start, imports, kernel start and shutdown included: what a user waits for.

- ``kernel``: ``rlm-kernel run`` (a real kernel, its front-end, the trajectory notebook written).
- ``library``: a Python process that imports ``rlm_kernel`` and calls ``RLM(...).run``.
- ``rlms``: a Python process that imports rlms 0.1.3 and calls ``RLM(...).completion``.
- ``dspy``: a Python process that runs dspy.RLM (its Deno + Pyodide REPL starts too).

    python bench/startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _procs  # noqa: E402
from _common import Server, figure, median, save  # noqa: E402

RUNTIMES = ["kernel", "library", "rlms", "dspy"]
QUERY = "Say done. [steps=0]"


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--runtimes", nargs="+", default=RUNTIMES, choices=RUNTIMES)
    p.add_argument("--timeout", type=float, default=120, help="seconds per run")
    a = p.parse_args(argv)
    rows = []
    with Server(0.0) as server, tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp) / "tiny.txt"
        ctx.write_text("tiny context\n")
        for runtime in a.runtimes:
            walls, cpus = [], []
            for i in range(a.repeat + 1):  # the first run warms the page cache; not counted
                if runtime == "kernel":
                    proc = _procs.kernel_run(server.base_url, ctx, QUERY, Path(tmp) / "t.ipynb",
                                             concurrency=None, timeout=a.timeout)
                else:
                    proc = _procs.peer_job(runtime, ["--url", server.base_url, "--context",
                                                     str(ctx), "--query", QUERY],
                                           timeout=a.timeout)
                if proc is None:
                    break
                proc.check()
                answer = proc.result.get("answer") if proc.result else proc.stdout.strip()
                if answer != "done":
                    raise RuntimeError(f"{runtime}: answered {answer!r}, not 'done'")
                if i:
                    walls.append(proc.wall_s)
                    cpus.append(proc.cpu_s)
            if not walls:
                continue
            row = {"runtime": runtime, "wall_s": median(walls), "walls_s": walls,
                   "cpu_s": median(cpus)}
            rows.append(row)
            figure(f"startup runtime={runtime} wall_s={row['wall_s']:.2f} (min {min(walls):.2f}, "
                   f"max {max(walls):.2f}) cpu_s={row['cpu_s']:.2f}")
    save("startup", {"repeat": a.repeat, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
