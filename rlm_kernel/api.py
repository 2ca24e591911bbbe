"""The library API: ``RLM(...).run(query, context)`` in any Python process, no Jupyter needed."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config import RLMConfig
from .connect import open_client
from .custom_tools import tools_from
from .engine import Controller, Engine
from .executor import InProcessExecutor
from .lm import LMClient
from .notebook import to_notebook, write_notebook
from .observer import RunObserver
from .repl import PROTECTED_NAMES
from .states import RunState
from .trajectory import ContextInfo, Run, Step, Usage, new_id

if TYPE_CHECKING:
    import nbformat

__all__ = ["RLM", "RunResult"]


@dataclass
class RunResult:
    """What a run produced: the answer (or why there is none), the trajectory and its usage."""

    run: Run
    runs: dict[str, Run] = field(default_factory=dict)
    usage_detail: dict[str, Any] = field(default_factory=dict)

    @property
    def answer(self) -> str | None:
        return self.run.answer

    @property
    def ok(self) -> bool:
        return self.run.status == RunState.FINAL

    @property
    def status(self) -> RunState:
        return self.run.status

    @property
    def stop_reason(self) -> str | None:
        return self.run.stop_reason

    @property
    def steps(self) -> list[Step]:
        return self.run.steps

    @property
    def usage(self) -> Usage:
        """Tokens and cost of the whole run tree (root, sub-calls and rlm() children)."""
        total = Usage()
        for r in self.runs.values() or [self.run]:
            total.add(r.usage)
        return total

    @property
    def subcalls(self) -> int:
        return sum(len(r.subcalls) for r in self.runs.values())

    def to_notebook(self) -> nbformat.NotebookNode:
        return to_notebook([self.run], self.runs)

    def save(self, path: str) -> str:
        write_notebook(self.to_notebook(), path)
        return path


class RLM:
    """A Recursive Language Model over any OpenAI-compatible endpoint (or the scripted model).

    ``RLM(model="gpt-5-mini", sub_model="gpt-5-nano", max_steps=20, concurrency=32)``; every
    keyword of :class:`~rlm_kernel.config.RLMConfig` is accepted. One client (limits, cache, usage)
    serves every run of this object.
    """

    def __init__(self, model: str | None = None, sub_model: str | None = None, *,
                 base_url: str | None = None, api_key: str | None = None,
                 max_steps: int | None = None, concurrency: int | None = None,
                 config: RLMConfig | None = None, observer: RunObserver | None = None,
                 models: list[str] | str | None = None, tools: Any = None,
                 **settings: Any) -> None:
        """``models``: one model per depth (root, depth 1, ...); ``tools``: custom tools, a list
        of functions or ``{name: function}`` (see :mod:`~rlm_kernel.custom_tools`)."""
        if isinstance(models, (list, tuple)):
            models = ",".join(models)
        changes = dict(model=model, sub_model=sub_model, base_url=base_url, api_key=api_key,
                       max_steps=max_steps, concurrency=concurrency, models=models, **settings)
        self.config = config.copy(**changes) if config is not None else RLMConfig(
            **{k: v for k, v in changes.items() if v is not None})
        self.observer = observer
        self.tools = tools_from(tools, reserved=PROTECTED_NAMES)
        self._client: LMClient | None = None
        # A persistent session: one namespace and the record of its runs, across run() calls.
        self._namespace: dict[str, Any] = {}
        self._runs: dict[str, Run] = {}
        self._roots: list[str] = []

    @property
    def client(self) -> LMClient:
        if self._client is None:
            self._client = open_client(self.config)
        return self._client

    @property
    def banner(self) -> str | None:
        from .scripted import SCRIPTED_BANNER

        return SCRIPTED_BANNER if self.config.scripted else None

    async def arun(self, query: str, context: Any, *, context_source: str = "",
                   controller: Controller | None = None,
                   persistent: bool | None = None) -> RunResult:
        """``persistent=True`` (or the ``persistent`` setting): this query builds on this
        object's earlier persistent runs: their queries and answers are in its first message and
        their variables in its namespace."""
        cfg = self.config if persistent is None else self.config.copy(persistent=persistent)
        run = Run(run_id=new_id("r"), query=query, model=cfg.root_model,
                  sub_model=cfg.subcall_model, context=ContextInfo.describe(context, context_source),
                  settings=cfg.settings())
        if cfg.persistent:
            run.builds_on = list(self._roots)
            runs, executor = self._runs, InProcessExecutor(self._namespace)
        else:
            runs, executor = {}, InProcessExecutor()
        engine = Engine(client=self.client, config=cfg, run=run, executor=executor,
                        context=context, observer=self.observer, controller=controller, runs=runs,
                        tools=self.tools)
        await engine.arun()
        if cfg.persistent:
            self._roots.append(run.run_id)
        tree = {r.run_id: r for r in run.tree(runs)}
        return RunResult(run, tree, self.client.ledger.snapshot())

    async def afork(self, parent: RunResult, at: int, context: Any, *, query: str | None = None,
                    label: str | None = None, context_source: str = "") -> RunResult:
        """A branch of ``parent`` at step ``at``: its steps up to ``at`` re-executed from the record
        (no model call paid; a call the record lacks is an error, not a purchase), then on live
        with this object's models and settings. ``context`` is the data the parent ran over."""
        from .forking import default_label, fork_of, fork_point, segments
        from .notebook import recorded_responses

        cfg = self.config
        inherited = fork_point(parent.run, at)
        fork = fork_of(parent.run, at)
        query = parent.run.query if query is None else query
        branch = Run(run_id=new_id("r"), query=query, model=cfg.root_model,
                     sub_model=cfg.subcall_model, context=ContextInfo.describe(context, context_source),
                     settings=cfg.settings(), fork_of=fork)
        branch.branch = label or default_label(parent.run, at, model=branch.model,
                                               sub_model=branch.sub_model, query=query, taken=set())
        runs: dict[str, Run] = {}
        client, executor = self.client, InProcessExecutor()
        client.cache.seed(recorded_responses(parent.runs or {parent.run.run_id: parent.run}))
        client.cache_only = True
        try:
            for seg in segments(inherited, fork):
                seg_cfg = cfg.copy(model=seg.model or None, sub_model=seg.sub_model or None)
                branch.model, branch.sub_model = seg_cfg.root_model, seg_cfg.subcall_model
                await Engine(client=client, config=seg_cfg, run=branch, executor=executor,
                             context=context, observer=self.observer, runs=runs,
                             recorded=seg.steps, recorded_only=True).arun()
                if branch.status != RunState.RUNNING:
                    return RunResult(branch, runs, client.ledger.snapshot())
        finally:
            client.cache_only = False
        branch.model, branch.sub_model = cfg.root_model, cfg.subcall_model
        await Engine(client=client, config=cfg, run=branch, executor=executor, context=context,
                     observer=self.observer, runs=runs).arun()
        return RunResult(branch, runs, client.ledger.snapshot())

    def fork(self, parent: RunResult, at: int, context: Any, *, query: str | None = None,
             label: str | None = None, context_source: str = "") -> RunResult:
        """:meth:`afork`, to completion (also inside a running event loop)."""
        return self._complete(self.afork(parent, at, context, query=query, label=label,
                                         context_source=context_source))

    def run(self, query: str, context: Any, *, context_source: str = "",
            persistent: bool | None = None) -> RunResult:
        """Run to completion and return the result (also inside a running event loop)."""
        return self._complete(self.arun(query, context, context_source=context_source,
                                        persistent=persistent))

    def _complete(self, coro: Any) -> RunResult:
        try:
            asyncio.get_running_loop()
            in_loop = True
        except RuntimeError:
            in_loop = False
        if not in_loop:  # outside the except block: a step's traceback must not chain onto it
            return asyncio.run(coro)
        # Called from async code (e.g. a notebook cell): run on a private loop in a thread.
        fut: concurrent.futures.Future[RunResult] = concurrent.futures.Future()

        def main() -> None:
            try:
                fut.set_result(asyncio.run(coro))
            except BaseException as exc:  # noqa: BLE001
                fut.set_exception(exc)

        threading.Thread(target=main, name="rlm-run", daemon=True).start()
        return fut.result()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> RLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
