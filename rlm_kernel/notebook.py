"""Trajectory <-> nbformat v4: the notebook is the trajectory.

One builder per cell kind (query, thought, step, llm, final), used both by the kernel (its
``rlm.cells`` inserts) and by :func:`to_notebook`, so a live front-end, the headless runner and an
exported file hold the same cells. Everything needed to replay or resume lives in
``metadata["rlm"]``; the context never does (only its :class:`ContextInfo`), and long sub-call
prompts are kept as a preview plus length and hash.

Branches: a run forked from another (``Run.fork_of`` = parent run, step ``at``, and the models that
made the inherited steps; ``Run.branch`` = its label) is a root run with cells of its own. Its query
cell is ``%%rlm fork --run PARENT --at K [--model M] [--sub-model M] [--label L]`` with the branch's
query as the body, and its header carries ``fork_of`` and ``branch``; its inherited steps (numbered
up to ``at``, as in the parent) are marked ``inherited`` and shown collapsed. Files written before
branches existed have neither field and load as plain runs.
"""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING, Any

from .kernelspec import language_info, notebook_kernelspec
from .outputs import outputs_to_text, truncate
from .states import CallState, RunState, StepState
from .trajectory import ForkOf, Run, Step, SubCall, preview

__all__ = [
    "FORMAT_VERSION", "MARKER_RE", "marker", "query_cell", "thought_cell", "step_cell", "llm_cell",
    "final_cell", "child_run_cells", "child_head_cell", "run_cells", "to_notebook",
    "runs_from_notebook",
    "recorded_responses", "write_notebook", "llm_cell_source", "query_cell_ids", "fork_source",
    "fork_cell_source", "branch_title", "answer_preview", "ANSWER_INLINE_CHARS",
    "QUERY_MARKER_RE", "query_marker", "with_query_marker", "split_query_marker",
    "earlier_version_cell", "call_summary",
]

if TYPE_CHECKING:
    import nbformat

FORMAT_VERSION = 1
#: Answers up to this length appear whole wherever a trajectory shows them; longer ones are kept
#: whole once (the final cell's metadata) and shown as head and tail.
ANSWER_INLINE_CHARS = 20_000
#: The first line of a step cell: which run and step it is (and whether it is no longer live).
MARKER_RE = re.compile(
    r"^# rlm: run=(?P<run>[\w-]+) step=(?P<step>\d+)(?: (?P<flag>stale|superseded))?[ \t]*$",
    re.MULTILINE)
#: The line under ``%%rlm`` in a query cell once it ran: the run it recorded. It is what makes a
#: re-executed query cell (Run All, nbconvert --execute) show its record instead of paying again,
#: in front-ends that send no cell metadata.
QUERY_MARKER_RE = re.compile(r"^# rlm: run=(?P<run>[\w-]+)(?: (?P<flag>superseded))?[ \t]*$",
                             re.MULTILINE)
_COLLAPSED = {"source_hidden": True, "outputs_hidden": True}


def new_code_cell(source: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """An nbformat v4 code cell as a plain dict.

    Plain dicts, not nbformat objects: the kernel builds these on every event, and importing
    nbformat (its JSON-schema validator) costs seconds at kernel start. Files are validated with
    nbformat when written (:func:`to_notebook`, :func:`write_notebook`).
    """
    return {"id": "", "cell_type": "code", "source": source, "metadata": metadata or {},
            "outputs": [], "execution_count": None}


def new_markdown_cell(source: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "", "cell_type": "markdown", "source": source, "metadata": metadata or {}}


def marker(run_id: str, n: int, flag: str = "") -> str:
    """A step cell's first line; ``flag``: "", "stale" or "superseded"."""
    return f"# rlm: run={run_id} step={n}" + (f" {flag}" if flag else "")


def query_marker(run_id: str, superseded: bool = False) -> str:
    return f"# rlm: run={run_id}" + (" superseded" if superseded else "")


def with_query_marker(source: str, run_id: str, superseded: bool = False) -> str:
    """A query (or fork) cell's source with its marker line under the magic line, replacing any
    marker it had."""
    head, _, body = source.lstrip().partition("\n")
    body = QUERY_MARKER_RE.sub("", body, count=1).lstrip("\n") if QUERY_MARKER_RE.match(
        body) else body
    return f"{head}\n{query_marker(run_id, superseded)}\n{body}"


def split_query_marker(body: str) -> tuple[str | None, bool, str]:
    """A query cell's body -> (the run its marker names, whether superseded, the query)."""
    m = QUERY_MARKER_RE.match(body.lstrip("\n"))
    if not m:
        return None, False, body
    return m.group("run"), bool(m.group("flag")), body.lstrip("\n")[m.end():].lstrip("\n")


def cell_id(run_id: str, part: str) -> str:
    return f"{run_id}-{part}"


def _meta(kind: str, run: Run, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"rlm": {"kind": kind, "run": run.run_id, "depth": run.depth,
                                    "parent": run.parent, "version": FORMAT_VERSION, **extra}}
    if run.superseded_by:
        meta["rlm"]["superseded_by"] = run.superseded_by
        meta["jupyter"] = dict(_COLLAPSED)  # an earlier version: out of the way, not gone
    return meta


def earlier_version_cell(old: Run, new: Run) -> dict[str, Any]:
    """The header over a superseded run's cells: what they are, and what replaced them."""
    answer, _ = answer_preview(old.answer)
    ended = f"answer: {_clip(answer or '', 200)}" if old.answer is not None else (
        f"{old.status}: {old.stop_reason or ''}")
    cell = new_markdown_cell(
        f"**Earlier version of this query** · run `{old.run_id}`, replaced by run "
        f"`{new.run_id}` · {ended}",
        metadata={"rlm": {"kind": "thought", "run": old.run_id, "depth": old.depth,
                          "version": FORMAT_VERSION, "superseded_by": new.run_id,
                          "earlier_version": True, "header": _header(old)}})
    cell["id"] = cell_id(old.run_id, "earlier")
    return cell


def _clip(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def query_source(run: Run) -> str:
    if run.fork_of is not None:
        return fork_source(run)
    opts = []
    settings = run.settings or {}
    if run.model and not settings.get("scripted"):
        opts += ["--model", run.model]
    if run.sub_model and run.sub_model != run.model and not settings.get("scripted"):
        opts += ["--sub-model", run.sub_model]
    if run.context.source.startswith("variable:"):
        opts += ["--context", run.context.source.split(":", 1)[1]]
    head = " ".join(["%%rlm", *(shlex.quote(o) for o in opts)])
    return f"{head}\n{query_marker(run.run_id)}\n{run.query}"


def fork_source(run: Run) -> str:
    """A branch's query cell: ``%%rlm fork`` with the models it changed, the branch's query as
    the body. Re-running it forks the parent again with the same changes."""
    assert run.fork_of is not None
    base = run.fork_of.models[-1] if run.fork_of.models else {}
    return fork_cell_source(run.fork_of, run.query, label=run.branch,
                            model=run.model if run.model != base.get("model", run.model) else "",
                            sub_model=run.sub_model
                            if run.sub_model != base.get("sub_model", run.sub_model) else "")


def fork_cell_source(fork: ForkOf, query: str, *, label: str = "", model: str = "",
                     sub_model: str = "", flags: tuple[str, ...] = ()) -> str:
    """``%%rlm fork --run P --at K [--model M] [--sub-model S] [flags] [--label L]`` + query."""
    opts = ["--run", fork.run, "--at", str(fork.at)]
    if model:
        opts += ["--model", model]
    if sub_model:
        opts += ["--sub-model", sub_model]
    opts += list(flags)
    if label:
        opts += ["--label", label]
    return " ".join(["%%rlm fork", *(shlex.quote(o) for o in opts)]) + f"\n{query}"


def branch_title(run: Run) -> str:
    """How a branch is named in its cells: label, parent and step (empty for other runs)."""
    if run.fork_of is None:
        return ""
    label = f"branch `{run.branch}`, " if run.branch else "branch, "
    return f"{label}fork of `{run.fork_of.run}` at step {run.fork_of.at}"


def _header(run: Run) -> dict[str, Any]:
    header = run.header_dict()
    header["answer"], _ = answer_preview(run.answer)
    return header


def query_cell(run: Run, source: str | None = None, cid: str | None = None) -> dict[str, Any]:
    header = _header(run)
    cell = new_code_cell(source if source is not None else query_source(run),
                         metadata=_meta("query", run, header=header))
    cell["id"] = cid or cell_id(run.run_id, "q")
    return cell


def has_thought_cell(step: Step) -> bool:
    """A step shows a thought cell when it has prose, no code, was streamed live into one, or
    was cut at the token bound (the cell says so)."""
    return (bool(step.thought) or step.code is None or step.streamed
            or step.finish_reason == "length")


def thought_cell(run: Run, step: Step, *, record: bool) -> dict[str, Any]:
    text = step.thought or "*(the model's reply had no prose)*"
    if step.best_effort:
        text = ("*Best-effort answer: the budget ran out, and the model was asked once for its "
                f"best answer from what it had.*\n\n{text}")
    if step.finish_reason == "length":
        text += ("\n\n> *The reply was cut at the token limit (`root_max_tokens`): only its "
                 "complete code blocks ran, and the model was told.*")
    if step.nudge is not None:
        text += "\n\n> *No code and no FINAL: the model was nudged to continue.*"
    if step.reasoning:
        # Collapsed; shown as text, never run or parsed (it may hold draft code and FINALs).
        fence = "`" * max(3, _longest_backtick_run(step.reasoning) + 1)
        text += (f"\n\n<details><summary>Reasoning ({len(step.reasoning):,} characters; shown, "
                 f"never run)</summary>\n\n{fence}text\n{step.reasoning}\n{fence}\n\n</details>")
    # The step cell carries the step's state; a thought carries it only when it is the record
    # (no code) or stale, so a live thought never shows a state the step has since left.
    extra: dict[str, Any] = {"step": step.n}
    if record or step.status == StepState.STALE:
        extra["status"] = step.status
    if record:
        extra["record"] = _step_record(step, keep_outputs=False)
    head = f"**Step {step.n}**" + (f" (depth {run.depth})" if run.depth else "")
    if _inherited(run, step):
        head += f" (from `{run.fork_of.run}`)"  # type: ignore[union-attr]
        extra["inherited"] = True
    meta = _meta("thought", run, **extra)
    if _inherited(run, step):
        meta["jupyter"] = {"source_hidden": True}
    cell = new_markdown_cell(f"{head} · {text}", metadata=meta)
    cell["id"] = cell_id(run.run_id, f"t{step.n}")
    return cell


def _inherited(run: Run, step: Step) -> bool:
    """A branch's step that is its parent's, re-executed from the record: shown collapsed."""
    return run.fork_of is not None and step.n <= run.fork_of.at


def streaming_cell(run: Run, n: int, text: str, ended: str | None = None) -> dict[str, Any]:
    """Step ``n``'s thought cell while the model's reply streams in (replaced when it ends), or,
    with ``ended``, what was written of a reply that was stopped or failed before its end."""
    state = f"{ended} while writing: never run" if ended else "writing…"
    cell = new_markdown_cell(f"**Step {n}** · *({state})*\n\n{text}",
                             metadata=_meta("thought", run, step=n, status=ended or "streaming"))
    cell["id"] = cell_id(run.run_id, f"t{n}")
    return cell


def compaction_cell(run: Run, step: Step) -> dict[str, Any]:
    """What the model stopped seeing before step ``step.n`` (older steps compacted out of its
    window): shown so a human reading the notebook knows what the model no longer had."""
    cell = new_markdown_cell(f"> **Context compacted** · {step.compaction}",
                             metadata=_meta("compaction", run, step=step.n))
    cell["id"] = cell_id(run.run_id, f"k{step.n}")
    return cell


def _longest_backtick_run(text: str) -> int:
    return max((len(m) for m in re.findall(r"`+", text)), default=0)


def _step_record(step: Step, keep_outputs: bool) -> dict[str, Any]:
    rec = step.to_dict()
    rec.pop("outputs")
    rec.pop("code")
    # The model's view of the output is stored only when it is not derivable from the outputs.
    if step.output_text == truncate(outputs_to_text(step.outputs), 10**12):
        rec.pop("output_text")
        rec["output_from_outputs"] = True
    if keep_outputs:
        rec["outputs"] = step.outputs
    rec["final"], _ = answer_preview(step.final)
    return rec


def step_cell(run: Run, step: Step) -> dict[str, Any]:
    """A root step as a runnable code cell: marker line, then the code; real outputs."""
    flag = "superseded" if run.superseded_by else "stale" if step.status == StepState.STALE else ""
    source = f"{marker(run.run_id, step.n, flag)}\n{step.code or ''}"
    extra: dict[str, Any] = {"inherited": True} if _inherited(run, step) else {}
    meta = _meta("step", run, step=step.n, status=step.status,
                 record=_step_record(step, keep_outputs=False), **extra)
    if extra or run.depth:  # inherited by a branch, or a sub-RLM's step under its parent's
        meta["jupyter"] = dict(_COLLAPSED)
    cell = new_code_cell(source, metadata=meta)
    cell["id"] = cell_id(run.run_id, f"s{step.n}")
    cell["outputs"] = [dict(o) for o in step.outputs]
    cell["execution_count"] = step.execution_count
    return cell


def llm_cell_source(call: SubCall, prompt: str | None = None) -> str:
    head = f"%%llm --call {call.call_id} --model {shlex.quote(call.model)}"
    body = prompt if prompt is not None else (call.prompt if call.prompt is not None else call.prompt_preview)
    return f"{head}\n{body}"


def call_summary(call: SubCall, width: int = 60) -> str:
    """One line a collapsed sub-call cell shows: prompt head -> response head, tokens, latency."""
    def head(text: str | None) -> str:
        # Only the start is read: a prompt may be megabytes, the line shows `width` characters.
        text = text or ""
        start = text[: 4 * width + 64]
        flat = " ".join(start.split())
        if len(flat) <= width and len(start) == len(text):
            return flat
        return flat[: width - 1] + "…"

    prompt = head(call.prompt if call.prompt is not None else call.prompt_preview)
    if call.status == CallState.OK:
        answer = head(call.response)
    elif call.status in (CallState.QUEUED, CallState.INFLIGHT):
        answer = "…"
    else:
        answer = f"[{call.status}] {head(call.error)}"
    parts = [f"{prompt} → {answer}"]
    if call.usage.total_tokens:
        parts.append(f"{call.usage.total_tokens:,} tok")
    if call.latency_s:
        parts.append(f"{call.latency_s:.2f} s")
    if call.cached:
        parts.append("cached")
    return " · ".join(parts)


def llm_cell(run: Run, call: SubCall) -> dict[str, Any]:
    """A sub-call as an editable ``%%llm`` cell, collapsed; response kept whole as its output.

    Its images appear as thumbnails among the outputs (:func:`llm_outputs`); the metadata keeps
    their sizes and hashes only, so each thumbnail is in the file once.
    """
    rec = call.to_dict()
    rec.pop("response")
    rec.pop("prompt")
    rec["prompt_truncated"] = call.prompt is None
    if call.images:
        rec["images"] = [{k: v for k, v in im.items() if k not in _THUMB_KEYS}
                         for im in call.images]
    meta = _meta("llm", run, call=rec, step=call.step, batch_id=call.batch_id,
                 summary=call_summary(call), **({"stale": True} if call.stale else {}))
    meta["jupyter"] = dict(_COLLAPSED)
    cell = new_code_cell(llm_cell_source(call), metadata=meta)
    cell["id"] = call.call_id
    cell["outputs"] = llm_outputs(call)
    return cell


_THUMB_KEYS = ("thumb", "thumb_mime")


def image_outputs(images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A sub-call's images as display outputs: a thumbnail each, labelled with what was sent
    (its position, size, type, bytes and hash); ``metadata.rlm.image`` names it by hash."""
    outs = []
    for k, im in enumerate(images, start=1):
        label = (f"image {k} of {len(images)}: {im.get('width')}x{im.get('height')} "
                 f"{str(im.get('mime', '')).split('/')[-1].upper()}, {im.get('bytes', 0):,} bytes, "
                 f"sha256:{str(im.get('sha256', ''))[:16]}")
        data: dict[str, Any] = {"text/plain": label}
        if im.get("thumb"):
            data[im.get("thumb_mime") or "image/jpeg"] = im["thumb"]
        outs.append({"output_type": "display_data", "data": data,
                     "metadata": {"rlm": {"image": im.get("sha256", "")}}})
    return outs


def llm_outputs(call: SubCall) -> list[dict[str, Any]]:
    """What was sent (image thumbnails), then the response or the error."""
    outs = image_outputs(call.images)
    if call.status == CallState.OK and call.response is not None:
        return [*outs, {"output_type": "execute_result", "data": {"text/plain": call.response},
                        "metadata": {}, "execution_count": None}]
    if call.status in (CallState.ERROR, CallState.CANCELLED):
        return [*outs, {"output_type": "stream", "name": "stderr",
                        "text": f"[{call.status}] {call.error or ''}\n"}]
    return outs


def answer_preview(answer: str | None) -> tuple[str | None, bool]:
    """(the answer, or its head and tail when longer than ANSWER_INLINE_CHARS; whether cut).

    A trajectory keeps a long answer once, in its final cell's metadata: the query cell's
    header, the step record and the final cell's text show this preview.
    """
    if answer is None or len(answer) <= ANSWER_INLINE_CHARS:
        return answer, False
    return truncate(answer, ANSWER_INLINE_CHARS), True


def final_cell(run: Run) -> dict[str, Any]:
    branch = f", {branch_title(run)}" if run.fork_of is not None else ""
    if run.answer is not None:
        shown, cut = answer_preview(run.answer)
        note = (f"\n\n*(the answer is {len(run.answer):,} characters; this cell's metadata "
                "holds it whole)*") if cut else ""
        title = (f"**Best-effort answer** (run `{run.run_id}`{branch}; {run.stop_reason})"
                 if run.best_effort else f"**Final answer** (run `{run.run_id}`{branch})")
        text = f"{title}:\n\n{_quote_block(shown)}{note}"
    else:
        text = (f"**Run `{run.run_id}`{branch} ended without an answer** ({run.status}): "
                f"{run.stop_reason}")
    if run.builds_on:
        text += f"\n\n*Built on the earlier run(s) {', '.join(f'`{r}`' for r in run.builds_on)}.*"
    cell = new_markdown_cell(text, metadata=_meta("final", run, answer=run.answer,
                                                  status=run.status, reason=run.stop_reason,
                                                  best_effort=run.best_effort,
                                                  usage=run.usage.to_dict()))
    # One id per ending: a run continued after a FINAL ends again with a new final cell.
    cell["id"] = cell_id(run.run_id, f"final{len(run.steps)}")
    return cell


def _quote_block(text: str | None) -> str:
    return "\n".join("> " + line for line in (text or "").splitlines() or [""])


def child_head_cell(child: Run) -> dict[str, Any]:
    """The head of a sub-RLM's group of cells: its query and record (header)."""
    head = new_markdown_cell(
        f"**Sub-RLM** `{child.run_id}` (depth {child.depth}, step {child.parent_step} of "
        f"`{child.parent}`, model `{child.model}`): {preview(child.query, 300)}",
        metadata=_meta("query", child, header={k: v for k, v in child.to_dict().items()
                                               if k not in ("steps", "subcalls")}),
    )
    head["id"] = cell_id(child.run_id, "q")
    return head


def child_run_cells(child: Run, runs: dict[str, Run]) -> list[dict[str, Any]]:
    """A sub-RLM's cells, grouped under its parent's step: a head, then per step a thought cell
    and a real (collapsed) step cell with its outputs, its sub-calls and children, and its final
    cell, the same cells the kernel inserts live as the child runs."""
    return [child_head_cell(child), *_step_cells(child, runs)]


def _step_cells(run: Run, runs: dict[str, Run]) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    for step in run.steps:
        has_code = step.code is not None
        if step.compaction:
            cells.append(compaction_cell(run, step))
        if has_thought_cell(step):
            cells.append(thought_cell(run, step, record=not has_code))
        if has_code:
            cells.append(step_cell(run, step))
        cells += [llm_cell(run, c) for c in run.subcalls.values() if c.step == step.n]
        cells += _children_of(run, step.n, runs)
    if run.status.ended:
        cells.append(final_cell(run))
    return cells


def _children_of(run: Run, step_n: int, runs: dict[str, Run]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for cid in run.children:
        child = runs.get(cid)
        if child is not None and child.parent_step == step_n:
            out += child_run_cells(child, runs)
    return out


def run_cells(run: Run, runs: dict[str, Run] | None = None, query_source_text: str | None = None,
              query_cell_id: str | None = None) -> list[dict[str, Any]]:
    """Every cell of a root run, in trajectory order."""
    runs = runs or {run.run_id: run}
    cells = [query_cell(run, query_source_text, query_cell_id)]
    if run.superseded_by:
        cells.append(earlier_version_cell(run, runs.get(run.superseded_by) or Run(
            run_id=run.superseded_by, query=run.query)))
    return cells + _step_cells(run, runs)


def to_notebook(runs: list[Run], all_runs: dict[str, Run] | None = None,
                extra_cells: list[dict[str, Any]] | None = None) -> nbformat.NotebookNode:
    """A validated nbformat v4 notebook holding the given root runs (and their children)."""
    import nbformat
    from nbformat.v4 import new_notebook

    all_runs = all_runs or {r.run_id: r for r in runs}
    nb = new_notebook()
    # A trajectory recorded in the sandboxed kernel re-opens there.
    sandboxed = any(r.settings.get("sandboxed") for r in runs)
    nb.metadata["kernelspec"] = notebook_kernelspec(sandboxed)
    nb.metadata["language_info"] = language_info()
    nb.metadata["rlm"] = {"version": FORMAT_VERSION, "runs": [r.run_id for r in runs]}
    cells: list[dict[str, Any]] = list(extra_cells or [])
    listed = {r.run_id for r in runs}
    for run in runs:
        if run.superseded_by in listed:
            continue  # shown under the run that replaced it, sharing its query cell
        cells += run_cells(run, all_runs)
        earlier = [r for r in runs if r.superseded_by == run.run_id]
        while earlier:  # a chain of versions, newest first
            old = earlier.pop()
            cells += run_cells(old, all_runs)[1:]
            earlier += [r for r in runs if r.superseded_by == old.run_id]
    nb.cells = [nbformat.from_dict(c) for c in cells]
    nbformat.validate(nb)
    return nb


def write_notebook(nb: Any, path: str) -> None:
    """Validate, sign, then write atomically (a crash mid-write must not leave half a
    trajectory). ``nb``: a NotebookNode or the same structure as plain dicts (a 5,000-cell
    trajectory is written without first copying it into NotebookNodes)."""
    import contextlib
    import os
    import tempfile

    import nbformat

    nbformat.validate(nb)
    from .trust import sign

    sign(nb if isinstance(nb, nbformat.NotebookNode) else nbformat.NotebookNode(nb))
    text = notebook_json(nb)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".rlm-", suffix=".ipynb", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a notebook is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk must not leave temp files behind
            os.unlink(tmp)
        raise


#: Mimebundle keys nbformat splits into lines besides text/*.
_SPLIT_MIMES = frozenset({"application/javascript", "image/svg+xml"})


def notebook_json(nb: Any) -> str:
    """The file text nbformat writes for ``nb`` (indent 1, sorted keys, multi-line strings as
    lists of lines, transient fields left out), made without nbformat's deep copy of the whole
    notebook: only the cells and outputs whose strings are split are copied, and shallowly."""
    import json

    metadata = {k: v for k, v in nb["metadata"].items()
                if k not in ("orig_nbformat", "orig_nbformat_minor", "signature")}
    out = {**nb, "metadata": metadata, "cells": [_file_cell(c) for c in nb["cells"]]}
    return json.dumps(out, indent=1, sort_keys=True, separators=(",", ": "), ensure_ascii=False)


def _lines(value: Any) -> Any:
    return value.splitlines(True) if isinstance(value, str) else value


def _file_cell(cell: dict[str, Any]) -> dict[str, Any]:
    out = dict(cell)
    out["source"] = _lines(cell.get("source", ""))
    if "trusted" in (cell.get("metadata") or {}):
        out["metadata"] = {k: v for k, v in cell["metadata"].items() if k != "trusted"}
    if "attachments" in cell:
        out["attachments"] = {k: _split_bundle(v) for k, v in cell["attachments"].items()}
    if cell.get("cell_type") == "code" and cell.get("outputs"):
        out["outputs"] = [_file_output(o) for o in cell["outputs"]]
    return out


def _file_output(output: dict[str, Any]) -> dict[str, Any]:
    kind = output.get("output_type")
    if kind in ("execute_result", "display_data") and "data" in output:
        return {**output, "data": _split_bundle(output["data"])}
    if kind == "stream" and isinstance(output.get("text"), str):
        return {**output, "text": output["text"].splitlines(True)}
    return output


def _split_bundle(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.splitlines(True) if isinstance(v, str)
                and (k.startswith("text/") or k in _SPLIT_MIMES) else v)
            for k, v in data.items()}


def _text_of(outputs: list[Any]) -> str | None:
    for out in outputs:
        if out.get("output_type") == "execute_result":
            t = out.get("data", {}).get("text/plain")
            return "".join(t) if isinstance(t, list) else t
    return None


def _with_thumbs(images: list[dict[str, Any]], outputs: list[Any]) -> list[dict[str, Any]]:
    """Image records with their thumbnails put back from the cell's display outputs."""
    thumbs = {}
    for out in outputs:
        sha = (out.get("metadata") or {}).get("rlm", {}).get("image")
        for mime, data in (out.get("data") or {}).items():
            if sha and mime.startswith("image/"):
                thumbs[sha] = (mime, "".join(data) if isinstance(data, list) else data)
    return [{**im, "thumb_mime": thumbs[im["sha256"]][0], "thumb": thumbs[im["sha256"]][1]}
            if im.get("sha256") in thumbs else dict(im) for im in images]


def runs_from_notebook(nb: Any) -> dict[str, Run]:
    """Rebuild the Run records a notebook holds (for replay, resume and ``%rlm continue``)."""
    runs: dict[str, Run] = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("rlm")
        if not meta:
            continue
        kind, rid = meta.get("kind"), meta.get("run")
        if "header" in meta and (kind == "query" or meta.get("earlier_version")):
            run = Run.from_dict({**meta["header"], "steps": [], "subcalls": {}})
            run.status = RunState(meta["header"].get("status", run.status))
            runs[rid] = run
            continue
        found = runs.get(rid)
        if found is None:
            continue
        run = found
        if kind in ("step", "thought") and "record" in meta:
            rec = dict(meta["record"])
            step = Step.from_dict(rec)
            if cell.get("cell_type") == "code":
                src = "".join(cell.get("source", ""))
                step.code = MARKER_RE.sub("", src, count=1).lstrip("\n")
                step.outputs = [dict(o) for o in cell.get("outputs", [])]
            elif rec.get("code") is None and kind == "step":
                step.code = None
            if rec.get("output_from_outputs"):
                step.output_text = truncate(outputs_to_text(step.outputs), 10**12)
            run.steps = [s for s in run.steps if s.n != step.n] + [step]
        elif kind == "llm" and "call" in meta:
            call = SubCall.from_dict(meta["call"])
            call.response = _text_of(cell.get("outputs", []))
            call.images = _with_thumbs(call.images, cell.get("outputs", []))
            run.subcalls[call.call_id] = call
        elif kind == "final" and not meta.get("stale"):  # a stale final was edited away
            run.answer = meta.get("answer")
            run.status = RunState(meta.get("status", run.status))
            run.stop_reason = meta.get("reason")
            run.best_effort = bool(meta.get("best_effort"))
    return runs


def query_cell_ids(nb: Any) -> dict[str, str]:
    """run id -> the id of its query cell in this notebook (where a resumed run's cells go)."""
    out: dict[str, str] = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("rlm", {})
        if meta.get("kind") == "query" and "header" in meta and cell.get("id"):
            out.setdefault(meta["run"], cell["id"])
    return out


def recorded_responses(runs: dict[str, Run]) -> dict[str, str]:
    """cache key -> response for every recorded root reply and sub-call: what replay serves."""
    out: dict[str, str] = {}
    for run in runs.values():
        for step in run.steps:
            if step.cache_key and step.reply:
                out[step.cache_key] = step.reply
        for call in run.subcalls.values():
            if call.cache_key and call.response is not None and call.status == CallState.OK:
                out[call.cache_key] = call.response
    return out
