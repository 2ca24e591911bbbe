"""Bench 2: needle and counting over 1M / 10M / 100M-token contexts (4 / 40 / 400 MB) through a
real ``rlm`` kernel (``HeadlessKernel``: jupyter_client, the comm, the notebook mirror).

Per run: end-to-end seconds of the ``%%rlm`` cell (the context is loaded first with
``%rlm load``, timed apart), the kernel's peak RSS (VmHWM from /proc/<pid>/status) minus its RSS
before the load, divided by the context's size in bytes, and the trajectory notebook's size.
Tokens are counted as 4 characters. The scripted server runs in its own process with zero
latency (this measures the runtime, not the model). Counting uses ``[chunks=N]`` (default 64)
sub-calls; needle finds its sentence with a regex (no sub-calls).

    python bench/scale.py [--tokens 1e6 1e7 1e8] [--tasks needle count] [--chunks 64]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OUT, Server, figure, save  # noqa: E402


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def write_needle(path: Path, chars: int) -> tuple[str, str]:
    rng = random.Random(11)
    words = ["river", "stone", "quiet", "amber", "field", "lantern", "copper", "meadow", "echo"]
    sentence = " ".join(rng.choice(words) for _ in range(12)) + ". "
    block = sentence * (1_000_000 // len(sentence))
    needle = "One of the special magic numbers for quiet-river is: 7305139. "

    def fill(f, n: int) -> None:
        while n > 0:
            piece = block[:n]
            f.write(piece)
            n -= len(piece)

    with path.open("w") as f:
        fill(f, chars // 2)
        f.write(needle)
        fill(f, chars - chars // 2 - len(needle))
    return ("What is the special magic number for quiet-river mentioned in the provided text?",
            "7305139")


def write_log(path: Path, chars: int) -> tuple[str, str]:
    rng = random.Random(5)
    lines = []
    for i in range(20_000):
        lvl = "ERROR" if rng.random() < 0.1 else "INFO"
        lines.append(f"2024-05-01T12:00:{i % 60:02d} {lvl} svc-{i % 9} request {i} ok")
    block = "\n".join(lines) + "\n"
    errors_per_block = sum("ERROR" in ln for ln in lines)
    reps, rest = divmod(chars, len(block))
    with path.open("w") as f:
        for _ in range(reps):
            f.write(block)
    total = errors_per_block * reps
    return "How many lines contain 'ERROR'?", str(total)


def one(server: Server, task: str, tokens: int, chunks: int, tmp: Path) -> dict:
    from rlm_kernel.headless import HeadlessKernel

    chars = tokens * 4
    ctx = tmp / f"{task}-{tokens}.txt"
    query, gold = (write_needle if task == "needle" else write_log)(ctx, chars)
    if task == "count":
        query += f" [chunks={chunks}]"
    size = ctx.stat().st_size
    nb = OUT / f"scale-{task}-{tokens}.ipynb"
    env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "bench",
           "RLM_MODEL": "scripted-root", "RLM_SUB_MODEL": "scripted-sub",
           "RLM_CONCURRENCY": "64"}
    k = HeadlessKernel(env=env, output=str(nb))
    try:
        pid = k.km.provisioner.process.pid  # type: ignore[union-attr]
        base_kb = status_kb(pid, "VmRSS")
        t0 = time.perf_counter()
        k.execute(f"%rlm load {ctx}", record=False)
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        k.execute(f"%%rlm --max-steps 8\n{query}")
        run_s = time.perf_counter() - t1
        hwm_kb = status_kb(pid, "VmHWM")
        fin = k.last_finish() or {}
    finally:
        k.close()
    ctx.unlink()
    answer = str(fin.get("answer", "")).strip()
    return {"task": task, "tokens": tokens, "context_bytes": size, "load_s": load_s,
            "run_s": run_s, "rss_base_mb": base_kb / 1024, "peak_rss_mb": hwm_kb / 1024,
            "rss_over_context": (hwm_kb - base_kb) * 1024 / size,
            "notebook_bytes": nb.stat().st_size if nb.exists() else 0,
            "answer": answer, "correct": answer == gold}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=float, nargs="+", default=[1e6, 1e7, 1e8])
    p.add_argument("--tasks", nargs="+", default=["needle", "count"])
    p.add_argument("--chunks", type=int, default=64)
    a = p.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    rows = []
    with Server(0.0) as server, tempfile.TemporaryDirectory() as tmp:
        for tokens in a.tokens:
            for task in a.tasks:
                r = one(server, task, int(tokens), a.chunks, Path(tmp))
                rows.append(r)
                figure(f"scale task={task} tokens={int(tokens)} context_mb="
                       f"{r['context_bytes'] / 1e6:.1f} load_s={r['load_s']:.2f} "
                       f"run_s={r['run_s']:.2f} peak_rss_mb={r['peak_rss_mb']:.0f} "
                       f"rss_over_context={r['rss_over_context']:.2f} "
                       f"notebook_kb={r['notebook_bytes'] / 1024:.0f} correct={r['correct']}")
    save("scale", {"rows": rows})
    return rows


if __name__ == "__main__":
    main()
