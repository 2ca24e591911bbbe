"""The kernel's authoritative trajectory: starts, drives, edits and resumes runs.

A run executes inside the query cell's execution (an async loop that awaits model calls), each step
through the shell like a human cell. The manager keeps every run's record, the full sub-call prompts
of this session and the contexts, and tells front-ends what happens through ``rlm.cells``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import cells
from ..budgets import Budget
from ..config import RLMConfig
from ..engine import Controller, Engine
from ..errors import ConfigError, RLMError
from ..lm import BackgroundLoop, LMClient, ResponseCache, UsageLedger
from ..notebook import (
    MARKER_RE,
    marker,
    query_cell,
    query_cell_ids,
    recorded_responses,
    run_cells,
    runs_from_notebook,
    step_cell,
    thought_cell,
    to_notebook,
)
from ..outputs import outputs_to_text, truncate
from ..prompt_store import PromptStore
from ..repl import Repl
from ..trajectory import ContextInfo, Run, Step, new_id
from .capture import ShellExecutor
from .emitter import CellEmitter

if TYPE_CHECKING:
    import nbformat

__all__ = ["RunManager", "RunOutcome"]

_CLIENT_KEYS = ("base_url", "api_key", "concurrency", "requests_per_minute", "tokens_per_minute",
                "max_retries", "call_timeout", "scripted_latency", "temperature", "root_max_tokens")


@dataclass
class RunOutcome:
    run: Run
    execution_count: int
    error: tuple[str, str] | None = None  # (ename, evalue) for the execute_reply


@dataclass
class _RunPlace:
    """Where a root run's cells live and what drives it."""

    anchor: str | None
    query_id: str
    source: str
    config: RLMConfig
    emitter: CellEmitter
    repl: Repl | None = None
    contexts: dict[str, Any] = field(default_factory=dict)
    panel: Any = None  # the RunPanel in the cell that drives the run, if one is shown


class RunManager:
    def __init__(self, kernel: Any, config: RLMConfig) -> None:
        self.kernel = kernel
        self.shell = kernel.shell
        self.config = config
        self.loop = BackgroundLoop()
        self.cache = ResponseCache()
        self.ledger = UsageLedger(config.prices)
        self._clients: dict[tuple[Any, ...], LMClient] = {}
        self.runs: dict[str, Run] = {}
        self.roots: list[str] = []
        self.places: dict[str, _RunPlace] = {}
        self.prompts = PromptStore(lambda: self.config.keep_prompt_chars)
        self.context_sources: dict[str, str] = {}
        self.recorded_anchors: dict[str, str] = {}  # run id -> its query cell id in a loaded file
        self.active: str | None = None
        self.controller: Controller | None = None
        self.cache_only = False
        self.frontend_comms: list[Any] = []
        self._kernel_comm: Any = None
        self.mirrors = False
        self._blocking = False
        self._task: asyncio.Future[Any] | None = None
        self.executor = ShellExecutor(self.shell)
        self.executor.on_blocking = self._set_blocking
        session_run = Run(run_id="session", query="(cells typed by a human)", depth=0)
        self.session_repl = Repl(
            self.shell.user_ns, context=self.shell.user_ns.get("context"),
            client=_LazyClient(self), config=config, run=session_run,
            budget=Budget(config, self.ledger), prompt_store=self.prompts,
        )

    # -- clients -------------------------------------------------------------------------------
    def client_for(self, cfg: RLMConfig) -> LMClient:
        """One client per endpoint and limits; all share this session's cache and ledger."""
        key = tuple(getattr(cfg, k) for k in _CLIENT_KEYS) + (self.cache_only,)
        client = self._clients.get(key)
        if client is None:
            self.ledger.prices = dict(cfg.prices)
            client = LMClient(cfg, cache=self.cache, ledger=self.ledger, loop=self.loop,
                              cache_only=self.cache_only)
            self._clients[key] = client
        client.config = cfg
        return client

    @property
    def client(self) -> LMClient:
        return self.client_for(self.config)

    def reconfigure(self, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self.config, name, value)
        self.session_repl.config = self.config

    # -- front-end comms -----------------------------------------------------------------------
    def on_frontend_comm(self, comm: Any, open_msg: dict[str, Any]) -> None:
        """A front-end opened ``rlm.cells`` (e.g. after a reload): answer with the whole state."""
        self.frontend_comms.append(comm)
        comm.on_msg(self._on_comm_msg)
        comm.on_close(lambda msg: self.frontend_comms.remove(comm)
                      if comm in self.frontend_comms else None)
        if self._kernel_comm is not None:
            with contextlib.suppress(Exception):
                self._kernel_comm.close()
            self._kernel_comm = None
        self._handle(open_msg.get("content", {}).get("data") or {}, comm)

    def _on_comm_msg(self, msg: dict[str, Any]) -> None:
        content = msg.get("content", {})
        known = [*self.frontend_comms, *([self._kernel_comm] if self._kernel_comm else [])]
        origin = next((c for c in known if c.comm_id == content.get("comm_id")), None)
        self._handle(content.get("data") or {}, origin)

    def _handle(self, data: dict[str, Any], reply_comm: Any) -> None:
        try:
            data = cells.check(data)
        except ValueError as exc:
            self.kernel.log.warning("rlm.cells: %s", exc)
            return
        if data["type"] == "hello":
            self.mirrors = self.mirrors or bool(data.get("mirrors"))
            # Answer on the comm the hello came by: other comms may belong to closed pages.
            target = reply_comm or self._comm_targets()[0]
            self._send_on(target, self.sync_message())
        elif data["type"] == "control":
            self.control(data.get("action", ""), data.get("run"))

    def _comm_targets(self) -> list[Any]:
        if self.frontend_comms:
            return self.frontend_comms
        if self._kernel_comm is None:
            from comm import create_comm

            self._kernel_comm = create_comm(target_name=cells.TARGET,
                                            data=cells.hello_msg("rlm-kernel", False))
            self._kernel_comm.on_msg(self._on_comm_msg)
        return [self._kernel_comm]

    def send(self, msg: dict[str, Any]) -> None:
        for comm in list(self._comm_targets()):
            self._send_on(comm, msg)

    def _send_on(self, comm: Any, msg: dict[str, Any]) -> None:
        """Send, dropping a comm a front-end has closed (a console without our target closes the
        kernel's comm at once) so the next message goes on a live one."""
        try:
            comm.send(msg)
        except Exception:  # noqa: BLE001 - a closed or broken comm must not stop the run
            if comm in self.frontend_comms:
                self.frontend_comms.remove(comm)
            elif comm is self._kernel_comm:
                self._kernel_comm = None

    def sync_message(self) -> dict[str, Any]:
        out = []
        for rid in self.roots:
            run, place = self.runs[rid], self.places[rid]
            out.append({"run": rid, "anchor": place.anchor,
                        "cells": run_cells(run, self.runs, place.source, place.query_id)[1:],
                        "status": self.status(rid)["status"],
                        "finished": None if rid == self.active else cells.finish_msg(
                            rid, run.status, run.answer, run.stop_reason, place.anchor)})
        return cells.sync_msg(out)

    def control(self, action: str, run_id: str | None) -> None:
        if action not in cells.CONTROL_ACTIONS:
            return
        if self.controller is not None and self.active and run_id in (None, self.active):
            self.controller.request(action)
            if action == "stop":
                for c in self._clients.values():
                    c.stop()

    # -- status --------------------------------------------------------------------------------
    def status(self, run_id: str) -> dict[str, Any]:
        run = self.runs[run_id]
        tree = [r for r in self.runs.values() if r.run_id == run_id or _root_of(r, self.runs) == run_id]
        calls = [c for r in tree for c in r.subcalls.values()]
        tokens = sum(r.usage.total_tokens for r in tree)
        cost = sum(r.usage.cost_usd for r in tree)
        place = self.places.get(run_id)
        return cells.status_msg(run_id, cells.status_payload(
            state=run.status, step=len([s for s in run.steps if s.status != "stale"]),
            max_steps=int(run.settings.get("max_steps", self.config.max_steps)),
            subcalls_done=sum(c.status == "ok" for c in calls),
            subcalls_inflight=sum(c.status == "inflight" for c in calls),
            subcalls_failed=sum(c.status in ("error", "cancelled") for c in calls),
            tokens=tokens, cost_usd=cost, elapsed_s=run.elapsed_s,
        ), place.anchor if place else None)

    # -- runs ----------------------------------------------------------------------------------
    def _set_blocking(self, value: bool) -> None:
        self._blocking = value

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """SIGINT routing for the kernel's own cells, from their first line to their reply.

        Inside a step's code (or any synchronous stretch, like building the first client) an
        interrupt is a KeyboardInterrupt, as in any cell; while the run awaits a model call it
        cancels the run's task. Either way the run is asked to stop and every in-flight call is
        cancelled at once. Installed before anything slow, so no interrupt escapes to ipykernel.
        """
        loop = asyncio.get_running_loop()

        def on_sigint(signum: int, frame: Any) -> None:
            if self.controller is not None:
                self.controller.request("stop")
            for c in list(self._clients.values()):
                c.stop()
            task = self._task
            if task is None or self._blocking:
                raise KeyboardInterrupt
            loop.call_soon_threadsafe(task.cancel)

        old = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, old)

    def new_run(self, query: str, opts: dict[str, Any], *, source: str,
                cell_id: str | None, base: RLMConfig | None = None,
                run_id: str | None = None) -> tuple[Run, Any]:
        var = opts.get("context") or "context"
        ns = self.shell.user_ns
        context = ns.get(var)
        if context is None:
            raise ConfigError(
                f"no context: the variable {var!r} is not set. Assign the data to it first "
                f"(e.g. `{var} = open('big.txt').read()` or `%rlm load big.txt`), or pass "
                "--context NAME"
            )
        if hasattr(context, "__len__") and len(context) == 0:
            raise ConfigError(f"the context {var!r} is empty ({type(context).__name__} of length 0); "
                              "give the run something to read")
        overrides = {k: opts.get(k) for k in ("model", "sub_model", "max_steps", "max_depth",
                                              "max_subcalls", "max_tokens", "max_cost",
                                              "max_wall_time", "step_timeout", "concurrency")}
        cfg = (base or self.config).copy(**overrides)
        source_tag = self.context_sources.get(var, f"variable:{var}")
        run = Run(run_id=run_id or new_id("r"), query=query, model=cfg.root_model,
                  sub_model=cfg.subcall_model, context=ContextInfo.describe(context, source_tag),
                  settings=cfg.settings())
        emitter = CellEmitter(self.send, anchor=cell_id, query_id=cell_id or f"{run.run_id}-q",
                              status_of=lambda: self._tick(run.run_id), runs=self.runs,
                              on_step_done=self._step_done_display, io_barrier=self._io_barrier)
        self.runs[run.run_id] = run
        self.roots.append(run.run_id)
        self.places[run.run_id] = _RunPlace(cell_id, cell_id or f"{run.run_id}-q", source, cfg,
                                            emitter, contexts={run.run_id: context})
        return run, context

    async def start(self, query: str, opts: dict[str, Any], *, source: str,
                    cell_id: str | None, base: RLMConfig | None = None,
                    run_id: str | None = None) -> RunOutcome:
        run, context = self.new_run(query, opts, source=source, cell_id=cell_id, base=base,
                                    run_id=run_id)
        place = self.places[run.run_id]
        count = self._count_query(source)
        place.emitter.start()
        # The query cell learns its run (and headless clients create it from this update).
        qcell = query_cell(run, source, place.query_id)
        self.send(cells.update_msg(run.run_id, place.query_id, metadata=qcell["metadata"],
                                   source=source, kind="query", anchor=cell_id))
        return await self._drive(run, context, Controller(step_mode=bool(opts.get("step"))), count)

    async def resume(self, run_id: str | None, *, step_mode: bool, source: str,
                     notebook: str | None = None) -> RunOutcome:
        if notebook or (run_id not in self.runs if run_id else not self.roots):
            # Nothing in memory (a restarted kernel): resume from the saved trajectory instead.
            path = notebook or _session_notebook()
            if path is None:
                self.find(run_id)  # raises the clear "no run" message
            assert path is not None
            outcomes = await self.replay(path, live=True, source=source, only=run_id)
            return outcomes[-1]
        run = self.find(run_id)
        count = self._count_query(source)
        if run.status == "running" and self.active == run.run_id:
            raise RLMError(f"run {run.run_id} is still running")
        self.places[run.run_id].emitter.start()
        context = self.places[run.run_id].contexts.get(run.run_id)
        return await self._drive(run, context, Controller(step_mode=step_mode), count)

    async def replay(self, path: str, *, live: bool, source: str, cell_id: str | None = None,
                     only: str | None = None) -> list[RunOutcome]:
        """Re-run a trajectory's queries with its recorded responses.

        ``live=False`` (replay): every model call must come from the record; one that does not is
        reported, never invented; its cells go below the replaying cell (``cell_id``).
        ``live=True`` (resume): recorded calls are reused, so nothing already paid for is paid
        again, and the run goes on live past the end of the record; it keeps its run id and its
        query cell, so its cells are updated in place (ids are deterministic) and new ones follow.
        """
        runs = self.load_notebook(path, cache_only=not live)
        roots = [r for r in runs.values() if r.depth == 0 and only in (None, r.run_id)]
        if not roots:
            raise RLMError(f"{path} holds no run {only!r}" if only else f"{path} holds no root run")
        if live:
            roots = roots[-1:]  # resume the latest run; earlier ones are finished history
        outcomes: list[RunOutcome] = []
        replayable = set(RLMConfig.class_trait_names(config=True)) - {
            "api_key", "base_url", "concurrency", "requests_per_minute", "tokens_per_minute",
            "max_retries", "call_timeout", "scripted_latency", "prices", "cache"}
        try:
            for rec in roots:
                context = self.load_context(rec.context.source, rec.context.sha256)
                self.shell.user_ns["context"] = context
                self.context_sources["context"] = rec.context.source
                base = self.config.copy(**{k: v for k, v in rec.settings.items()
                                           if k in replayable and v is not None})
                opts = {"model": rec.model, "sub_model": rec.sub_model}
                src = f"%%rlm\n{rec.query}"
                anchor = self.recorded_anchors.get(rec.run_id) if live else cell_id
                outcomes.append(await self.start(
                    rec.query, opts, source=src, cell_id=anchor, base=base,
                    run_id=rec.run_id if live else None))
        finally:
            self.cache_only = False
        return outcomes

    def find(self, run_id: str | None) -> Run:
        if run_id:
            if run_id not in self.runs:
                raise RLMError(f"no run {run_id!r} in this kernel; known: {', '.join(self.roots) or 'none'}")
            return self.runs[run_id]
        if not self.roots:
            raise RLMError("no run to continue: start one with a %%rlm cell (or %rlm replay/resume)")
        return self.runs[self.roots[-1]]

    def _count_query(self, source: str) -> int:
        """Give the query (or control) cell its own execution count and history entry."""
        count = self.shell.execution_count
        with contextlib.suppress(Exception):
            self.shell.history_manager.store_inputs(count, source, source)
        self.shell.execution_count += 1
        return count

    async def _drive(self, run: Run, context: Any, controller: Controller, count: int) -> RunOutcome:
        place = self.places[run.run_id]
        cfg = place.config
        client = self.client_for(cfg)
        client.resume()
        self.controller = controller
        self.active = run.run_id
        previous_context = self.shell.user_ns.get("context")
        engine = Engine(client=client, config=cfg, run=run, executor=self.executor,
                        context=context, observer=place.emitter, controller=controller,
                        runs=self.runs, prompt_store=self.prompts)
        place.repl = engine.repl
        place.panel = self._show_panel(run, cfg)
        engine.executor = _MarkedExecutor(self.executor, run)  # type: ignore[assignment]
        task = self._task = asyncio.ensure_future(engine.arun())

        async def tick() -> None:  # wakes the loop so an interrupt acts within 0.2 s
            while True:
                await asyncio.sleep(0.2)

        ticker = asyncio.ensure_future(tick())
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            self._task = None
            ticker.cancel()
            for c in self._clients.values():
                c.resume()
            self.active = None
            self.controller = None
            place.emitter.stop()
            if place.panel is not None:
                place.panel.finish(run)
            self._rebind_session()
            if previous_context is not None:
                self.shell.user_ns["context"] = previous_context
        error = None
        if run.status in ("stopped", "error"):
            error = ("RLMRunStopped" if run.status == "stopped" else "RLMRunError",
                     run.stop_reason or run.status)
        return RunOutcome(run, count, error)

    def _rebind_session(self) -> None:
        """Hand the namespace back to the human: llm() & co. bound to the session, not a run
        (their `context` is the caller's to restore)."""
        self.shell.user_ns.update({k: v for k, v in self.session_repl.bound.items()
                                   if k != "context"})

    def _tick(self, run_id: str) -> dict[str, Any]:
        """The emitter's throttled status message; the run's panel follows the same ticks."""
        msg = self.status(run_id)
        place = self.places.get(run_id)
        if place is not None and place.panel is not None:
            place.panel.update(msg["status"])
        return msg

    def _show_panel(self, run: Run, cfg: RLMConfig) -> Any:
        """A live RunPanel (widget + text fallback) in the cell that drives the run.

        Not when a mirroring front-end is connected: the JupyterLab extension's run bar shows the
        same counters and controls, and a headless trajectory should not save a widget view.
        """
        from .panel import RunPanel, panel_enabled

        if run.depth or self.mirrors or not panel_enabled(cfg):
            return None
        try:
            panel = RunPanel(run, int(run.settings.get("max_steps", cfg.max_steps)),
                             stop=lambda: self.control("stop", run.run_id))
            panel.display()
        except Exception as exc:  # noqa: BLE001 - the panel is a view; the run must go on
            self.kernel.log.warning("rlm: no run panel: %s", exc)
            return None
        return panel

    def _io_barrier(self, done: Any) -> None:
        """Set ``done`` once the IOPub thread has processed every send queued before this."""
        thread = getattr(self.kernel, "iopub_thread", None)
        if thread is None:
            done.set()
            return
        thread.schedule(done.set)

    def _step_done_display(self, run: Run, step: Step) -> None:
        """Without a mirroring front-end the query cell itself shows each step."""
        if self.mirrors or run.depth:
            return
        from .display import show_step

        show_step(run, step)

    # -- human edits ---------------------------------------------------------------------------
    def step_of(self, code: str) -> tuple[Run, Step] | None:
        m = MARKER_RE.match(code.lstrip())
        if not m or m.group("stale"):
            return None
        run = self.runs.get(m.group("run"))
        if run is None:
            return None
        step = next((s for s in run.steps if s.n == int(m.group("step"))), None)
        return (run, step) if step is not None else None

    async def rerun_step(self, run: Run, step: Step, code: str) -> tuple[Any, int]:
        """A human ran a step cell: its code and outputs become the new truth for that step."""
        place = self.places.get(_root_of(run, self.runs) or run.run_id)
        repl = place.repl if place else None
        if repl is not None:
            self.shell.user_ns.update(repl.bound)
            repl.begin_step(step.n)
        body = MARKER_RE.sub("", code.lstrip(), count=1).lstrip("\n")
        result = await self.executor.execute(code, timeout=None, label=f"rlm step {step.n}",
                                             passthrough=True)
        if repl is not None:
            repl.restore()
            self._rebind_session()
        was_proposed = step.status == "proposed"
        step.edited = step.edited or body.strip() != (step.code or "").strip()
        step.code = body
        step.outputs, step.error = result.outputs, result.error
        step.execution_count = result.execution_count
        step.output_text = truncate(outputs_to_text(step.outputs), place.config.output_chars
                                    if place else self.config.output_chars)
        step.status = "done"
        if repl is not None and repl.final is not None:
            step.final = repl.final
        stale = [] if was_proposed else [s for s in run.steps if s.n > step.n and s.status != "stale"]
        for s in stale:
            s.status = "stale"
        if stale and run.status == "final":
            run.status, run.answer = "paused", None
            run.stop_reason = f"step {step.n} was edited; %rlm continue resumes from it"
        if place is not None:
            cell = step_cell(run, step)
            self.send(cells.update_msg(run.run_id, cell["id"], metadata=cell["metadata"]))
            for s in stale:
                if s.code is not None:
                    sc = step_cell(run, s)
                    self.send(cells.update_msg(run.run_id, sc["id"], metadata=sc["metadata"],
                                               source=sc["source"]))
                if s.thought or s.code is None:
                    tc = thought_cell(run, s, record=s.code is None)
                    self.send(cells.update_msg(run.run_id, tc["id"], metadata=tc["metadata"]))
        return result, result.execution_count or 0

    # -- files ---------------------------------------------------------------------------------
    def export(self, path: str) -> nbformat.NotebookNode:
        from ..notebook import write_notebook

        roots = [self.runs[r] for r in self.roots]
        nb = to_notebook(roots, self.runs)
        # Keep each query cell as the human typed it (its options included).
        for cell in nb.cells:
            meta = cell.metadata.get("rlm", {})
            if meta.get("kind") == "query" and meta.get("run") in self.places:
                cell.source = self.places[meta["run"]].source
        write_notebook(nb, path)
        return nb

    def load_notebook(self, path: str, *, cache_only: bool) -> dict[str, Run]:
        """Seed this session's cache from a trajectory (replay: and serve nothing else)."""
        import nbformat

        nb = nbformat.read(path, as_version=4)
        runs = runs_from_notebook(nb)
        self.recorded_anchors.update(query_cell_ids(nb))
        if not runs:
            raise RLMError(f"{path} holds no RLM trajectory (no cells with metadata.rlm)")
        self.cache.seed(recorded_responses(runs))
        if cache_only:
            self.cache_only = True
        return runs

    def load_context(self, source: str, expected_sha: str = "") -> Any:
        """Reload a recorded context from its file; say plainly when that is not possible."""
        if source.startswith("variable:"):
            var = source.split(":", 1)[1]
            if var in self.shell.user_ns:
                return self.shell.user_ns[var]
            raise RLMError(
                f"the trajectory's context came from the variable {var!r}, which this kernel does "
                f"not have; set `{var} = ...` to the same data, then re-run"
            )
        if not source or not os.path.exists(source):
            raise RLMError(
                f"the trajectory's context file {source!r} is not here; put it at that path (or "
                "load the data into `context`) and re-run"
            )
        with open(source, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
        info = ContextInfo.describe(text, source)
        if expected_sha and info.sha256 != expected_sha:
            raise RLMError(
                f"the context file {source} differs from the recorded one (sha256 {info.sha256[:12]} "
                f"!= {expected_sha[:12]}); replay needs the same data"
            )
        return text


class _MarkedExecutor:
    """Prefixes each root step with its marker line so the step is recognisable anywhere."""

    def __init__(self, inner: ShellExecutor, run: Run) -> None:
        self.inner, self.run = inner, run
        self.namespace = inner.namespace

    async def execute(self, code: str, *, timeout: float | None, label: str) -> Any:
        n = int(label.rsplit(" ", 1)[-1])
        self.inner.source_prefix = marker(self.run.run_id, n)
        try:
            return await self.inner.execute(code, timeout=timeout, label=label)
        finally:
            self.inner.source_prefix = ""


class _LazyClient:
    """The session REPL's client, created on the first human llm() call (not at kernel start)."""

    def __init__(self, manager: RunManager) -> None:
        self._manager = manager

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manager.client, name)


def _root_of(run: Run, runs: dict[str, Run]) -> str | None:
    seen = 0
    while run.parent and seen < 100:
        parent = runs.get(run.parent)
        if parent is None:
            return None
        run, seen = parent, seen + 1
    return run.run_id


def _session_notebook() -> str | None:
    """The notebook this kernel serves, if the server said (jupyter_server sets JPY_SESSION_NAME)."""
    name = os.environ.get("JPY_SESSION_NAME", "")
    if not name.endswith(".ipynb"):
        return None
    for candidate in (name, os.path.basename(name)):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return None
