"""API keys never reach a notebook, an output, a log, an exception or the config display.

Keys come from the environment and from ``%rlm config api_key=...``; an endpoint that quotes the
key back in its error (as some providers do) is used too. Every artifact is scanned: IOPub content,
execute replies, the kernel's own log (stdout/stderr), exported notebooks, and the CLI's output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from rlm_kernel.scripted import ScriptedModel, ScriptedServer

ENV_KEY = "sk-envSECRET-0123456789abcdefghij"
CONFIG_KEY = "sk-cfgSECRET-9876543210zyxwvutsrq"


def _leaks(text: str) -> list[str]:
    found = []
    for key in (ENV_KEY, CONFIG_KEY):
        for piece in (key, key[:12], key[-12:]):
            if piece in text:
                found.append(piece)
    return found


def test_no_artifact_holds_a_key(tmp_path, kernel_factory, echo_key_server, log_context) -> None:
    srv = ScriptedServer(ScriptedModel(), host="127.0.0.1", port=0)
    srv.start()
    log_path = tmp_path / "kernel.log"
    seen: list[str] = []
    try:
        with open(log_path, "w") as log:
            k = kernel_factory({"OPENAI_BASE_URL": srv.base_url, "OPENAI_API_KEY": ENV_KEY,
                                "RLM_MODEL": "scripted-root", "RLM_SUB_MODEL": "scripted-sub"},
                               log=log)
            k.open_comm()

            def run(code: str) -> str:
                ran = k.run(code, cell_id="c")
                # execute_input is the front-end's own echo of what the human typed: the one
                # place a key typed into a cell shows up, before the kernel sees it.
                text = json.dumps([m["content"] for m in ran.msgs
                                   if m["msg_type"] != "execute_input"]) + json.dumps(ran.reply)
                seen.append(text + json.dumps(ran.comm))
                return text

            ctx = tmp_path / "log.txt"
            ctx.write_text(log_context.text)
            run(f"%rlm load {ctx}")
            run("%%rlm\nHow many log lines have level ERROR?")
            assert "set (hidden)" in run("%rlm config")
            run(f"%rlm config api_key={CONFIG_KEY}")
            run("%rlm config")
            run("%rlm status")
            run("%%llm\nhello")
            # An endpoint that quotes the key back in its error message.
            run(f"%rlm config base_url={echo_key_server} max_retries=0")
            echoed = run("%%rlm\nHow many lines contain 'ERROR'?")  # not cached: a new query
            assert "HTTP 400" in echoed and "is not allowed to use this model" in echoed
            run("%%llm\nhello again")
            run("raise RuntimeError(llm.__doc__)")
            run("print(In)")  # the typed key is scrubbed from IPython's history
            run("%history -n")
            out = tmp_path / "export.ipynb"
            run(f"%rlm export {out}")
            seen.append(out.read_text())
            k.close()
    finally:
        srv.stop()
    seen.append(log_path.read_text())  # the kernel's own log
    leaks = [(i, piece, text[max(0, text.find(piece) - 150):text.find(piece) + 50])
             for i, text in enumerate(seen) for piece in _leaks(text)]
    assert not leaks, f"key material leaked: {leaks}"


def test_cli_output_and_trajectory_hold_no_key(tmp_path, echo_key_server, log_context) -> None:
    ctx = tmp_path / "log.txt"
    ctx.write_text(log_context.text)
    out = tmp_path / "t.ipynb"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RLM_"))}
    env.update({"OPENAI_API_KEY": ENV_KEY, "OPENAI_BASE_URL": echo_key_server})
    proc = subprocess.run([sys.executable, "-m", "rlm_kernel", "run", "--context", str(ctx),
                           "--query", "How many log lines have level ERROR?", "--model", "m",
                           "--output", str(out)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode != 0
    assert "HTTP 400" in proc.stderr  # the failure is reported ...
    text = proc.stdout + proc.stderr + (out.read_text() if out.exists() else "")
    assert not _leaks(text)  # ... without the key the endpoint echoed
