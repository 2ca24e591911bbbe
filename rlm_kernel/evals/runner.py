"""The eval runner behind ``rlm-kernel eval``: generate, run, score, tabulate.

For every generated task it writes the task files (:func:`~rlm_kernel.tasks.base.write_task`: context,
public JSON, hidden answer key), runs one baseline, writes one trajectory notebook
``<task_id>.ipynb``, scores the answer with the family's published scorer and keeps a row; at the end
it prints the table and saves it as ``results.json`` and ``results.md``.

Baselines (the RLM paper's comparison points):

- ``rlm``: the Recursive Language Model, REPL plus ``llm``/``llm_batch``/``rlm``.
- ``no-subcalls``: the paper's ablation, the same REPL with sub-calls switched off
  (``RLMConfig.subcalls_enabled = False``: the functions raise a clear error, and the system prompt
  says so). Why a flag and not a different prompt: the ablation must differ from ``rlm`` in exactly
  one thing, so every other part of the run (engine, budgets, notebook) stays the same.
- ``direct``: one chat completion with the whole context and the query, when it fits the model's
  window (``window_tokens``, counted as characters / 4 like the generators); otherwise no call is
  made and the row says "context does not fit (N tokens > window W)" with score 0. Why no
  truncation: a truncated context answers a different question, and the point of the baseline is
  what a plain model call can do with the whole input.

Two ways to run a task (``via``): ``library`` (default) drives the engine in this process through
:class:`~rlm_kernel.api.RLM` (fast, one client per task so usage and cache never leak between
tasks); ``kernel`` starts a real ``rlm`` kernel per task through
:class:`~rlm_kernel.headless.HeadlessRunner`, so the notebook is the one the ``rlm.cells`` protocol
built, exactly as ``rlm-kernel run`` writes it. ``direct`` never needs a REPL and always runs in
process.

Costs come from the user's price table (USD per 1M tokens per model, as in ``RLMConfig.prices``);
without one every cost is 0 and the table says so rather than pretending the run was free.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat

from ..config import RLMConfig, env_name, setting_traits
from ..tasks.base import CHARS_PER_TOKEN, Task, write_task
from . import generate
from .scoring import score

if TYPE_CHECKING:
    from ..trajectory import SubCall, Usage

__all__ = [
    "BASELINES",
    "VIAS",
    "SCRIPTED_LABEL",
    "EvalSettings",
    "TaskResult",
    "EvalReport",
    "run_eval",
    "direct_prompt",
    "load_prices",
    "p95",
]

BASELINES = ("rlm", "no-subcalls", "direct")
VIAS = ("library", "kernel")
SCRIPTED_LABEL = "scripted demonstration model (not an LLM)"
DEFAULT_WINDOW_TOKENS = 128_000

DIRECT_TEMPLATE = (
    "Read the context below and answer the question that follows it.\n\n"
    "<context>\n{context}\n</context>\n\n{query}"
)


def direct_prompt(task: Task) -> str:
    """The ``direct`` baseline's single user message: the whole context, then the query (the
    order long-context benchmarks use, so the question is fresh when the model answers)."""
    return DIRECT_TEMPLATE.format(context=task.context, query=task.query)


def load_prices(spec: str | None) -> dict[str, Any]:
    """A price table from JSON text or from a JSON file's path (``{}`` when ``spec`` is empty).

    Shape: ``{"model": {"prompt": USD/1M, "completion": USD/1M, "cached": USD/1M}}``, exactly
    ``RLMConfig.prices``; checked here so a typo fails before any task runs (and costs money).
    """
    if not spec:
        return {}
    text = Path(spec).read_text("utf-8") if os.path.isfile(spec) else spec
    try:
        table = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"--prices is neither a JSON object nor a JSON file: {exc}") from None
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ValueError('--prices must look like {"model": {"prompt": 2.5, "completion": 10}}')
    for model, row in table.items():
        for key, value in row.items():
            if key not in ("prompt", "completion", "cached") or not isinstance(value, (int, float)):
                raise ValueError(f"--prices[{model!r}]: {key!r}={value!r} is not a known price "
                                 "(prompt, completion, cached: USD per 1M tokens)")
    return table


def p95(values: list[float]) -> float:
    """95th percentile by nearest rank: always a value that occurred (with n=3 it is the max),
    which is what a reader of a small table expects from "p95"."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class EvalSettings:
    """Everything one ``rlm-kernel eval`` invocation decides (see :mod:`rlm_kernel.evals.cli`)."""

    task: str
    n: int
    length_tokens: int
    out: str
    seed: int = 0
    model: str | None = None
    sub_model: str | None = None
    base_url: str | None = None
    concurrency: int | None = None
    max_steps: int | None = None
    baseline: str = "rlm"
    prices: dict[str, Any] = field(default_factory=dict)
    via: str = "library"
    window_tokens: int = DEFAULT_WINDOW_TOKENS
    command: str = ""  # the command line, recorded so a table can be reproduced
    extra: dict[str, Any] = field(default_factory=dict)  # other settings given as flags

    def config(self) -> RLMConfig:
        """The run configuration (the API key comes from the environment, never from here)."""
        values: dict[str, Any] = {
            "model": self.model, "sub_model": self.sub_model, "base_url": self.base_url,
            "concurrency": self.concurrency, "max_steps": self.max_steps,
            "prices": dict(self.prices) or None,
            "subcalls_enabled": None if self.baseline != "no-subcalls" else False,
        }
        values.update(self.extra)
        return RLMConfig(**{k: v for k, v in values.items() if v is not None})


@dataclass
class TaskResult:
    """One row of the table."""

    task_id: str
    family: str
    baseline: str
    via: str
    score: float
    status: str  # final | stopped | error | not_run
    answer: str | None
    gold: Any
    notebook: str
    note: str = ""
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    requests: int = 0
    subcalls: int = 0
    wall_s: float = 0.0
    context_tokens: int = 0
    best_effort: bool = False  # answered only when asked after a budget ran out (scored)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens}


@dataclass
class EvalReport:
    """The whole result: settings, resolved model names, rows and their summary."""

    settings: EvalSettings
    model: str
    sub_model: str
    scripted: bool
    rows: list[TaskResult]

    def summary(self) -> dict[str, Any]:
        rows = self.rows
        cost = [r.cost_usd for r in rows]
        tokens = [float(r.total_tokens) for r in rows]
        wall = [r.wall_s for r in rows]
        subcalls = [float(r.subcalls) for r in rows]
        return {
            "n": len(rows),
            "score_mean": mean([r.score for r in rows]),
            "cost_mean_usd": mean(cost), "cost_p95_usd": p95(cost),
            "tokens_mean": mean(tokens), "tokens_p95": p95(tokens),
            "prompt_tokens_mean": mean([float(r.prompt_tokens) for r in rows]),
            "completion_tokens_mean": mean([float(r.completion_tokens) for r in rows]),
            "subcalls_mean": mean(subcalls), "subcalls_p95": p95(subcalls),
            "wall_mean_s": mean(wall), "wall_p95_s": p95(wall),
            "final": sum(r.status == "final" and not r.best_effort for r in rows),
            "best_effort": sum(r.status == "final" and r.best_effort for r in rows),
            "best_effort_score_mean": mean([r.score for r in rows if r.best_effort]),
        }

    def cost_note(self) -> str:
        """Why a cost may be 0: no table at all, or no row for a model that was used."""
        prices = self.settings.prices
        if not prices:
            return "no price table given (--prices), so every cost is shown as 0"
        used = {self.model} if self.settings.baseline == "direct" else {self.model, self.sub_model}
        missing = sorted(m for m in used if m not in prices)
        if missing:
            return (f"price table has no entry for {', '.join(missing)}: its tokens are costed at 0")
        return "costs from the given price table (USD per 1M tokens)"

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "family": s.task, "baseline": s.baseline, "via": s.via, "n": s.n,
            "length_tokens": s.length_tokens, "seed": s.seed, "model": self.model,
            "sub_model": None if s.baseline == "direct" else self.sub_model,
            "scripted": self.scripted,
            "model_label": SCRIPTED_LABEL if self.scripted else self.model,
            "base_url": s.base_url or os.environ.get("OPENAI_BASE_URL") or None,
            "window_tokens": s.window_tokens, "max_steps": s.max_steps,
            "prices": s.prices, "cost_note": self.cost_note(), "command": s.command,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "tokens_note": "tokens as the endpoint reported them",
            "p95": "nearest rank",
            "summary": self.summary(),
            "tasks": [r.to_dict() for r in self.rows],
        }

    def markdown(self) -> str:
        s, sm = self.settings, self.summary()
        who = (f"**{SCRIPTED_LABEL}**: root `{self.model}`, sub `{self.sub_model}`. Its scores show "
               "that the harness and the strategies work end to end, not what an LLM would score"
               if self.scripted else f"root model `{self.model}`, sub-model `{self.sub_model}`")
        if s.baseline == "direct":
            who = (f"**{SCRIPTED_LABEL}**, `{self.model}`" if self.scripted
                   else f"model `{self.model}`") + f", one call per task, window {s.window_tokens:,} tokens"
        lines = [
            f"### {s.task} · baseline `{s.baseline}` · n={s.n} · {s.length_tokens:,} tokens "
            f"· seed {s.seed} · via {s.via if s.baseline != 'direct' else 'library'}",
            "",
            f"Models: {who}.",
            "",
            *([f"Command: `{s.command}`", ""] if s.command else []),
            f"Cost: {self.cost_note()}. Tokens as the endpoint reported them (prompt / completion, "
            "all calls of the task). p95 by nearest rank.",
            "",
            "| task | score | cost (USD) | tokens in | tokens out | sub-calls | wall (s) | status | answer |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for r in self.rows:
            status = "final (best-effort)" if r.status == "final" and r.best_effort else r.status
            status = status if not r.note else f"{status}: {r.note}"
            lines.append(
                f"| {r.task_id} | {r.score:.3f} | {r.cost_usd:.4f} | {r.prompt_tokens:,} | "
                f"{r.completion_tokens:,} | {r.subcalls} | {r.wall_s:.2f} | {_cell(status, 90)} | "
                f"{_cell(r.answer, 40)} |"
            )
        lines += [
            f"| **mean** (n={sm['n']}) | **{sm['score_mean']:.3f}** | {sm['cost_mean_usd']:.4f} | "
            f"{sm['prompt_tokens_mean']:,.0f} | {sm['completion_tokens_mean']:,.0f} | "
            f"{sm['subcalls_mean']:.1f} | {sm['wall_mean_s']:.2f} | {sm['final']}/{sm['n']} final"
            + (f", {sm['best_effort']} best-effort (score {sm['best_effort_score_mean']:.3f})"
               if sm["best_effort"] else "") + " | |",
            f"| **p95** | | {sm['cost_p95_usd']:.4f} | {sm['tokens_p95']:,.0f} (in+out) | | "
            f"{sm['subcalls_p95']:.0f} | {sm['wall_p95_s']:.2f} | | |",
        ]
        return "\n".join(lines) + "\n"


def mean(values: list[float]) -> float:
    """Arithmetic mean, 0 for no values (an eval of zero tasks has nothing to average)."""
    return statistics.fmean(values) if values else 0.0


def _cell(text: str | None, limit: int) -> str:
    """A value fit for one Markdown table cell: one line, no pipes, cut at ``limit``."""
    if text is None:
        return "—"
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------------
# One task, three ways


def _row(task: Task, s: EvalSettings, notebook: Path, **fields: Any) -> TaskResult:
    return TaskResult(task_id=task.task_id, family=task.family, baseline=s.baseline,
                      via="library" if s.baseline == "direct" else s.via, gold=task.gold,
                      notebook=notebook.name, context_tokens=len(task.context) // CHARS_PER_TOKEN,
                      **fields)


def _run_library(task: Task, s: EvalSettings, cfg: RLMConfig, paths: dict[str, Path],
                 notebook: Path) -> TaskResult:
    from ..api import RLM

    # One RLM (client, cache, ledger) per task: the cost of task k must not depend on what tasks
    # before it left in the cache.
    with RLM(config=cfg) as rlm:
        started = time.perf_counter()
        result = rlm.run(task.query, task.context, context_source=str(paths["context"].resolve()))
        wall = time.perf_counter() - started
        result.save(str(notebook))
    u = result.usage
    return _row(task, s, notebook, score=score(task, result.answer), status=result.status,
                answer=result.answer, best_effort=result.run.best_effort,
                note=(result.stop_reason or "") if result.status != "final" else "", cost_usd=u.cost_usd, prompt_tokens=u.prompt_tokens,
                completion_tokens=u.completion_tokens, cached_tokens=u.cached_tokens,
                requests=u.requests, subcalls=result.subcalls, wall_s=wall)


def _kernel_env(s: EvalSettings) -> dict[str, str]:
    """What the kernel process must know: endpoint and models as env vars (the key it inherits),
    and this package on PYTHONPATH so the kernel runs the very code this runner imported (a source
    checkout need not be installed)."""
    env: dict[str, str] = {}
    if s.base_url:
        env["OPENAI_BASE_URL"] = s.base_url
    if s.model:
        env["RLM_MODEL"] = s.model
    if s.sub_model:
        env["RLM_SUB_MODEL"] = s.sub_model
    if s.concurrency:
        env["RLM_CONCURRENCY"] = str(s.concurrency)
    traits = setting_traits()
    for name, value in s.extra.items():
        env[env_name(name, traits[name])] = json.dumps(value) if isinstance(value, dict) \
            else str(value)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return env


def _read_kernel_notebook(path: Path) -> tuple[dict[str, float], int, dict[str, Any]]:
    """What the kernel recorded, read back from the trajectory it wrote: usage summed over every
    run's final cell (root and rlm() children), the number of sub-call cells, and the root run's
    final-cell record (answer, status, reason). Why the notebook and not only the comm messages:
    the notebook is the trajectory, the one record every front-end agrees on."""
    totals = {"prompt_tokens": 0.0, "completion_tokens": 0.0, "cached_tokens": 0.0,
              "requests": 0.0, "cost_usd": 0.0}
    subcalls = 0
    root_final: dict[str, Any] = {}
    if not path.exists():
        return totals, 0, root_final
    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("rlm") or {}
        if meta.get("kind") == "final":
            for key in totals:
                totals[key] += float((meta.get("usage") or {}).get(key, 0) or 0)
            if not meta.get("depth"):
                root_final = dict(meta)
        elif meta.get("kind") == "llm":
            subcalls += 1
    return totals, subcalls, root_final


def _run_kernel(task: Task, s: EvalSettings, cfg: RLMConfig, paths: dict[str, Path],
                notebook: Path) -> TaskResult:
    from ..headless import HeadlessRunner, error_text
    from ..launch import run_sync

    settings: list[str] = []
    if s.prices:
        settings.append("prices=" + json.dumps(s.prices, separators=(",", ":")))
    if s.baseline == "no-subcalls":
        settings.append("subcalls_enabled=False")
    cells = [f"%rlm config {' '.join(shlex.quote(x) for x in settings)}"] if settings else []
    cells.append(f"%rlm load {shlex.quote(str(paths['context'].resolve()))}")
    head = "%%rlm" + (f" --max-steps {s.max_steps}" if s.max_steps else "")
    query_cell = f"{head}\n{task.query}"
    runner = HeadlessRunner(env=_kernel_env(s), output=str(notebook))

    async def drive() -> tuple[str, float]:
        await runner.astart()
        try:
            for code in cells:
                res = await runner.aexecute(code)
                if res.reply.get("status") != "ok":
                    return f"setup cell failed: {error_text(res.reply)}", 0.0
            started = time.perf_counter()
            res = await runner.aexecute(query_cell)
            wall = time.perf_counter() - started
            if res.reply.get("status") != "ok" and runner.last_finish() is None:
                return error_text(res.reply), wall
            return "", wall
        finally:
            await runner.aclose()

    note, wall = run_sync(drive())
    finish = runner.last_finish() or {}
    usage, subcalls, final = _read_kernel_notebook(notebook)
    # The final cell first; else the finish message (``outcome``; ``state`` in earlier drafts).
    answer = final.get("answer", finish.get("answer"))
    status = str(final.get("status") or finish.get("outcome") or finish.get("state") or "error")
    if status != "final" and not note:
        note = str(final.get("reason") or finish.get("reason")
                   or "the run ended without a result")
    best_effort = bool(final.get("best_effort") or finish.get("best_effort"))
    return _row(task, s, notebook, score=score(task, answer), status=status, answer=answer,
                best_effort=best_effort,
                note=note, cost_usd=usage["cost_usd"], prompt_tokens=int(usage["prompt_tokens"]),
                completion_tokens=int(usage["completion_tokens"]),
                cached_tokens=int(usage["cached_tokens"]), requests=int(usage["requests"]),
                subcalls=subcalls, wall_s=wall)


def _direct_notebook(task: Task, s: EvalSettings, cfg: RLMConfig, paths: dict[str, Path],
                     call: SubCall | None, status: str, answer: str | None, reason: str | None,
                     usage: Usage | None) -> nbformat.NotebookNode:
    """The direct baseline's trajectory: what was asked, the one ``%%llm`` call (if any) with its
    response, and the ending; the same cell kinds and metadata as an RLM trajectory."""
    from ..notebook import final_cell, llm_cell, to_notebook
    from ..states import RunState
    from ..trajectory import ContextInfo, Run, new_id

    run = Run(run_id=new_id("r"), query=task.query, model=cfg.root_model,
              sub_model=cfg.root_model,
              context=ContextInfo.describe(task.context, str(paths["context"].resolve())),
              settings={**cfg.settings(), "baseline": "direct", "window_tokens": s.window_tokens},
              status=RunState(status) if status in RunState.__members__.values()
              else RunState.STOPPED, answer=answer, stop_reason=reason)
    run.ended = time.time()
    if usage is not None:
        run.usage.add(usage)
    intro = nbformat.v4.new_markdown_cell(
        f"**Direct baseline** (no REPL, no sub-calls): the whole context "
        f"({len(task.context):,} characters, ~{len(task.context) // CHARS_PER_TOKEN:,} tokens) and "
        f"the query in one chat completion to `{cfg.root_model}`, if it fits a window of "
        f"{s.window_tokens:,} tokens.\n\n**Query:** {task.query}",
        metadata={"rlm": {"kind": "query", "run": run.run_id, "depth": 0, "parent": None,
                          "baseline": "direct",
                          "header": {k: v for k, v in run.to_dict().items()
                                     if k not in ("steps", "subcalls")}}},
    )
    intro["id"] = f"{run.run_id}-q"
    cells: list[dict[str, Any]] = [intro]
    if call is not None:
        cells.append(llm_cell(run, call))
    cells.append(final_cell(run))
    return to_notebook([], extra_cells=cells)


def _run_direct(task: Task, s: EvalSettings, cfg: RLMConfig, paths: dict[str, Path],
                notebook: Path) -> TaskResult:
    from ..connect import open_client
    from ..errors import ModelCallError
    from ..notebook import write_notebook
    from ..states import CallState
    from ..trajectory import SubCall, new_id, preview, sha256_text

    prompt = direct_prompt(task)
    need = len(prompt) // CHARS_PER_TOKEN
    if need > s.window_tokens:
        reason = f"context does not fit ({need:,} tokens > window {s.window_tokens:,})"
        nb = _direct_notebook(task, s, cfg, paths, None, "not_run", None, reason, None)
        write_notebook(nb, str(notebook))
        return _row(task, s, notebook, score=0.0, status="not_run", answer=None,
                    note=reason + "; no call made")
    model = cfg.root_model
    call = SubCall(call_id=new_id("c"), model=model, depth=0, prompt=None,
                   prompt_preview=preview(prompt, 400), prompt_chars=len(prompt),
                   prompt_sha256=sha256_text(prompt), status=CallState.INFLIGHT)
    client = open_client(cfg)
    started = time.perf_counter()
    try:
        comp = client.complete([{"role": "user", "content": prompt}], model=model, depth=0)
    except ModelCallError as exc:
        wall = time.perf_counter() - started
        call.status, call.error = CallState.ERROR, str(exc)
        nb = _direct_notebook(task, s, cfg, paths, call, "error", None, str(exc), None)
        write_notebook(nb, str(notebook))
        return _row(task, s, notebook, score=0.0, status="error", answer=None, note=str(exc),
                    wall_s=wall, subcalls=0)
    finally:
        client.close()
    wall = time.perf_counter() - started
    call.status, call.response, call.usage = CallState.OK, comp.text, comp.usage
    call.latency_s, call.cache_key = comp.latency_s, comp.cache_key
    nb = _direct_notebook(task, s, cfg, paths, call, "final", comp.text, None, comp.usage)
    write_notebook(nb, str(notebook))
    u = comp.usage
    return _row(task, s, notebook, score=score(task, comp.text), status="final", answer=comp.text,
                cost_usd=u.cost_usd, prompt_tokens=u.prompt_tokens,
                completion_tokens=u.completion_tokens, cached_tokens=u.cached_tokens,
                requests=u.requests, subcalls=0, wall_s=wall)


# --------------------------------------------------------------------------------------------------
# The whole eval


def check_settings(s: EvalSettings) -> None:
    """Refuse bad settings before generating anything (a 1M-token family takes a while)."""
    if s.baseline not in BASELINES:
        raise ValueError(f"unknown baseline {s.baseline!r}; choose one of {', '.join(BASELINES)}")
    if s.via not in VIAS:
        raise ValueError(f"unknown --via {s.via!r}; choose one of {', '.join(VIAS)}")
    if s.n < 1:
        raise ValueError("--n must be at least 1")
    if s.length_tokens < 1:
        raise ValueError("--length must be at least 1 token")
    if s.window_tokens < 1:
        raise ValueError("--window-tokens must be at least 1")


def run_eval(s: EvalSettings, *, log: Callable[[str], None] | None = None) -> EvalReport:
    """Generate ``s.n`` tasks, run each with ``s.baseline``, write notebooks and results.

    Returns the report (also written to ``results.json`` and ``results.md`` in ``s.out``). A task
    that raises is recorded as an ``error`` row with score 0; the others still run.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    check_settings(s)
    cfg = s.config()
    model, sub_model = cfg.root_model, cfg.subcall_model  # raises ConfigError when no model named
    scripted = model.startswith("scripted")
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = generate(s.task, s.seed, s.n, s.length_tokens)
    runner = {"rlm": _run_kernel if s.via == "kernel" else _run_library,
              "no-subcalls": _run_kernel if s.via == "kernel" else _run_library,
              "direct": _run_direct}[s.baseline]
    rows: list[TaskResult] = []
    for i, task in enumerate(tasks, 1):
        paths = write_task(task, out)
        notebook = out / f"{task.task_id}.ipynb"
        try:
            row = runner(task, s, cfg, paths, notebook)
        except Exception as exc:  # noqa: BLE001 - one broken task must not lose the others' rows
            row = _row(task, s, notebook, score=0.0, status="error", answer=None,
                       note=f"{type(exc).__name__}: {exc}")
        rows.append(row)
        log(f"[{i}/{len(tasks)}] {task.task_id}: score {row.score:.3f}, {row.status}, "
            f"{row.subcalls} sub-calls, {row.total_tokens:,} tokens, {row.wall_s:.2f} s")
    report = EvalReport(settings=s, model=model, sub_model=sub_model, scripted=scripted, rows=rows)
    (out / "results.json").write_text(json.dumps(report.to_dict(), indent=1) + "\n", "utf-8")
    (out / "results.md").write_text(report.markdown(), "utf-8")
    return report
