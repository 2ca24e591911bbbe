"""Regenerate the rlms log fixtures: real runs of rlms 0.1.3 against the scripted server.

The importer tests (``tests/test_rlms_import.py`` and the e2e import test) read logs that the
reference runtime itself wrote with its ``RLMLogger``, not hand-written ones. This script makes
them: it starts ``rlm-kernel serve-scripted`` on 127.0.0.1 (the scripted model plays rlms's
convention there, see ``rlm_kernel/scripted/rlms_policy.py``), runs rlms on small generated
contexts, and writes each run's JSONL log and its context file here.

rlms is not a dependency of this project: run the script with a Python that has it, and point
``--server-python`` at one that can import this repository's package (its dependencies)::

    python3 -m venv /tmp/rlms-venv && /tmp/rlms-venv/bin/pip install rlms==0.1.3
    /tmp/rlms-venv/bin/python tests/data/rlms_logs/generate.py --server-python "$(which python)"

Logs: ``count`` (peek, ``llm_query_batched``, the ``answer`` dict), ``needle_children``
(``rlm_query_batched`` with max_depth=2: each child RLM's own trajectory is nested in the log),
``best_effort`` (the iteration budget runs out; rlms's extra "final answer" turn answers),
``persistent`` (``persistent=True``: two queries in one environment, one log).
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def log_lines(n: int, seed: int) -> str:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        level = rng.choices(["INFO", "DEBUG", "WARN", "ERROR"], [60, 20, 12, 8])[0]
        out.append(f"2025-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z {level} svc-{i % 7} "
                   f"request {i} took {rng.randint(1, 999)} ms")
    return "\n".join(out)


def haystack(n_chars: int, key: str, value: str, seed: int) -> str:
    rng = random.Random(seed)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]
    parts, size = [], 0
    while size < n_chars:
        s = " ".join(rng.choice(words) for _ in range(rng.randint(6, 12))).capitalize() + ". "
        parts.append(s)
        size += len(s)
    text = "".join(parts)
    at = text.find(". ", int(len(text) * 0.7)) + 2
    return text[:at] + f"One of the special magic numbers for {key} is: {value}. " + text[at:]


def start_server(python: str) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([python, "-m", "rlm_kernel", "serve-scripted", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise SystemExit(f"the scripted server did not start (first line: {url!r})")
    return proc, url


def run(name: str, url: str, body: Callable[[Any, Any], None]) -> None:
    """Run ``body(RLM, logger)`` with a fresh RLMLogger; keep its one log file as NAME.jsonl."""
    from rlm.logger import RLMLogger

    tmp = tempfile.mkdtemp(prefix="rlms-log-")
    try:
        logger = RLMLogger(log_dir=tmp, file_name=name)
        body(_factory(url, logger), logger)
        (path,) = glob.glob(os.path.join(tmp, "*.jsonl"))
        shutil.copyfile(path, HERE / f"{name}.jsonl")
        print(f"wrote {name}.jsonl ({os.path.getsize(path):,} bytes)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _factory(url: str, logger: Any) -> Callable[..., Any]:
    from rlm import RLM

    def make(**kw: Any) -> Any:
        return RLM(backend="openai",
                   backend_kwargs={"model_name": "scripted-root", "base_url": url,
                                   "api_key": "scripted-no-key"},
                   other_backends=["openai"],
                   other_backend_kwargs=[{"model_name": "scripted-sub", "base_url": url,
                                          "api_key": "scripted-no-key"}],
                   environment="local", logger=logger, **kw)
    return make


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server-python", default=sys.executable,
                   help="a Python that can import rlm_kernel (default: this one)")
    a = p.parse_args(argv)
    try:
        import rlm  # noqa: F401
    except ImportError:
        print("rlms is not installed in this Python: pip install rlms==0.1.3", file=sys.stderr)
        return 2
    server, url = start_server(a.server_python)
    try:
        count_ctx = log_lines(120, seed=3)
        (HERE / "count_context.txt").write_text(count_ctx, encoding="utf-8")
        run("count", url, lambda make, _: make(max_iterations=6).completion(
            count_ctx, root_prompt="How many lines contain 'ERROR'? [chunks=4]"))

        needle_ctx = haystack(2_500, "quiet-river", "4417093", seed=5)
        (HERE / "needle_children_context.txt").write_text(needle_ctx, encoding="utf-8")
        run("needle_children", url, lambda make, _: make(max_iterations=6, max_depth=2).completion(
            needle_ctx, root_prompt="What is the special magic number for quiet-river mentioned "
                                    "in the provided text? [strategy=rlm_query_batched] [chunks=2]"))

        run("best_effort", url, lambda make, _: make(max_iterations=3).completion(
            count_ctx, root_prompt="How many lines contain 'ERROR'? [stall=yes]"))

        second_ctx = log_lines(60, seed=4)
        (HERE / "persistent_context_2.txt").write_text(second_ctx, encoding="utf-8")

        def persistent(make: Callable[..., Any], _: Any) -> None:
            with make(max_iterations=6, persistent=True) as rlm:
                rlm.completion(count_ctx, root_prompt="How many lines contain 'WARN'? [chunks=2]")
                rlm.completion(second_ctx, root_prompt="How many lines contain 'ERROR'? [chunks=2]")
        run("persistent", url, persistent)
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
