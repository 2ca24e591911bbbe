"""Run lifecycle in the kernel: start, drive, pause, resume, replay, stop, and a human's step edits.

A run executes inside the cell that drives it (a ``%%rlm`` query, ``%rlm continue``...): an async
loop that awaits its model calls, so front-end messages (Pause, Stop) reach the kernel mid-run, each
step going through the shell like a human cell (:class:`~rlm_kernel.kernel.capture.ShellExecutor`).
The driver builds each drive from the session's parts: the :class:`RunRegistry` (records and
places), the :class:`ClientPool` (model clients), the :class:`FrontendChannel` (cells out), and
the views that observe a drive (the cell emitter, the query cell's own display, the run widget).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field, replace
from typing import Any, cast

from .. import cells
from ..budgets import Budget
from ..config import RLMConfig, redact_json, setting_flags
from ..custom_tools import Tool
from ..engine import Controller, Engine, Script
from ..errors import ConfigError, RLMError
from ..executor import InProcessExecutor
from ..forking import default_label, fork_of, fork_point, segments
from ..image_store import ImageStore
from ..lm import LMClient
from ..notebook import (
    MARKER_RE,
    earlier_version_cell,
    final_cell,
    fork_cell_source,
    fork_source,
    has_thought_cell,
    llm_cell,
    query_cell,
    recorded_responses,
    run_cells,
    step_cell,
    thought_cell,
    with_query_marker,
)
from ..observer import Observers, RunObserver
from ..outputs import outputs_to_text, sanitize_outputs, truncate
from ..prompt_store import PromptStore
from ..repl import Repl
from ..states import RunState, StepState
from ..trajectory import ContextInfo, ForkOf, Run, Step, new_id
from . import files
from .capture import ShellExecutor
from .channel import FrontendChannel
from .clients import ClientPool
from .display import QueryCellView
from .emitter import CellEmitter
from .interrupts import InterruptRouter
from .registry import RunPlace, RunRegistry

__all__ = ["RunDriver", "RunOutcome", "Branching"]


@dataclass
class RunOutcome:
    run: Run
    execution_count: int
    error: tuple[str, str] | None = None  # (ename, evalue) for the execute_reply


class RunDriver:
    """Every way a run starts, goes on or ends in the kernel, in one place.

    Longer than the other parts of ``kernel/`` on purpose: start, resume, replay and a human's
    step re-run all end in the same drive (:meth:`_drive`) and share its state (the active
    controller, the session REPL, the kept prompts); what they do not share lives elsewhere
    (records and places: ``registry``; clients: ``clients``; cells out: ``channel``/``emitter``;
    files: ``files``; SIGINT: ``interrupts``).
    """

    def __init__(self, shell: Any, config: RLMConfig, *, registry: RunRegistry, pool: ClientPool,
                 channel: FrontendChannel, log: Any) -> None:
        self.shell = shell
        self.config = config
        self.registry = registry
        self.pool = pool
        self.channel = channel
        self.log = log
        self.executor = ShellExecutor(shell)
        self.interrupts = InterruptRouter(lambda: self.executor.blocking)
        self.prompts = PromptStore(lambda: self.config.keep_prompt_chars)
        self.images = ImageStore(lambda: self.config.keep_image_bytes)
        self.controller: Controller | None = None
        #: Custom tools offered to every run of this session (``%rlm tool NAME``).
        self.tools: dict[str, Tool] = {}
        #: Replay by recorded order (imported runs): run id -> its tree's recorded replies.
        self.scripts: dict[str, Script] = {}
        session_run = Run(run_id="session", query="(cells typed by a human)", depth=0)
        self.session_repl = Repl(
            shell.user_ns, context=shell.user_ns.get("context"),
            client=cast(LMClient, _LazyClient(self)),  # built on first use, not at kernel start
            config=config, run=session_run, budget=Budget(config, pool.ledger),
            prompt_store=self.prompts, image_store=self.images,
        )

    # -- the human's hands ----------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The session's client for the current settings (a human's ``llm()``, ``%%llm``)."""
        return self.pool.client_for(self.config)

    def reconfigure(self, **changes: Any) -> None:
        for name, value in self.pool.admit(changes).items():
            setattr(self.config, name, value)
        self.session_repl.config = self.config

    def control(self, action: str, run_id: str | None) -> None:
        """A front-end's Pause / Step / Continue / Stop (any thread; acts at once)."""
        if action not in cells.CONTROL_ACTIONS:
            return
        active = self.registry.active
        if self.controller is not None and active and run_id in (None, active):
            self.controller.request(action)
            if action == "stop":
                self.pool.stop_all()

    def stop_active(self) -> None:
        """Ask the active run to stop and cancel every call in flight (an interrupt)."""
        if self.controller is not None:
            self.controller.request("stop")
        self.pool.stop_all()

    def stop_paused(self) -> list[Run]:
        """``%rlm stop``: end every paused run, and tell the front-ends."""
        stopped = self.registry.paused()
        for run in stopped:
            run.move(RunState.STOPPED)
            run.stop_reason = "stopped by the user (%rlm stop)"
            place = self.registry.places.get(run.run_id)
            anchor = place.anchor if place else None
            self.channel.send(cells.status_msg(run.run_id, cells.run_status(run, self.registry.runs),
                                               anchor))
            self.channel.send(cells.finish_msg(run.run_id, run.status, run.answer,
                                               run.stop_reason, anchor))
        return stopped

    # -- starting -------------------------------------------------------------------------------
    def new_run(self, query: str, opts: dict[str, Any], *, source: str, cell_id: str | None,
                base: RLMConfig | None = None, run_id: str | None = None,
                fork: Branching | None = None) -> Run:
        var = opts.get("context") or "context"
        context = fork.context if fork is not None else self.shell.user_ns.get(var)
        if context is None:
            raise ConfigError(
                f"no context: the variable {var!r} is not set. Assign the data to it first "
                f"(e.g. `{var} = open('big.txt').read()` or `%rlm load big.txt`), or pass "
                "--context NAME"
            )
        if hasattr(context, "__len__") and len(context) == 0:
            raise ConfigError(f"the context {var!r} is empty ({type(context).__name__} of length 0); "
                              "give the run something to read")
        cfg = (base or self.config).copy(**{k: v for k, v in opts.items()
                                            if k in _PER_RUN and v is not None})
        if opts.get("fresh"):  # asked again: no response comes from the session's cache
            cfg = cfg.copy(cache=False)
        source_tag = fork.source if fork is not None else \
            self.registry.context_sources.get(var, f"variable:{var}")
        run = Run(run_id=run_id or new_id("r"), query=query, model=cfg.root_model,
                  sub_model=cfg.subcall_model, context=ContextInfo.describe(context, source_tag),
                  settings=cfg.settings())
        if cfg.persistent:  # it builds on the session's earlier (ended) root runs
            run.builds_on = [r for r in self.registry.roots if self.registry.runs[r].status.ended]
        place = RunPlace(cell_id, cell_id or f"{run.run_id}-q", source, cfg, context=context)
        if fork is not None:
            run.fork_of, run.branch = fork.fork_of, fork.label
            place.inherited = fork.inherited
        self.registry.add_root(run, place)
        return run

    async def start(self, query: str, opts: dict[str, Any], *, source: str,
                    cell_id: str | None, base: RLMConfig | None = None,
                    run_id: str | None = None, fork: Branching | None = None,
                    supersedes: tuple[Run, dict[str, Run]] | None = None) -> RunOutcome:
        """A new run of a query cell. ``supersedes``: the run this cell recorded before (and the
        runs it came with), which the new one replaces: its cells stay, marked as an earlier
        version, below the new run's."""
        run = self.new_run(query, opts, source=source, cell_id=cell_id, base=base, run_id=run_id,
                           fork=fork)
        place = self.registry.places[run.run_id]
        count = self._count_query(source)
        # The query cell says which run it recorded (re-executing it then shows the record), and
        # learns its run's header (headless clients create the cell from this update).
        place.source = with_query_marker(source, run.run_id)
        qcell = query_cell(run, place.source, place.query_id)
        self.channel.send(cells.update_msg(run.run_id, place.query_id, metadata=qcell["metadata"],
                                           source=place.source, kind="query", anchor=cell_id))
        if supersedes is not None:
            self._supersede(*supersedes, by=run, place=place)
        return await self._drive(run, Controller(step_mode=bool(opts.get("step"))), count)

    def _supersede(self, old: Run, runs: dict[str, Run], *, by: Run, place: RunPlace) -> None:
        """Mark ``old``'s cells as an earlier version of the query ``by`` now answers: every cell
        keeps its content (readable, forkable) with markers no re-execution takes for live, and
        a header cell above them says what they are. ``by``'s cells go right under the query."""
        old.superseded_by = by.run_id
        old_cells = run_cells(old, runs, None, place.query_id)[1:]
        if not old_cells:
            return
        header = earlier_version_cell(old, by)
        self.channel.send(cells.insert_msg(old.run_id, header, anchor=place.anchor,
                                           after=place.query_id, kind="thought"))
        for cell in old_cells:
            patch: dict[str, Any] = {"metadata": cell["metadata"]}
            if cell["cell_type"] == "code":
                patch["source"] = cell["source"]
            self.channel.send(cells.update_msg(old.run_id, cell["id"], **patch))

    async def resume(self, run_id: str | None, *, step_mode: bool, source: str,
                     notebook: str | None = None, trust: bool = False) -> RunOutcome:
        reg = self.registry
        if notebook or (run_id not in reg.runs if run_id else not reg.roots):
            # Nothing in memory (a restarted kernel): resume from the saved trajectory instead.
            path = notebook or files.session_notebook()
            if path is None:
                reg.find(run_id)  # raises the clear "no run" message
            assert path is not None
            outcomes = await self.replay(path, live=True, source=source, only=run_id,
                                         trust=trust)
            return outcomes[-1]
        run = reg.find(run_id)
        count = self._count_query(source)
        if run.status == RunState.RUNNING and reg.active == run.run_id:
            raise RLMError(f"run {run.run_id} is still running")
        return await self._drive(run, Controller(step_mode=step_mode), count)

    async def replay(self, path: str, *, live: bool, source: str, cell_id: str | None = None,
                     only: str | None = None, trust: bool = False) -> list[RunOutcome]:
        """Re-run a trajectory's queries with its recorded responses.

        ``live=False`` (replay): every model call must come from the record; one that does not is
        reported, never invented; its cells go below the replaying cell (``cell_id``).
        ``live=True`` (resume): recorded calls are reused, so nothing already paid for is paid
        again, and the run goes on live past the end of the record; it keeps its run id and its
        query cell, so its cells are updated in place (ids are deterministic) and new ones follow.
        """
        runs, anchors = files.read_trajectory(path, consent=None if trust else self._consent)
        self.registry.recorded_anchors.update(anchors)
        self.pool.cache.seed(recorded_responses(runs))
        roots = [r for r in runs.values() if r.depth == 0 and only in (None, r.run_id)]
        if not roots:
            raise RLMError(f"{path} holds no run {only!r}" if only else f"{path} holds no root run")
        if live and only is None:
            # Resume the latest run and its branches; earlier runs are finished history.
            latest = next((r for r in reversed(roots) if r.fork_of is None), roots[-1])
            roots = [r for r in roots if r is latest or _descends(r, latest.run_id, runs)]
        outcomes: list[RunOutcome] = []
        renamed: dict[str, str] = {}  # recorded run id -> its replay's (a branch names its parent)
        self.pool.cache_only = not live
        try:
            for rec in roots:
                context = files.load_context(rec.context.source, rec.context.sha256,
                                             self.shell.user_ns)
                self.shell.user_ns["context"] = context
                self.registry.context_sources["context"] = rec.context.source
                base = self.config.replayable(rec.settings)
                opts = {"model": rec.model, "sub_model": rec.sub_model}
                anchor = self.registry.recorded_anchors.get(rec.run_id) if live else cell_id
                fork, source = None, f"%%rlm\n{rec.query}"
                if rec.fork_of is not None:
                    # A branch replays its inherited steps from its record, then its own part;
                    # replayed, it names its parent's replay.
                    parent_id = renamed.get(rec.fork_of.run, rec.fork_of.run)
                    fork = Branching(ForkOf(parent_id, rec.fork_of.at,
                                            [dict(m) for m in rec.fork_of.models]),
                                     rec.branch, _inherited_records(rec, runs), context,
                                     rec.context.source)
                    source = fork_source(replace(rec, fork_of=fork.fork_of))
                run_id = rec.run_id if live else new_id("r")
                if by_step_order(rec):  # an imported run: its replies in recorded order
                    self.scripts[run_id] = recorded_script(rec, runs)
                outcome = await self.start(rec.query, opts, source=source, cell_id=anchor,
                                           base=base, run_id=run_id, fork=fork)
                renamed[rec.run_id] = outcome.run.run_id
                outcomes.append(outcome)
        finally:
            self.pool.cache_only = False
        return outcomes

    def _consent(self, summary: str) -> bool:
        """Show what an untrusted trajectory would run and ask the human (a stdin request, as
        ``input()`` in a cell). A front-end that takes no input (nbclient, the CLI's kernel) means
        no: the caller says to pass ``--trust`` once the code has been read."""
        from IPython.display import Pretty, display

        display(Pretty(summary))
        kernel = getattr(self.shell, "kernel", None)
        try:
            answer = kernel.raw_input("Run this code? [y/N] ") if kernel is not None else ""
        except Exception:  # noqa: BLE001 - StdinNotImplementedError: no one to ask
            return False
        return answer.strip().lower() in ("y", "yes")

    async def fork(self, opts: dict[str, Any], query: str | None, *,
                   cell_id: str | None) -> RunOutcome:
        """``%rlm fork``: a branch of a run at one of its steps, as a new root run.

        Its steps up to ``--at`` are the parent's, re-executed from the record (no model call is
        paid: every call must come from the record, and each step must give its recorded output),
        then it goes on live with the parent's settings changed by the options given.
        """
        reg = self.registry
        parent = self._fork_parent(opts.get("run"), opts.get("from"), bool(opts.get("trust")))
        if reg.active == parent.run_id:
            raise RLMError(f"run {parent.run_id} is still running; fork it once it pauses or ends")
        at = int(opts["at"])
        inherited = fork_point(parent, at)
        place = reg.place_of(parent)
        if place is not None and place.context is not None:
            context = place.context
        else:
            context = files.load_context(parent.context.source, parent.context.sha256,
                                         self.shell.user_ns)
        # The parent's models as they ran: a fork changes only what its options name.
        base = (place.config if place is not None else self.config.replayable(parent.settings)
                ).copy(model=parent.model or None, sub_model=parent.sub_model or None)
        changes = {k: v for k, v in opts.items() if k in _PER_RUN and v is not None}
        cfg = base.copy(**changes)
        query = query or parent.query
        label = opts.get("label") or default_label(
            parent, at, model=cfg.root_model, sub_model=cfg.subcall_model, query=query,
            taken={r.branch for r in reg.runs.values() if r.branch})
        self.pool.cache.seed(recorded_responses({r.run_id: r for r in parent.tree(reg.runs)}))
        branching = Branching(fork_of(parent, at), label, inherited, context,
                              parent.context.source)
        # The query cell says exactly what the branch is (the parent by id, what changed), so it
        # reads, and re-runs, the same whatever runs come later.
        flags = setting_flags({k: v for k, v in changes.items()
                               if k not in ("model", "sub_model")
                               and v != base.settings().get(k)})
        source = fork_cell_source(
            branching.fork_of, query, label=label,
            model=cfg.root_model if cfg.root_model != parent.model else "",
            sub_model=cfg.subcall_model if cfg.subcall_model != parent.sub_model else "",
            flags=tuple(flags))
        return await self.start(query, {"step": opts.get("step")}, source=source,
                                cell_id=cell_id, base=cfg, fork=branching)

    def _fork_parent(self, run_id: str | None, notebook: str | None, trust: bool = False) -> Run:
        """The run to fork: this kernel's, or (with ``--from``, or after a restart) a notebook's,
        whose recorded runs then join this session's (for lineage and comparisons)."""
        reg = self.registry
        if notebook is None and (run_id in reg.runs if run_id else reg.roots):
            run = reg.find(run_id)
            if run.depth:
                raise RLMError(f"{run.run_id} is an rlm() sub-run; fork its root run instead")
            return run
        path = notebook or files.session_notebook()
        if path is None:
            reg.find(run_id)  # raises the clear "no run" message
        assert path is not None
        runs, anchors = files.read_trajectory(path, consent=None if trust else self._consent)
        roots = [r for r in runs.values() if r.depth == 0]
        parent = runs.get(run_id) if run_id else (roots[-1] if roots else None)
        if parent is None or parent.depth:
            known = ", ".join(r.run_id for r in roots) or "none"
            raise RLMError(f"{path} holds no root run {run_id!r}; its runs: {known}")
        for rid, rec in runs.items():
            reg.runs.setdefault(rid, rec)
        reg.recorded_anchors.update(anchors)
        return reg.runs[parent.run_id]

    # -- driving --------------------------------------------------------------------------------
    def _count_query(self, source: str) -> int:
        """Give the query (or control) cell its own execution count and history entry."""
        count = self.shell.execution_count
        with contextlib.suppress(Exception):
            self.shell.history_manager.store_inputs(count, source, source)
        self.shell.execution_count += 1
        return count

    def _views(self, run: Run, place: RunPlace) -> tuple[CellEmitter, list[RunObserver]]:
        """What follows this drive: the cell emitter always; without a mirroring front-end, the
        query cell's own step display and the run widget."""
        existing = [c["id"] for c in run_cells(run, self.registry.runs, place.source,
                                               place.query_id)] + place.extra_cells
        emitter = CellEmitter(self.channel, run, self.registry.runs, anchor=place.anchor,
                              query_id=place.query_id, known=existing)
        views: list[RunObserver] = [emitter]
        if not self.channel.mirrors:
            views.append(QueryCellView())
            widget = self._widget(run, place.config)
            if widget is not None:
                views.append(widget)
        return emitter, views

    def _widget(self, run: Run, cfg: RLMConfig) -> RunObserver | None:
        from .run_widget import RunWidget, widget_enabled

        if not widget_enabled(cfg):
            return None
        try:
            widget = RunWidget(run, self.registry.runs,
                               stop=lambda: self.control("stop", run.run_id))
            widget.display()
        except Exception as exc:  # noqa: BLE001 - the widget is a view; the run must go on
            self.log.warning("rlm: no run widget: %s", exc)
            return None
        return widget

    def _legs(self, run: Run, place: RunPlace) -> list[_Leg]:
        """The engine passes of a drive: a branch's inherited steps it does not hold yet, in
        segments by the models that made them, every call from the record; then the run itself."""
        legs: list[_Leg] = []
        if run.fork_of is not None and place.inherited:
            done = {s.n for s in run.steps}
            todo = [s for s in place.inherited if s.n not in done]
            for seg in segments(todo, run.fork_of):
                cfg = place.config.copy(model=seg.model or None, sub_model=seg.sub_model or None)
                legs.append(_Leg(cfg, seg.steps, cache_only=True))
        return [*legs, _Leg(place.config)]

    async def _run_legs(self, run: Run, place: RunPlace, legs: list[_Leg],
                        controller: Controller, observer: RunObserver) -> None:
        for leg in legs:
            cache_only = self.pool.cache_only
            self.pool.cache_only = cache_only or leg.cache_only
            try:
                client = self.pool.client_for(leg.config)
            finally:
                self.pool.cache_only = cache_only
            client.resume()
            run.model, run.sub_model = leg.config.root_model, leg.config.subcall_model
            engine = Engine(client=client, config=leg.config, run=run, executor=self.executor,
                            context=place.context, observer=observer, controller=controller,
                            runs=self.registry.runs, prompt_store=self.prompts,
                            image_store=self.images, recorded=leg.recorded,
                            recorded_only=leg is not legs[-1], tools=dict(self.tools),
                            script=self.scripts.get(run.run_id),
                            child_repls=place.child_repls)  # kept: children's namespaces
            place.repl = engine.repl
            await engine.arun()
            if run.status != RunState.RUNNING:
                return

    async def _drive(self, run: Run, controller: Controller, count: int) -> RunOutcome:
        reg = self.registry
        place = reg.places[run.run_id]
        legs = self._legs(run, place)
        self.pool.client_for(place.config)  # made (and its settings checked) before anything runs
        self.controller = controller
        reg.active = run.run_id
        previous_context = self.shell.user_ns.get("context")
        emitter, views = self._views(run, place)
        place.views = views
        emitter.start()
        task = self.interrupts.task = asyncio.ensure_future(
            self._run_legs(run, place, legs, controller, Observers(*views)))

        async def tick() -> None:  # wakes the loop so an interrupt acts within 0.2 s
            while True:
                await asyncio.sleep(0.2)

        ticker = asyncio.ensure_future(tick())
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            self.interrupts.task = None
            ticker.cancel()
            self.pool.resume_all()
            reg.active = None
            self.controller = None
            emitter.stop()
            self._rebind_session()
            if previous_context is not None:
                self.shell.user_ns["context"] = previous_context
        error = None
        if run.status in (RunState.STOPPED, RunState.ERROR):
            error = ("RLMRunStopped" if run.status == RunState.STOPPED else "RLMRunError",
                     run.stop_reason or str(run.status))
        return RunOutcome(run, count, error)

    def _rebind_session(self) -> None:
        """Hand the namespace back to the human: llm() & co. bound to the session, not a run
        (their `context` is the caller's to restore)."""
        self.shell.user_ns.update({k: v for k, v in self.session_repl.bound.items()
                                   if k != "context"})

    # -- human edits ----------------------------------------------------------------------------
    async def rerun_step(self, run: Run, step: Step, code: str,
                         cell_id: str | None = None) -> tuple[Any, int]:
        """A human ran a step cell: its code and outputs become the new truth for that step.

        Everything downstream of it (later steps, their sub-calls, the final answer) is marked
        stale: the run is paused, and ``%rlm continue`` goes on from here with new step numbers.
        ``cell_id``: the cell the human ran; when it is not the step's own cell (a copy), the
        step's cell is brought up to date too, so the trajectory shows what now stands. A sub-RLM's
        step runs in that child's own namespace (its REPL is kept), not the kernel's; its outputs
        are the cell's outputs."""
        place = self.registry.place_of(run)
        body = MARKER_RE.sub("", code.lstrip(), count=1).lstrip("\n")
        child = place.child_repls.get(run.run_id) if place and run.depth else None
        if child is not None:
            child.begin_step(step.n)
            result = await InProcessExecutor(child.ns).execute(
                body, timeout=None, run_id=run.run_id, step=step.n)
            child.restore()
            self._show_outputs(result.outputs)
            return self._record_rerun(run, step, body, result, place, child, cell_id)
        repl = place.repl if place else None
        if repl is not None:
            self.shell.user_ns.update(repl.bound)
            repl.begin_step(step.n)
            repl.active = True
        try:
            result = await self.executor.execute(code, timeout=None, run_id=run.run_id,
                                                 step=step.n, passthrough=True)
        finally:
            if repl is not None:
                repl.active = False
                repl.restore()
                self._rebind_session()
        return self._record_rerun(run, step, body, result, place, repl, cell_id)

    def _show_outputs(self, outputs: list[dict[str, Any]]) -> None:
        """A child step's outputs, shown in the cell the human ran (as ``run_cell`` would)."""
        for out in outputs:
            if out.get("output_type") == "stream":
                stream = sys.stdout if out.get("name") == "stdout" else sys.stderr
                stream.write(str(out.get("text", "")))
            elif out.get("output_type") == "error":
                sys.stderr.write("\n".join(out.get("traceback", [])) + "\n")

    def _record_rerun(self, run: Run, step: Step, body: str, result: Any,
                      place: RunPlace | None, repl: Repl | None,
                      cell_id: str | None) -> tuple[Any, int]:
        was_proposed = step.status == StepState.PROPOSED
        old_final = final_cell(run) if run.status.ended and run.answer is not None else None
        step.edited = step.edited or body.strip() != (step.code or "").strip()
        step.code = body
        # What the code printed may hold a secret (os.environ['OPENAI_API_KEY']): never record it.
        step.outputs = redact_json(sanitize_outputs(result.outputs))
        step.error = redact_json(result.error)
        step.execution_count = result.execution_count
        limit = place.config.output_chars if place else self.config.output_chars
        step.output_text = truncate(outputs_to_text(step.outputs), limit)
        step.move(StepState.DONE)
        if repl is not None and repl.final is not None:
            step.final = redact_json(repl.final)
        stale = [] if was_proposed else run.mark_stale_after(step.n)
        if stale and run.status.ended:
            run.move(RunState.PAUSED)
            run.answer = None
            run.stop_reason = f"step {step.n} was edited; %rlm continue resumes from it"
        elif run.status == RunState.PAUSED:
            run.stop_reason = (f"step {step.n} ran ({'edited' if step.edited else 'as proposed'});"
                               " %rlm continue goes on, %rlm step runs one more")
        if place is not None:
            self._send_edit(run, step, stale, old_final, cell_id)
        return result, result.execution_count or 0

    def _send_edit(self, run: Run, step: Step, stale: list[Step], old_final: dict[str, Any] | None,
                   cell_id: str | None) -> None:
        """Tell front-ends what an edited step changed: the step's cell, what went stale, and
        the run's state (the run bar must not still say the step is proposed)."""
        place = self.registry.place_of(run)
        anchor = place.anchor if place else None
        cell = step_cell(run, step)
        patch: dict[str, Any] = {"metadata": cell["metadata"]}
        if cell_id != cell["id"]:  # the human ran a copy: the step's own cell shows the truth
            patch.update(source=cell["source"], outputs=cell["outputs"],
                         execution_count=cell["execution_count"])
        msgs = [cells.update_msg(run.run_id, cell["id"], **patch)]
        numbers = {s.n for s in stale}
        for s in stale:
            if s.code is not None:
                sc = step_cell(run, s)
                msgs.append(cells.update_msg(run.run_id, sc["id"], metadata=sc["metadata"],
                                             source=sc["source"]))
            if has_thought_cell(s):
                tc = thought_cell(run, s, record=s.code is None)
                msgs.append(cells.update_msg(run.run_id, tc["id"], metadata=tc["metadata"]))
        for call in run.subcalls.values():
            if call.step in numbers:
                lc = llm_cell(run, call)
                msgs.append(cells.update_msg(run.run_id, call.call_id, metadata=lc["metadata"]))
        if old_final is not None and stale:
            if place is not None:
                place.extra_cells.append(old_final["id"])
            meta = old_final["metadata"]
            meta["rlm"]["stale"] = True
            msgs.append(cells.update_msg(run.run_id, old_final["id"], metadata=meta, source=(
                f"~~{old_final['source'].splitlines()[0]}~~ *(stale: step {step.n} was edited; "
                f"`%rlm continue` makes a new answer)*\n\n" + old_final["source"])))
        msgs.append(cells.status_msg(run.run_id, cells.run_status(run, self.registry.runs),
                                     anchor))
        if run.status == RunState.PAUSED:
            msgs.append(cells.finish_msg(run.run_id, run.status, run.answer, run.stop_reason,
                                         anchor))
        self.channel.send(cells.batch_msg(msgs))


@dataclass
class _Leg:
    """One engine pass of a drive: its settings, the recorded steps it re-executes (a branch's
    inherited ones), and whether every model call must come from the record."""

    config: RLMConfig
    recorded: list[Step] = field(default_factory=list)
    cache_only: bool = False


@dataclass
class Branching:
    """What makes a new run a branch: where it forks, its label, the inherited steps as recorded,
    and the parent's context (and where that came from)."""

    fork_of: ForkOf
    label: str
    inherited: list[Step]
    context: Any
    source: str


def _descends(run: Run, ancestor: str, runs: dict[str, Run]) -> bool:
    seen = 0
    while run.fork_of is not None and seen < 100:
        if run.fork_of.run == ancestor:
            return True
        parent = runs.get(run.fork_of.run)
        if parent is None:
            return False
        run, seen = parent, seen + 1
    return False


def _inherited_records(branch: Run, runs: dict[str, Run]) -> list[Step]:
    """A recorded branch's inherited steps: its own record of them, and its parent's for any it
    lacks (a branch that stopped before it re-executed them all)."""
    assert branch.fork_of is not None
    at = branch.fork_of.at
    parent = runs.get(branch.fork_of.run)
    out = {s.n: s for s in (parent.steps if parent else []) if s.n <= at and s.live}
    out.update({s.n: s for s in branch.steps if s.n <= at and s.live})
    return [out[n] for n in sorted(out)]


def by_step_order(run: Run) -> bool:
    """An imported run (another runtime's log): replayed by recorded step order, since this
    engine asks with its own prompts, whose cache keys differ from the recording's."""
    imported = run.settings.get("imported")
    return isinstance(imported, dict) and imported.get("replay") == "by-step-order"


def recorded_script(root: Run, runs: dict[str, Run]) -> Script:
    """The root replies of a recorded run tree, by path (``""`` for the root, ``s2r1`` for the
    first sub-RLM of step 2, ``s2r1-s3r2`` below it): what replay by order serves."""
    script: Script = {}
    todo: list[tuple[Run, str]] = [(root, "")]
    while todo:
        run, path = todo.pop()
        script[path] = [s.reply for s in sorted(run.steps, key=lambda s: s.n)]
        for cid in run.children:
            child = runs.get(cid)
            if child is not None:
                tail = cid[len(run.run_id) + 1:]
                todo.append((child, f"{path}-{tail}" if path else tail))
    return script


_PER_RUN = frozenset(name for name, trait in RLMConfig.class_traits(config=True).items()
                     if trait.metadata.get("per_run"))


class _LazyClient:
    """The session REPL's client, created on the first human llm() call (not at kernel start)."""

    def __init__(self, driver: RunDriver) -> None:
        self._driver = driver

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver.client, name)
