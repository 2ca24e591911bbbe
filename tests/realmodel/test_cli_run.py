"""``rlm-kernel run`` through a real kernel against the real server, with the default bounds:
the run ends within its budget with a clear stop reason, and the server is free at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx2
from realmodel_support import LlamaServer


def test_a_default_run_ends_within_its_wall_time_and_leaves_the_server_free(
        llama_server: LlamaServer, tmp_path: Path) -> None:
    """With root_max_tokens 8192 a base 270M model writes to the end of its window (minutes per
    step here): the wall-time budget cancels the root call mid-stream, which closes the stream,
    so the server stops generating and the next request is served at once."""
    context = tmp_path / "log.txt"
    context.write_text("".join(f"line {i} ok\n" for i in range(50)))
    out = tmp_path / "t.ipynb"
    cmd = [sys.executable, "-m", "rlm_kernel", "run", "--context", str(context),
               "--query", "How many lines?", "--max-wall-time", "20", "--output", str(out)]
    env = {**os.environ, "OPENAI_BASE_URL": llama_server.base_url, "RLM_MODEL": llama_server.model}
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    ended = time.monotonic()
    answer = httpx2.post(f"{llama_server.base_url}/chat/completions", timeout=120, json={
        "model": llama_server.model, "max_tokens": 1,
        "messages": [{"role": "user", "content": "Hi"}]})
    freed = time.monotonic() - ended
    print(f"FIGURE rlm-kernel run with default bounds: {ended - started:.1f} s (max_wall_time 20 s, "
          f"kernel start included); next request answered {freed:.2f} s after it ended")
    assert "wall-time budget exhausted: 20 s (max_wall_time)" in proc.stderr + proc.stdout, (
        proc.stdout, proc.stderr)
    assert answer.status_code == 200 and freed < 10
    nb = json.loads(out.read_text())
    sources = ["".join(c["source"]) for c in nb["cells"]]
    assert any("stopped while writing: never run" in s for s in sources), sources
    assert any("ended without an answer" in s for s in sources)
