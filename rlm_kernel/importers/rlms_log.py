"""Import an rlms trajectory log (its ``RLMLogger`` JSONL) as a trajectory notebook.

Why: users of the reference runtime (``rlms``, PyPI 0.1.3) have their runs as JSONL logs; imported,
a run opens in JupyterLab step by step like one recorded here, and can be replayed.

The log (rlms 0.1.3): one ``{"type": "metadata", ...}`` record per logger (``root_model``,
``max_depth``, ``max_iterations``, ``backend``, ``backend_kwargs``, ``environment_type``,
``environment_kwargs``, ``other_backends``, ``timestamp``), then one ``{"type": "iteration", ...}``
record per root turn: ``iteration`` (1-based; it starts again at 1 when a persistent RLM answers
its next query, so one log may hold several runs), ``timestamp``, ``prompt`` (the whole message
list sent), ``response`` (the reply), ``code_blocks`` (each ```repl block run:
``{"code", "result": {"stdout", "stderr", "locals", "execution_time", "rlm_calls",
"final_answer"}}``), ``final_answer`` and ``iteration_time``. ``rlm_calls`` are the sub-calls a
block made: ``{"root_model", "prompt", "response", "usage_summary", "execution_time"}`` plus
``metadata`` (a child RLM's own ``run_metadata`` and ``iterations``) when ``rlm_query`` ran a
child, or ``error``. When rlms runs out of iterations it asks once more for a final answer: that
record's prompt ends with an assistant message and it has no code blocks.

Mapping: each run is a :class:`Run`, each iteration a :class:`Step` (the blocks' code joined, their
stdout/stderr as stream outputs, what the model was shown as ``output_text``), each plain sub-call
a :class:`SubCall` (keyed as this project's client keys it, so replay serves it), each child RLM a
child :class:`Run`. rlms's out-of-iterations answer is the last step, marked best-effort. rlms
logs no token counts for root turns, and never the context: pass the context file(s) with
``--context`` so that replay can re-run the code (the log's recorded lengths are checked).

Replay of an imported run is by recorded step order, not by cache key: this project's engine
asks the root model with its own prompts, whose keys differ from rlms's, so the k-th root call
of the replayed run is served the k-th recorded reply (``settings["imported"]["replay"]``).
Sub-calls are served by key, as in any replay.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..config import RLMConfig
from ..lm.cache import cache_key
from ..states import CallState, RunState, StepState
from ..trajectory import ContextInfo, Run, Step, SubCall, Usage, preview, sha256_text

__all__ = ["ImportedLog", "LogFormatError", "import_log", "to_notebook", "main", "FORMAT",
           "REPLAY_BY_ORDER"]

FORMAT = "rlms-jsonl"
REPLAY_BY_ORDER = "by-step-order"

_ASK_RE = re.compile(r"\AAnswer the following: (.*?)\n\nYour context is ", re.S)
_CONTEXT_RE = re.compile(r"Your context is a (\w+) of (\d+) total characters")
_BLOCK_RE = re.compile(r"```repl\s*\n(.*?)\n```", re.S)  # the blocks rlms runs
_EXC_RE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)): (.*)$", re.M)
#: backend kwargs worth keeping; others (headers, tokens...) may hold secrets and are dropped.
_SAFE_KWARGS = ("model_name", "base_url", "sampling_args")


class LogFormatError(ValueError):
    """The file is not an rlms trajectory log (the message says where and why)."""


@dataclass
class ImportedLog:
    """The runs of one log: ``roots`` in order, ``runs`` by id (children included)."""

    roots: list[Run]
    runs: dict[str, Run]
    source: str
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Reading


def read_records(path: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise LogFormatError(f"{path} line {number} is not JSON ({exc}); is this an rlms "
                                     "RLMLogger .jsonl file?") from None
            if not isinstance(rec, dict) or rec.get("type") not in ("metadata", "iteration"):
                raise LogFormatError(f"{path} line {number} is not an rlms log record (no "
                                     "\"type\": \"metadata\" or \"iteration\")")
            records.append(rec)
    if not any(r["type"] == "iteration" for r in records):
        raise LogFormatError(f"{path} holds no iteration record: nothing to import")
    return records


def _split_runs(iterations: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """One list per completion: the iteration counter starts again at 1 for each."""
    runs: list[list[dict[str, Any]]] = []
    last = None
    for rec in iterations:
        n = rec.get("iteration")
        if not runs or (isinstance(n, int) and isinstance(last, int) and n <= last):
            runs.append([])
        runs[-1].append(rec)
        last = n
    return runs


def _timestamp(rec: dict[str, Any]) -> float | None:
    try:
        return datetime.fromisoformat(str(rec.get("timestamp"))).timestamp()
    except ValueError:
        return None


def _messages(prompt: Any) -> list[dict[str, Any]]:
    if isinstance(prompt, list):
        return [m for m in prompt if isinstance(m, dict)]
    return [{"role": "user", "content": str(prompt)}]


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)


# --------------------------------------------------------------------------------------------------
# Building runs


class _Builder:
    def __init__(self, source: str, digest: str, contexts: list[str], cfg: RLMConfig) -> None:
        self.source = source
        self.digest = digest
        self.contexts = list(contexts)
        self.cfg = cfg
        self.runs: dict[str, Run] = {}
        self.warnings: list[str] = []

    def run(self, meta: dict[str, Any], iterations: list[dict[str, Any]], *, run_id: str,
            depth: int = 0, parent: Run | None = None, parent_step: int | None = None,
            child_prompt: str | None = None) -> Run:
        first = _messages(iterations[0].get("prompt"))
        users = [_text(m) for m in first if m.get("role") == "user"]
        head = users[0] if users else ""
        asked = _ASK_RE.match(head)
        if asked:
            query = asked.group(1).strip()
        elif child_prompt is not None:
            query = preview(child_prompt, 400)
        else:
            query = "(rlms run without a root prompt: the task is in the context)"
        run = Run(run_id=run_id, query=query, model=str(meta.get("root_model") or ""),
                  depth=depth, parent=parent.run_id if parent else None, parent_step=parent_step,
                  context=self._context(head, child_prompt, depth))
        run.settings = self._settings(meta, run)
        started = _timestamp(iterations[0])
        if started is not None:
            run.started = started
        self.runs[run.run_id] = run
        for index, rec in enumerate(iterations):
            nxt = iterations[index + 1] if index + 1 < len(iterations) else None
            self._step(run, rec, nxt, int(meta.get("max_iterations") or 0))
        sub_models = [c.model for c in run.subcalls.values()]
        run.sub_model = sub_models[0] if sub_models else run.model
        last = run.steps[-1] if run.steps else None
        run.answer = last.final if last is not None else None
        if run.answer is not None:
            run.move(RunState.FINAL)
        else:
            run.move(RunState.STOPPED)
            run.stop_reason = "the rlms log ends without a final answer"
        ended = _timestamp(iterations[-1])
        run.ended = ended if ended is not None else run.started
        return run

    def _context(self, head: str, child_prompt: str | None, depth: int) -> ContextInfo:
        if child_prompt is not None:
            # rlm_query hands its prompt to the child as the child's context: the log holds it.
            return ContextInfo.describe(child_prompt, source="rlm_query prompt (in the log)")
        m = _CONTEXT_RE.search(head)
        kind, length = (m.group(1), int(m.group(2))) if m else ("str", 0)
        if depth == 0 and self.contexts:
            path = self.contexts.pop(0)
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
            info = ContextInfo.describe(text, source=os.path.abspath(path))
            if m and (info.type != kind or info.length != length):
                raise LogFormatError(
                    f"the context file {path} is a {info.type} of {info.length:,} characters but "
                    f"the logged run's context was a {kind} of {length:,}: pass the file the run "
                    "used (in run order with --context)")
            return info
        return ContextInfo(type=kind, length=length,
                           source="" if depth else "(not in the rlms log: import with --context)")

    def _settings(self, meta: dict[str, Any], run: Run) -> dict[str, Any]:
        raw = meta.get("backend_kwargs")
        kwargs: dict[str, Any] = raw if isinstance(raw, dict) else {}
        rlms = {k: meta.get(k) for k in ("root_model", "max_depth", "max_iterations", "backend",
                                          "environment_type", "other_backends")}
        rlms["backend_kwargs"] = {k: v for k, v in kwargs.items() if k in _SAFE_KWARGS}
        # rlms's max_depth counts the root (depth >= max_depth is a plain LM); ours counts rlm()
        # levels below it.
        depth = int(meta.get("max_depth") or 1)
        return {"max_steps": int(meta.get("max_iterations") or 30), "max_depth": max(0, depth - 1),
                "imported": {"format": FORMAT, "file": os.path.basename(self.source),
                             "sha256": self.digest, "replay": REPLAY_BY_ORDER, "rlms": rlms}}

    def _step(self, run: Run, rec: dict[str, Any], nxt: dict[str, Any] | None,
              max_iterations: int) -> None:
        n = len(run.steps) + 1
        reply = str(rec.get("response") or "")
        blocks = [b for b in rec.get("code_blocks") or [] if isinstance(b, dict)]
        prompt = _messages(rec.get("prompt"))
        best_effort = (not blocks and bool(prompt) and prompt[-1].get("role") == "assistant")
        step = Step(n=n, reply=reply, status=StepState.DONE, best_effort=best_effort,
                    model=run.model)
        step.thought = _BLOCK_RE.sub("", reply).strip() if blocks else reply.strip()
        if blocks:
            step.code = "\n\n".join(str(b.get("code") or "") for b in blocks)
        exec_s = 0.0
        for k, block in enumerate(blocks):
            raw = block.get("result")
            result: dict[str, Any] = raw if isinstance(raw, dict) else {}
            for name in ("stdout", "stderr"):
                text = result.get(name)
                if isinstance(text, str) and text:
                    step.outputs.append({"output_type": "stream", "name": name, "text": text})
                    if name == "stderr" and step.error is None:
                        errors = _EXC_RE.findall(text)
                        if errors:
                            step.error = f"{errors[-1][0]}: {errors[-1][1]}"
            exec_s += float(result.get("execution_time") or 0.0)
            self._calls(run, n, k, result.get("rlm_calls") or [])
        step.exec_s = exec_s
        total = rec.get("iteration_time")
        step.latency_s = max(0.0, float(total) - exec_s) if isinstance(total, (int, float)) else 0.0
        step.output_text = _shown(reply, nxt, step.outputs)
        final = rec.get("final_answer")
        if final is not None:
            step.final = str(final)
        run.steps.append(step)
        if best_effort:
            run.best_effort = True
            run.stop_reason = (
                f"best-effort answer: rlms used its {max_iterations} iterations without a final "
                "answer and asked the root model for one once more")

    def _calls(self, run: Run, n: int, block: int, calls: list[Any]) -> None:
        for call in calls:
            if not isinstance(call, dict):
                continue
            meta = call.get("metadata") if isinstance(call.get("metadata"), dict) else None
            prompt = call.get("prompt")
            text = prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False)
            if meta and meta.get("iterations"):
                child_id = f"{run.run_id}-s{n}r{sum(1 for c in run.children) + 1}"
                child = self.run(meta.get("run_metadata") or {}, meta["iterations"],
                                 run_id=child_id, depth=run.depth + 1, parent=run,
                                 parent_step=n, child_prompt=text)
                run.children.append(child.run_id)
                continue
            k = sum(1 for c in run.subcalls.values() if c.step == n) + 1
            model = str(call.get("root_model") or run.model)
            response = call.get("response")
            error = call.get("error")
            failed = error is not None or (isinstance(response, str)
                                           and response.startswith("Error: "))
            sub = SubCall(
                call_id=f"{run.run_id}-s{n}c{k}", model=model, depth=run.depth + 1,
                run_id=run.run_id, step=n,
                prompt=text if len(text) <= self.cfg.record_prompt_chars else None,
                prompt_preview=preview(text, 400), prompt_chars=len(text),
                prompt_sha256=sha256_text(text), response=str(response or ""),
                status=CallState.ERROR if failed else CallState.OK,
                error=str(error or response) if failed else None,
                usage=_usage(call.get("usage_summary"), model),
                latency_s=float(call.get("execution_time") or 0.0),
                cache_key=cache_key(model, _messages(prompt), {}),
            )
            run.subcalls[sub.call_id] = sub
            run.usage.add(sub.usage)


def _usage(summary: Any, model: str) -> Usage:
    per_model = summary.get("model_usage_summaries") if isinstance(summary, dict) else None
    entry = per_model.get(model) if isinstance(per_model, dict) else None
    if not isinstance(entry, dict):
        return Usage()
    return Usage(prompt_tokens=int(entry.get("total_input_tokens") or 0),
                 completion_tokens=int(entry.get("total_output_tokens") or 0),
                 requests=int(entry.get("total_calls") or 0),
                 cost_usd=float(entry.get("total_cost") or 0.0))


def _shown(reply: str, nxt: dict[str, Any] | None, outputs: list[dict[str, Any]]) -> str:
    """What rlms fed back after this reply: the user message that follows it in the next prompt
    (``REPL output: ...``); for the last step, the outputs themselves."""
    if nxt is not None:
        msgs = _messages(nxt.get("prompt"))
        at = max((i for i, m in enumerate(msgs)
                  if m.get("role") == "assistant" and _text(m) == reply), default=None)
        if at is not None and at + 1 < len(msgs) and msgs[at + 1].get("role") == "user":
            shown = _text(msgs[at + 1])
            if shown.startswith("REPL output"):
                return shown
    return "".join(o["text"] for o in outputs)


def import_log(path: str, *, contexts: list[str] | None = None) -> ImportedLog:
    """Read an rlms log into runs; ``contexts``: the context file of each root run, in order."""
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    records = read_records(path)
    meta = next((r for r in records if r["type"] == "metadata"), {})
    iterations = [r for r in records if r["type"] == "iteration"]
    builder = _Builder(path, digest, contexts or [], RLMConfig(api_key="", base_url=""))
    roots: list[Run] = []
    for i, group in enumerate(_split_runs(iterations)):
        run = builder.run(meta, group, run_id=f"r{digest[:8]}{i:02d}")
        if roots and meta.get("environment_type") in ("local", "ipython", "docker"):
            # One log, several runs: a persistent rlms session (the REPL outlived each query).
            run.settings["imported"]["builds_on"] = [r.run_id for r in roots]
        roots.append(run)
    if builder.contexts:
        builder.warnings.append(f"{len(builder.contexts)} --context file(s) left over: the log "
                                f"holds {len(roots)} run(s)")
    if not contexts:
        builder.warnings.append("no --context given: the notebook reads fine, but replay needs "
                                "the context file(s) the runs used")
    return ImportedLog(roots, builder.runs, path, builder.warnings)


# --------------------------------------------------------------------------------------------------
# Writing


def intro_cell(log: ImportedLog) -> dict[str, Any]:
    """A markdown cell saying where the runs came from and how they replay."""
    from ..notebook import new_markdown_cell

    name = os.path.basename(log.source)
    lines = [f"**Imported from an rlms log** `{name}`: {len(log.roots)} run(s), "
             f"{len(log.runs) - len(log.roots)} child RLM run(s).",
             "",
             "rlms (the reference runtime) ran these steps; its log holds each root reply, the "
             "code of each ```repl block with its stdout/stderr, and every sub-call. It logs no "
             "token counts for root turns and never the context. Replay serves the recorded "
             "root replies in step order and the sub-calls by prompt."]
    return new_markdown_cell("\n".join(lines), metadata={"rlm": {"kind": "import",
                                                                 "format": FORMAT, "file": name}})


def to_notebook(log: ImportedLog) -> Any:
    from ..notebook import to_notebook as build

    cell = intro_cell(log)
    cell["id"] = f"{log.roots[0].run_id}-import"
    return build(log.roots, log.runs, extra_cells=[cell])


def main(argv: list[str] | None = None) -> int:
    """``rlm-kernel import LOG.jsonl -o run.ipynb [--context FILE ...]``."""
    from ..notebook import write_notebook

    p = argparse.ArgumentParser(prog="rlm-kernel import",
                                description="Turn an rlms RLMLogger .jsonl log into a trajectory "
                                            "notebook.")
    p.add_argument("log", help="the rlms log (.jsonl)")
    p.add_argument("-o", "--output", help="notebook to write (default: LOG with .ipynb)")
    p.add_argument("--context", action="append", default=[], metavar="FILE",
                   help="the context file of a run (repeat, in run order); needed for replay")
    a = p.parse_args(argv)
    if not os.path.isfile(a.log):
        print(f"rlm-kernel import: no file {a.log!r}", file=sys.stderr)
        return 2
    missing = [c for c in a.context if not os.path.isfile(c)]
    if missing:
        print(f"rlm-kernel import: no context file {missing[0]!r}", file=sys.stderr)
        return 2
    try:
        log = import_log(a.log, contexts=a.context)
    except LogFormatError as exc:
        print(f"rlm-kernel import: {exc}", file=sys.stderr)
        return 1
    output = a.output or os.path.splitext(a.log)[0] + ".ipynb"
    write_notebook(to_notebook(log), output)
    for warning in log.warnings:
        print(f"rlm-kernel import: note: {warning}", file=sys.stderr)
    answers = "; ".join(f"{r.run_id}: {r.answer!r}" for r in log.roots)
    print(f"rlm-kernel import: {len(log.roots)} run(s) written to {output} ({answers})",
          file=sys.stderr)
    return 0
