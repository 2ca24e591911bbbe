"""Write ``cells_transcript.json``: one recorded ``rlm.cells`` v2 session, for both clients' tests.

The transcript is what a front-end receives from the kernel during one run, in arrival order,
including what goes wrong on a loaded machine: a lost message (a seq gap), two duplicates (a
message delivered twice; the second one after the sync, where applying it again would undo the
answers it predates), the ``sync`` that answers the client's ``hello`` after the gap. With it
come the notebook's cells before the run and the cells every client must end with. The Python
``NotebookMirror`` (tests/test_mirror_transcript.py) and the JupyterLab mirror
(widgets/test/transcript.test.ts) replay the same file, so the two clients cannot drift apart.

This generator builds the session by hand from the protocol's definition (rlm_kernel/cells.py);
a transcript recorded from a real kernel run can replace the file: the tests read whatever it
holds (``expected.gaps`` / ``expected.duplicates`` are checked only when present).

    python tests/data/make_cells_transcript.py   # rewrites tests/data/cells_transcript.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("cells_transcript.json")
V = 2
RUN = "r1"
QUERY = "q1"
QUERY_SOURCE = "%%rlm\nHow many lines mention ERROR? [chunks=4]"


def meta(kind: str, **rlm: Any) -> dict[str, Any]:
    return {"rlm": {"kind": kind, "run": RUN, "depth": 0, "parent": None, "version": 1, **rlm}}


def thought(n: int, text: str) -> dict[str, Any]:
    return {"id": f"{RUN}-t{n}", "cell_type": "markdown", "source": f"**Step {n}** · {text}",
            "metadata": meta("thought", step=n, status="running")}


def step(n: int, code: str, status: str = "running", count: int | None = None,
         outputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"id": f"{RUN}-s{n}", "cell_type": "code",
            "source": f"# rlm: run={RUN} step={n}\n{code}",
            "metadata": meta("step", step=n, status=status), "outputs": outputs or [],
            "execution_count": count}


def stdout(text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": "stdout", "text": text}


def call(k: int, status: str, response: str | None = None, error: str | None = None,
         tokens: tuple[int, int] = (0, 0), latency: float = 0.0) -> dict[str, Any]:
    """A sub-call cell as the kernel builds it (collapsed; the response is its output)."""
    prompt = f"Count the lines containing ERROR in chunk {k} of the log:\n<text>..."
    rec = {"call_id": f"{RUN}-s2c{k}", "model": "scripted-sub", "status": status,
           "prompt_preview": prompt, "prompt_chars": 5000, "error": error,
           "usage": {"prompt_tokens": tokens[0], "completion_tokens": tokens[1]},
           "latency_s": latency, "batch_id": "b1", "batch_index": k}
    rlm = {"call": rec, "step": 2, "batch_id": "b1"}
    outputs: list[dict[str, Any]] = []
    if status == "ok":
        outputs = [{"output_type": "execute_result", "data": {"text/plain": response},
                    "metadata": {}, "execution_count": None}]
        rlm["summary"] = (f"Count the lines containing ERROR in chunk {k}… → {response} · "
                          f"{sum(tokens)} tok · {latency:.2f} s")
    elif status in ("error", "cancelled"):
        outputs = [{"output_type": "stream", "name": "stderr", "text": f"[{status}] {error}\n"}]
    md = meta("llm", **rlm)
    md["jupyter"] = {"source_hidden": True, "outputs_hidden": True}
    return {"id": f"{RUN}-s2c{k}", "cell_type": "code",
            "source": f"%%llm --call {RUN}-s2c{k} --model scripted-sub\n{prompt}",
            "metadata": md, "outputs": outputs, "execution_count": None}


def status(state: str, step_n: int, done: int = 0, queued: int = 0, inflight: int = 0,
           failed: int = 0, cancelled: int = 0, tokens: int = 0, elapsed: float = 0.0,
           reason: str | None = None) -> dict[str, Any]:
    return {"state": state, "step": step_n, "max_steps": 30,
            "subcalls": {"done": done, "queued": queued, "inflight": inflight, "failed": failed,
                         "cancelled": cancelled},
            "tokens": tokens, "cost_usd": 0.0, "elapsed_s": elapsed, "reason": reason}


def insert(cell: dict[str, Any], after: str) -> dict[str, Any]:
    return {"type": "insert", "run": RUN, "id": cell["id"], "anchor": QUERY, "after": after,
            "kind": cell["metadata"]["rlm"]["kind"], "cell": cell}


def update(cell_id: str, **patch: Any) -> dict[str, Any]:
    return {"type": "update", "run": RUN, "id": cell_id, "patch": patch}


def status_msg(payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": "status", "run": RUN, "anchor": QUERY, "status": payload}


class Session:
    """Numbers messages as the kernel does: one counter, +1 per message sent."""

    def __init__(self) -> None:
        self.seq = 0
        self.sent: dict[int, dict[str, Any]] = {}

    def send(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        out = {"v": V, "seq": self.seq, **msg}
        self.sent[self.seq] = out
        return out

    def batch(self, *msgs: dict[str, Any]) -> dict[str, Any]:
        return self.send({"type": "batch", "msgs": list(msgs)})


def build() -> dict[str, Any]:
    initial = [
        {"id": "c0", "cell_type": "code", "source": "%rlm load service.log", "metadata": {},
         "outputs": [], "execution_count": 1},
        {"id": QUERY, "cell_type": "code", "source": QUERY_SOURCE, "metadata": {},
         "outputs": [], "execution_count": None},
        {"id": "tail", "cell_type": "code", "source": "", "metadata": {}, "outputs": [],
         "execution_count": None},
    ]
    header = {"run_id": RUN, "query": "How many lines mention ERROR? [chunks=4]", "status": "running"}
    t1 = thought(1, "I look at the context first.")
    s1 = step(1, "print(len(context.splitlines()))")
    s1_done = step(1, "print(len(context.splitlines()))", "done", 3, [stdout("2000\n")])
    t2 = thought(2, "I count in four chunks with llm_batch.")
    s2 = step(2, "answers = llm_batch(prompts)\nprint(answers)")
    s2_done = step(2, "answers = llm_batch(prompts)\nprint(answers)", "done", 4,
                   [stdout("['3', '4', '6', None]\n")])
    c = {k: call(k, "queued") for k in range(4)}
    c_ok = {0: call(0, "ok", "3", tokens=(400, 2), latency=0.25),
            1: call(1, "ok", "4", tokens=(401, 2), latency=0.26),
            2: call(2, "ok", "6", tokens=(402, 2), latency=0.24),
            3: call(3, "error", error="HTTP 500 from the model server")}
    t3 = thought(3, "The sum of the counts is the answer.")
    s3_done = step(3, "FINAL_VAR('total')", "done", 5, [stdout("13\n")])
    final = {"id": f"{RUN}-final3", "cell_type": "markdown",
             "source": f"**Final answer** (run `{RUN}`):\n\n> 13",
             "metadata": meta("final", answer="13", status="final", reason=None)}

    k = Session()
    received: list[dict[str, Any]] = []
    recv = received.append
    recv(k.send(update(QUERY, metadata=meta("query", header=header))))
    recv(k.send(status_msg(status("running", 0))))
    recv(k.batch(insert(t1, QUERY), insert(s1, t1["id"])))
    recv(k.send(update(s1["id"], execution_count=3, outputs=s1_done["outputs"],
                       metadata=s1_done["metadata"])))
    for_s2 = [insert(t2, s1["id"]), insert(s2, t2["id"])]
    after = s2["id"]
    for i in range(4):
        for_s2.append(insert(c[i], after))
        after = c[i]["id"]
    for_s2.append(status_msg(status("running", 2, queued=2, inflight=2, tokens=900)))
    recv(k.batch(*for_s2))
    # Lost on the way (IOPub dropped it): the first two answers.
    k.batch(update(c_ok[0]["id"], outputs=c_ok[0]["outputs"], metadata=c_ok[0]["metadata"]),
            update(c_ok[1]["id"], outputs=c_ok[1]["outputs"], metadata=c_ok[1]["metadata"]))
    inflight = {i: call(i, "inflight") for i in (2, 3)}
    recv(k.batch(update(inflight[2]["id"], metadata=inflight[2]["metadata"]),
                 update(inflight[3]["id"], metadata=inflight[3]["metadata"]),
                 status_msg(status("running", 2, done=2, inflight=2, tokens=1707))))
    # The client saw the gap (6 missing) and said hello; the kernel sends more meanwhile.
    recv(k.batch(update(c_ok[2]["id"], outputs=c_ok[2]["outputs"], metadata=c_ok[2]["metadata"]),
                 update(c_ok[3]["id"], outputs=c_ok[3]["outputs"], metadata=c_ok[3]["metadata"])))
    recv(k.sent[7])  # a duplicate: the same batch delivered twice
    # The reply to hello: the whole run as of message 8.
    recv({"v": V, "type": "sync", "seq": k.seq, "runs": [{
        "run": RUN, "anchor": QUERY,
        "cells": [t1, s1_done, t2, s2, c_ok[0], c_ok[1], c_ok[2], c_ok[3]],
        "status": status("running", 2, done=3, failed=1, tokens=1213),
        "finished": None}]})
    recv(k.send(update(s2["id"], execution_count=4, outputs=s2_done["outputs"],
                       metadata=s2_done["metadata"])))
    recv(k.sent[5])  # a late duplicate: re-applied, it would empty the four answers again
    recv(k.batch(insert(t3, c_ok[3]["id"]), insert(step(3, "FINAL_VAR('total')"), t3["id"])))
    recv(k.send(update(s3_done["id"], execution_count=5, outputs=s3_done["outputs"],
                       metadata=s3_done["metadata"])))
    done_header = {**header, "status": "final", "answer": "13"}
    recv(k.batch(insert(final, s3_done["id"]),
                 update(QUERY, metadata=meta("query", header=done_header)),
                 status_msg(status("final", 3, done=3, failed=1, tokens=1213, elapsed=1.9)),
                 {"type": "finish", "run": RUN, "anchor": QUERY, "outcome": "final",
                  "answer": "13", "reason": None}))

    end = [initial[0], {**initial[1]}, t1, s1_done, t2, s2_done, c_ok[0], c_ok[1], c_ok[2],
           c_ok[3], t3, s3_done, final, initial[2]]
    end[1]["metadata"] = meta("query", header=done_header)
    expected_cells = [{
        "id": cell["id"], "cell_type": cell["cell_type"], "source": cell["source"],
        "kind": cell["metadata"].get("rlm", {}).get("kind"),
        **({"outputs": cell["outputs"]} if cell["cell_type"] == "code" else {}),
    } for cell in end]
    return {
        "protocol": V,
        "description": "one run (4 sub-calls, one failed) with a lost message, two duplicates "
                       "and the sync that answers the client's hello; see "
                       "make_cells_transcript.py",
        "initial_cells": initial,
        "messages": received,
        "expected": {
            "cells": expected_cells,
            "gaps": 1,
            "duplicates": 2,
            "runs": {RUN: {"outcome": "final", "answer": "13"}},
        },
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
