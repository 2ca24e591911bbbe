"""Bench 4: this project against the reference runtime ``rlms`` (PyPI 0.1.3), same server, same task.

One scripted server (its own process, fixed latency, 250 ms by default) answers both. The task: a
counting query over a generated log, ``How many lines contain 'ERROR'? [chunks=N]``, so both
runtimes make exactly N sub-calls in one batch (the scripted root plays the same strategy in each
runtime's convention: ``FINAL_VAR`` here, ``answer["ready"] = True`` for rlms; see
``rlm_kernel/scripted/rlms_policy.py``). rlms runs with its OpenAI backend pointed at the server's
base URL and its sub-calls through ``other_backends``; it keeps at most 16 sub-calls in flight
(its LMHandler's fixed cap). Ours runs through ``RLM(...).run`` (the engine and REPL in-process, as
rlms's local REPL is) at concurrency 16 and at --ours-c (64).

Printed per runtime: end-to-end wall, the sub-call phase as the server saw it (first sub request in
to last answer out), its limit ceil(N/c)·L, root and sub request counts, the answer. Then the
wall-time ratios. Needs rlms installed (``bash bench/run.sh`` installs it in bench/.venv); without
it, only our rows are printed.

    python bench/side_by_side.py [--n 256] [--latency 0.25] [--ours-c 64] [--lines 40000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Server, ceil_limit, figure, save, subcall_phase  # noqa: E402


def make_log(lines: int, seed: int = 7) -> tuple[str, int]:
    rng = random.Random(seed)
    levels = ["INFO"] * 8 + ["WARN", "ERROR"]
    out, errors = [], 0
    for i in range(lines):
        lvl = rng.choice(levels)
        errors += lvl == "ERROR"
        out.append(f"2024-05-01T12:{i // 60 % 60:02d}:{i % 60:02d} {lvl} svc-{rng.randint(1, 9)} "
                   f"request {i} handled in {rng.randint(1, 999)} ms")
    return "\n".join(out), errors


def run_ours(url: str, query: str, context: str, c: int) -> tuple[str, float]:
    from rlm_kernel import RLM

    rlm = RLM(model="scripted-root", sub_model="scripted-sub", base_url=url, api_key="bench",
              concurrency=c, max_steps=10)
    t = time.perf_counter()
    res = rlm.run(query, context)
    return str(res.answer), time.perf_counter() - t


def run_rlms(url: str, query: str, context: str) -> tuple[str, float]:
    from rlm import RLM as RefRLM  # rlms 0.1.3

    ref = RefRLM(
        backend="openai",
        backend_kwargs={"model_name": "scripted-root", "base_url": url, "api_key": "bench"},
        other_backends=["openai"],
        other_backend_kwargs=[{"model_name": "scripted-sub", "base_url": url, "api_key": "bench"}],
        environment="local", max_iterations=10,
    )
    t = time.perf_counter()
    res = ref.completion(context, root_prompt=query)
    return str(res.response), time.perf_counter() - t


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=256, help="sub-calls (chunks)")
    p.add_argument("--latency", type=float, default=0.25)
    p.add_argument("--ours-c", type=int, default=64)
    p.add_argument("--lines", type=int, default=40_000)
    a = p.parse_args(argv)
    context, truth = make_log(a.lines)
    query = f"How many lines contain 'ERROR'? [chunks={a.n}]"
    try:
        import rlm  # noqa: F401

        have_rlms = True
    except ImportError:
        have_rlms = False
        print("rlms is not installed here: only this project's rows (bash bench/run.sh installs "
              "rlms==0.1.3 in bench/.venv)", file=sys.stderr)
    runs: list[tuple[str, int, object]] = []
    if have_rlms:
        runs.append(("rlms-0.1.3", 16, lambda u: run_rlms(u, query, context)))
    runs.append(("rlm-kernel", 16, lambda u: run_ours(u, query, context, 16)))
    if a.ours_c != 16:
        runs.append(("rlm-kernel", a.ours_c, lambda u: run_ours(u, query, context, a.ours_c)))
    rows = []
    with Server(a.latency) as server:
        for name, c, fn in runs:
            server.log()
            answer, wall = fn(server.base_url)  # type: ignore[operator]
            log = server.log()
            st = log["stats"]
            phase = subcall_phase(log["spans"])
            limit = ceil_limit(a.n, c, a.latency) or float("nan")  # zero latency: no limit
            row = {"runtime": name, "c": c, "n": a.n, "latency_s": a.latency, "wall_s": wall,
                   "subcall_phase_s": phase, "limit_s": limit, "phase_ratio": phase / limit,
                   "root_requests": st["root_requests"], "sub_requests": st["sub_requests"],
                   "requests": st["requests"], "max_in_flight": st["max_in_flight"],
                   "answer": answer.strip(), "correct": answer.strip() == str(truth)}
            rows.append(row)
            figure(f"side_by_side runtime={name} c={c} n={a.n} wall_s={wall:.3f} "
                   f"subcall_phase_s={phase:.3f} limit_s={limit:.3f} "
                   f"phase_ratio={phase / limit:.3f} root_requests={st['root_requests']} "
                   f"sub_requests={st['sub_requests']} max_in_flight={st['max_in_flight']} "
                   f"correct={row['correct']}")
    ref = next((r for r in rows if r["runtime"].startswith("rlms")), None)
    if ref is not None:
        for r in rows:
            if r is not ref:
                figure(f"side_by_side_ratio ours_c={r['c']} rlms_wall_over_ours="
                       f"{ref['wall_s'] / r['wall_s']:.2f} rlms_phase_over_ours="
                       f"{ref['subcall_phase_s'] / r['subcall_phase_s']:.2f}")
    save("side_by_side", {"truth": truth, "query": query, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
