"""Bench 3b: the marginal cost of one root step in a real kernel, with zero model latency.

``overhead.py`` divides a whole ``%%rlm`` cell by its few steps, so fixed per-run costs (option
parsing, the run record, the emitter thread, the final display) weigh on every step. Here the same
kernel runs the same trivial step 1 and 21 times (a scripted root that assigns and prints, then
FINALs); the slope between the two is what one more step costs: a loopback model request, parsing,
``run_cell``, output capture and the cell messages. It is compared with a plain cell's execute round
trip in the same kernel, the smallest unit a human pays for.

    python bench/step_slope.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import figure, save  # noqa: E402

from rlm_kernel.headless import HeadlessKernel  # noqa: E402
from rlm_kernel.scripted import ScriptedModel, ScriptedServer  # noqa: E402


def replies(n: int) -> list[str]:
    return [f"```repl\nx{i} = {i}\nprint(x{i})\n```" for i in range(n)] + ["FINAL(done)"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--steps", type=int, default=21)
    args = p.parse_args(argv)
    srv = ScriptedServer(ScriptedModel(), host="127.0.0.1", port=0)
    srv.start()
    env = {"OPENAI_BASE_URL": srv.base_url, "OPENAI_API_KEY": "bench", "RLM_MODEL": "scripted-root",
           "RLM_SUB_MODEL": "scripted-sub"}
    timings: dict[int, list[float]] = {1: [], args.steps: []}
    try:
        with HeadlessKernel(env=env) as k:
            k.execute("context = 'x'")
            for rep in range(args.repeat + 1):  # the first round warms imports and connections
                for n in timings:
                    srv.model.root_replies = replies(n)
                    t0 = time.perf_counter()
                    reply = k.execute(f"%%rlm\nslope {rep} {n}")  # a new query: no cache hits
                    if rep:
                        timings[n].append(time.perf_counter() - t0)
                    assert reply["status"] == "ok", reply
            t0 = time.perf_counter()
            for i in range(args.steps):
                k.execute(f"y{i} = {i}\nprint(y{i})")
            plain = (time.perf_counter() - t0) / args.steps
    finally:
        srv.stop()
    one, many = min(timings[1]), min(timings[args.steps])
    slope = (many - one) / (args.steps - 1)
    figure(f"slope run of 1 step: {one * 1000:.1f} ms; of {args.steps} steps: {many * 1000:.1f} ms")
    figure(f"slope marginal root step: {slope * 1000:.1f} ms (model request, run_cell, capture, cells)")
    figure(f"slope plain cell round trip in the same kernel: {plain * 1000:.1f} ms; goal for a step: "
           f"<= 1.2 x that + 5 ms = {(1.2 * plain + 0.005) * 1000:.1f} ms -> "
           f"{'met' if slope <= 1.2 * plain + 0.005 else 'not met'}")
    save("step_slope", {"one_step_s": one, "many_steps_s": many, "steps": args.steps,
                        "slope_s": slope, "plain_cell_s": plain})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
