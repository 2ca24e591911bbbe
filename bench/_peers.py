"""One measured job in a scratch process: ``python bench/_peers.py JOB --url URL ...``.

Jobs (each prints one ``RESULT {json}`` line: the answer and the job's own seconds):

- ``library``: ``rlm_kernel.RLM(...).run(query, context)`` at ``--c``.
- ``rlms``: rlms 0.1.3 (``rlm.RLM``), OpenAI backend at the server, sub-calls through
  ``other_backends``, local REPL. ``--c N`` patches its batch cap (``LMHandler``'s
  ``batch_max_concurrent``, fixed at 16) to N at run time in this process only: the class that
  ``rlm.core.rlm`` instantiates is replaced by a subclass; no installed file is touched.
- ``dspy``: ``dspy.RLM("context, query -> answer")`` with ``dspy.LM("openai/scripted-root",
  api_base=URL, cache=False)``; its REPL is dspy's ``PythonInterpreter`` (Deno + Pyodide). The one
  module dspy's runner imports by URL from a non-registry host is mapped to a local stand-in
  (``bench/dspy_runtime``, Deno's ``--import-map``); Pyodide itself comes from the npm registry
  through Deno's ``npm:`` specifier. ``--c N`` patches ``llm_query_batched``'s thread count (8)
  to N at run time.
- ``openai``: the raw ``openai.AsyncOpenAI`` client, ``--n`` counting prompts at ``--c``.
- ``threads``: ``--c`` plain threads, each with one keep-alive ``http.client`` connection
  (TCP_NODELAY), sending ``--n`` counting prompts (blocking HTTP): the floor a client can reach.

Only the standard library is imported at the top: this file runs under several interpreters.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COUNT_HEAD = ("Count the lines of the text below that contain the exact text 'ERROR' (case-sensitive)."
              " Answer with a number only.\n<text>\n")


def count_prompts(text: str, n: int) -> list[str]:
    """n counting prompts over line-aligned chunks of ``text`` (the scripted counting policy's
    sub-prompt shape, so the scripted sub policy answers them)."""
    cuts = [0]
    for i in range(1, n):
        j = text.find("\n", max(cuts[-1], i * len(text) // n))
        cuts.append(len(text) if j < 0 else j + 1)
    cuts.append(len(text))
    return [COUNT_HEAD + text[a:b].rstrip("\n") + "\n</text>" for a, b in
            zip(cuts, cuts[1:], strict=False)]


def job_library(a: argparse.Namespace, context: str) -> str:
    from rlm_kernel import RLM

    kw = {"concurrency": a.c} if a.c else {}
    rlm = RLM(model="scripted-root", sub_model="scripted-sub", base_url=a.url, api_key="bench",
              max_steps=a.max_steps, **kw)
    result = rlm.run(a.query, context)
    if a.save:
        result.save(a.save)
    return str(result.answer)


def job_rlms(a: argparse.Namespace, context: str) -> str:
    import rlm.core.rlm as core
    from rlm import RLM as RefRLM

    if a.c:
        base = core.LMHandler
        cap = a.c

        class CapPatched(base):  # type: ignore[misc, valid-type]
            def __init__(self, *args, **kw):
                kw["batch_max_concurrent"] = cap
                super().__init__(*args, **kw)

        core.LMHandler = CapPatched
    ref = RefRLM(
        backend="openai",
        backend_kwargs={"model_name": "scripted-root", "base_url": a.url, "api_key": "bench"},
        other_backends=["openai"],
        other_backend_kwargs=[{"model_name": "scripted-sub", "base_url": a.url, "api_key": "bench"}],
        environment="local", max_iterations=a.max_steps,
    )
    return str(ref.completion(context, root_prompt=a.query).response)


def job_dspy(a: argparse.Namespace, context: str) -> str:
    os.environ.setdefault("DENO_NO_PACKAGE_JSON", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of a price map
    import dspy
    from dspy.primitives.python_interpreter import PythonInterpreter

    cmd = list(PythonInterpreter().deno_command)
    cmd.insert(cmd.index("run") + 1, f"--import-map={HERE / 'dspy_runtime' / 'import_map.json'}")
    if a.c:
        make_tools = dspy.RLM._make_llm_tools
        workers = a.c

        def patched(self, budget=None, max_workers=8):
            return make_tools(self, budget, max_workers=workers)

        dspy.RLM._make_llm_tools = patched
    lm = dspy.LM("openai/scripted-root", api_base=a.url, api_key="bench", cache=False,
                 num_retries=0)
    dspy.configure(lm=lm)
    rlm = dspy.RLM("context, query -> answer", max_iters=a.max_steps, max_llm_calls=1_000_000,
                   interpreter_factory=lambda: PythonInterpreter(deno_command=cmd))
    return str(rlm(context=context, query=a.query).answer)


def job_openai(a: argparse.Namespace, context: str) -> str:
    import asyncio

    from openai import AsyncOpenAI

    prompts = count_prompts(context, a.n)

    async def main() -> list[str]:
        client = AsyncOpenAI(base_url=a.url, api_key="bench", max_retries=0)
        sem = asyncio.Semaphore(a.c or 64)

        async def one(p: str) -> str:
            async with sem:
                r = await client.chat.completions.create(
                    model="scripted-sub", messages=[{"role": "user", "content": p}])
                return r.choices[0].message.content or ""

        try:
            return await asyncio.gather(*(one(p) for p in prompts))
        finally:
            await client.close()

    return str(sum(int(x) for x in asyncio.run(main())))


def job_threads(a: argparse.Namespace, context: str) -> str:
    import http.client
    import queue
    import socket
    import threading
    from urllib.parse import urlsplit

    u = urlsplit(a.url)
    path = u.path.rstrip("/") + "/chat/completions"
    todo: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()
    for i, p in enumerate(count_prompts(context, a.n)):
        todo.put((i, p))
    answers: list[str] = [""] * a.n
    errors: list[BaseException] = []

    def worker() -> None:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                try:
                    i, p = todo.get_nowait()
                except queue.Empty:
                    return
                body = json.dumps({"model": "scripted-sub",
                                   "messages": [{"role": "user", "content": p}]})
                conn.request("POST", path, body=body, headers={
                    "content-type": "application/json", "authorization": "Bearer bench"})
                resp = conn.getresponse()
                data = json.loads(resp.read())
                answers[i] = data["choices"][0]["message"]["content"]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(a.c or 256)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return str(sum(int(x) for x in answers))


JOBS = {"library": job_library, "rlms": job_rlms, "dspy": job_dspy, "openai": job_openai,
        "threads": job_threads}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("job", choices=sorted(JOBS))
    p.add_argument("--url", required=True)
    p.add_argument("--context", required=True, help="file whose text is the context")
    p.add_argument("--query", default="How many lines contain 'ERROR'?")
    p.add_argument("--c", type=int, default=0, help="concurrency (0: the runtime's default)")
    p.add_argument("--n", type=int, default=1, help="prompts (openai, threads)")
    p.add_argument("--max-steps", type=int, default=30)
    p.add_argument("--save", help="library: write the trajectory notebook here")
    a = p.parse_args(argv)
    context = Path(a.context).read_text()
    t0 = time.perf_counter()
    answer = JOBS[a.job](a, context)
    run_s = time.perf_counter() - t0
    print("RESULT " + json.dumps({"answer": answer.strip(), "run_s": run_s}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
