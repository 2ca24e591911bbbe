"""Bench 3 and 5: kernel overhead per root step, and root prompt prefix stability.

3. A needle query over a 1 MB context runs through a real ``rlm`` kernel (HeadlessKernel) against
   the scripted server with zero latency; per root step = the ``%%rlm`` cell's wall / steps. The
   same step code (read back from the trajectory's step cells) then runs cell by cell in a plain
   ipykernel (python3) holding the same ``context``; per step = mean execute round trip. Goal:
   rlm per step <= 1.2 x plain + 5 ms. The rlm figure includes a model request per step (zero
   latency, loopback), the engine, the REPL and the cell emission: everything but model time.
5. The server logs every root request of that run (and of a counting run); for each root request
   but the last of its conversation: the share of its serialized messages that is an exact prefix
   of the next request's (goal 100%).

    python bench/overhead.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OUT, Server, figure, save  # noqa: E402
from scale import write_log, write_needle  # noqa: E402

ENV = {"OPENAI_API_KEY": "bench", "RLM_MODEL": "scripted-root", "RLM_SUB_MODEL": "scripted-sub"}


def prefix_shares(roots: list[list[dict]]) -> list[float]:
    """For consecutive root requests of one conversation (same first two messages): the share of
    request k's serialized message list that request k+1's starts with."""
    def ser(msgs: list[dict]) -> str:
        return json.dumps(msgs, sort_keys=True, ensure_ascii=False)[:-1]  # open list: a prefix

    shares = []
    for a, b in zip(roots, roots[1:], strict=False):
        if a[:2] != b[:2]:
            continue  # a new conversation begins
        sa, sb = ser(a), ser(b)
        common = 0
        for x, y in zip(sa, sb, strict=False):
            if x != y:
                break
            common += 1
        shares.append(common / len(sa))
    return shares


def rlm_steps(server: Server, ctx: Path, query: str, repeat: int
              ) -> tuple[list[float], list[str], list[list[dict]]]:
    """``repeat`` timed runs of ``query`` in one kernel, after one untimed warm-up run (imports,
    connections). Each run's query carries a distinct ``[run=k]`` directive (ignored by the
    policies) so no run is served from the cache of the one before."""
    import nbformat

    from rlm_kernel.headless import HeadlessKernel

    nb = OUT / "overhead.ipynb"
    k = HeadlessKernel(env={**ENV, "OPENAI_BASE_URL": server.base_url}, output=str(nb))
    walls, roots = [], []
    try:
        k.execute(f"%rlm load {ctx}", record=False)
        k.execute(f"%%rlm --max-steps 8\n{query} [run=warm]", record=False)
        server.log()
        for i in range(repeat):
            t = time.perf_counter()
            k.execute(f"%%rlm --max-steps 8\n{query} [run={i}]")
            walls.append(time.perf_counter() - t)
        roots = server.log()["root"]
    finally:
        k.close()
    cells = nbformat.read(str(nb), as_version=4).cells
    codes = [c.source for c in cells if c.get("metadata", {}).get("rlm", {}).get("kind") == "step"]
    steps = max(1, len(codes) // max(1, repeat))
    return [w / steps for w in walls], codes[:steps], roots


def plain_steps(ctx: Path, codes: list[str], repeat: int) -> float:
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        prelude = (f"context = open({str(ctx)!r}).read()\n"
                   "def FINAL(x): pass\ndef FINAL_VAR(x): pass\n")
        kc.execute_interactive(prelude, timeout=60)
        times = []
        for _ in range(repeat):
            for code in codes:
                t = time.perf_counter()
                kc.execute_interactive(code, timeout=60, output_hook=lambda m: None)
                times.append(time.perf_counter() - t)
        return statistics.mean(times)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--chars", type=int, default=1_000_000)
    p.add_argument("--count-chars", type=int, default=400_000,
                   help="size of the counting run's context for the prefix figure (0: skip it)")
    a = p.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    out: dict = {}
    with Server(0.0) as server, tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp) / "needle.txt"
        query, _ = write_needle(ctx, a.chars)
        per_rlm, codes, roots_all = rlm_steps(server, ctx, query, a.repeat)
        rlm_step = statistics.median(per_rlm)
        plain = plain_steps(ctx, codes, a.repeat)
        goal = 1.2 * plain + 0.005
        out["overhead"] = {"steps": len(codes), "rlm_step_s": rlm_step, "plain_step_s": plain,
                           "ratio": rlm_step / plain, "goal_s": goal, "met": rlm_step <= goal}
        figure(f"overhead steps={len(codes)} rlm_ms_per_step={1000 * rlm_step:.1f} "
               f"plain_ms_per_step={1000 * plain:.1f} ratio={rlm_step / plain:.2f} "
               f"goal_ms={1000 * goal:.1f} met={rlm_step <= goal}")
        shares = prefix_shares(roots_all)
        if a.count_chars:
            log_ctx = Path(tmp) / "log.txt"
            cq, _ = write_log(log_ctx, a.count_chars)
            shares += prefix_shares(rlm_steps(server, log_ctx, cq + " [chunks=16]", 1)[2])
        exact = sum(s == 1.0 for s in shares)
        out["prefix"] = {"pairs": len(shares), "exact": exact,
                         "min_share": min(shares) if shares else None,
                         "mean_share": statistics.mean(shares) if shares else None}
        figure(f"prefix pairs={len(shares)} exact_prefix={exact}/{len(shares)} "
               f"mean_share={out['prefix']['mean_share']:.4f} "
               f"min_share={out['prefix']['min_share']:.4f}")
    save("overhead", out)
    return out


if __name__ == "__main__":
    main()
