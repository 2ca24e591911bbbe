"""``RLMKernel``: an IPython kernel whose user namespace is an RLM's REPL.

Plain cells run exactly as in ipykernel. Four kinds of cell are the kernel's own: ``%%rlm`` (a run),
``%rlm continue|step|replay|resume`` (drive a run), and a step cell (first line
``# rlm: run=<id> step=<n>``), whose re-run makes it the new truth for that step. They are handled
here, in ``do_execute``, because a run must await its model calls inside the cell's execution: that
is what lets Pause/Step/Stop messages reach the kernel mid-run (ipykernel >= 7.4).
"""

from __future__ import annotations

import re
import shlex
import threading
from typing import Any

from ipykernel.ipkernel import IPythonKernel
from IPython.display import Pretty, display

from .. import __version__, cells
from ..api import SCRIPTED_BANNER
from ..config import RLMConfig, redact
from ..errors import RLMError
from .display import show_end
from .magics import RLMMagics
from .options import OptionError, parse_rlm_cell
from .runs import RunManager, RunOutcome

__all__ = ["RLMKernel"]

_DRIVER_RE = re.compile(r"^%rlm[ \t]+(continue|step|replay|resume)\b([^\n]*)\s*$")


class RLMKernel(IPythonKernel):
    implementation = "rlm_kernel"
    implementation_version = __version__
    banner = (
        "RLM kernel: a Python REPL for Recursive Language Models. `%%rlm` runs a query over "
        "`context`; `llm`, `llm_batch`, `rlm` are here for you too. `%rlm?` for help."
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        names = set(RLMConfig.class_trait_names(config=True))
        section = {k: v for k, v in self.config.get("RLMKernel", {}).items() if k in names}
        self.rlm = RunManager(self, RLMConfig(parent=self, **section))
        self.shell.register_magics(RLMMagics(self.shell, manager=self.rlm))
        self.comm_manager.register_target(cells.TARGET, self.rlm.on_frontend_comm)
        # Warm the openai import (~1.5 s) off the main thread, so the first %%rlm starts at once.
        threading.Thread(target=_warm_imports, name="rlm-warm-imports", daemon=True).start()

    async def do_execute(  # type: ignore[override]
        self, code: str, silent: bool, store_history: bool = True,
        user_expressions: dict[str, Any] | None = None, allow_stdin: bool = False, *,
        cell_meta: dict[str, Any] | None = None, cell_id: str | None = None,
    ) -> dict[str, Any]:
        stripped = code.lstrip()
        m = _DRIVER_RE.match(stripped)
        hit = None if silent else self.rlm.step_of(code)
        if not silent and (stripped.startswith("%%rlm") or m or hit is not None):
            try:
                with self.rlm.interruptible():
                    if stripped.startswith("%%rlm"):
                        return await self._run_query(code, cell_id)
                    if m:
                        return await self._drive(m.group(1), m.group(2), code, cell_id)
                    assert hit is not None
                    return await self._rerun_step(*hit, code)
            except KeyboardInterrupt:
                return self._fail("KeyboardInterrupt", "interrupted before the run started")
            except Exception as exc:  # noqa: BLE001 - a cell must always get its reply
                self.log.exception("rlm: internal error")
                return self._fail(type(exc).__name__,
                                  f"{exc} (an internal error of rlm-kernel; the kernel log has "
                                  "the traceback, and a bug report is welcome)")
        return await super().do_execute(code, silent, store_history, user_expressions,
                                        allow_stdin, cell_meta=cell_meta, cell_id=cell_id)

    # -- the kernel's own cells ----------------------------------------------------------------
    async def _run_query(self, code: str, cell_id: str | None) -> dict[str, Any]:
        try:
            opts, query = parse_rlm_cell(code)
        except OptionError as exc:
            return self._fail("UsageError", str(exc))
        if self.rlm.active:
            return self._fail("RLMBusy", f"run {self.rlm.active} is in flight; stop it first")
        self._banner()
        try:
            outcome = await self.rlm.start(query, opts, source=code, cell_id=cell_id)
        except RLMError as exc:
            return self._fail(type(exc).__name__, str(exc))
        return self._finish(outcome)

    async def _drive(self, action: str, rest: str, code: str,
                     cell_id: str | None = None) -> dict[str, Any]:
        try:
            args = shlex.split(rest)
        except ValueError as exc:
            return self._fail("UsageError", str(exc))
        try:
            if action in ("continue", "step"):
                run_id = _opt(args, "--run")
                outcome = await self.rlm.resume(run_id, step_mode=action == "step", source=code,
                                                notebook=_opt(args, "--from"))
                return self._finish(outcome)
            if len(args) != 1:
                return self._fail("UsageError", f"usage: %rlm {action} PATH.ipynb")
            if action == "resume":
                self._banner()
            outcomes = await self.rlm.replay(args[0], live=action == "resume", source=code,
                                             cell_id=cell_id)
        except RLMError as exc:
            return self._fail(type(exc).__name__, str(exc))
        reply = self.ok_reply(outcomes[-1].execution_count if outcomes else None)
        for outcome in outcomes:
            reply = self._finish(outcome)
        return reply

    async def _rerun_step(self, run: Any, step: Any, code: str) -> dict[str, Any]:
        result, count = await self.rlm.rerun_step(run, step, code)
        if result.error:
            ename, _, evalue = result.error.partition(": ")
            return {"status": "error", "ename": ename, "evalue": evalue, "traceback": [],
                    "execution_count": count}
        return self.ok_reply(count)

    # -- replies -------------------------------------------------------------------------------
    def _banner(self) -> None:
        if self.rlm.config.scripted:
            display(Pretty(SCRIPTED_BANNER))

    def _finish(self, outcome: RunOutcome) -> dict[str, Any]:
        run = outcome.run
        st = self.rlm.status(run.run_id)["status"]  # the run tree's counters, as front-ends see them
        calls = sum(st["subcalls"].values())
        line = (f"run {run.run_id} · {st['step']} steps · {calls} sub-calls · "
                f"{st['tokens']:,} tokens · {run.elapsed_s:.2f}s")
        if run.status == "paused":
            display(Pretty(f"[paused] {run.stop_reason}"))
        else:
            show_end(run, line)
        if outcome.error is not None:
            return self._fail(*outcome.error, count=outcome.execution_count)
        return self.ok_reply(outcome.execution_count)

    def ok_reply(self, count: int | None) -> dict[str, Any]:
        return {"status": "ok", "execution_count": count if count is not None else
                self.shell.execution_count - 1, "payload": [], "user_expressions": {}}

    def _fail(self, ename: str, evalue: str, count: int | None = None) -> dict[str, Any]:
        evalue = redact(evalue)
        tb = [f"\x1b[0;31m{ename}\x1b[0m: {evalue}"]
        self.send_response(self.iopub_socket, "error",
                           {"ename": ename, "evalue": evalue, "traceback": tb})
        if count is None:
            count = self.shell.execution_count
            self.shell.execution_count += 1
        return {"status": "error", "ename": ename, "evalue": evalue, "traceback": tb,
                "execution_count": count}


def _warm_imports() -> None:
    import contextlib

    with contextlib.suppress(Exception):
        import openai  # noqa: F401


def _opt(args: list[str], name: str) -> str | None:
    if name not in args:
        return None
    i = args.index(name)
    if i + 1 >= len(args):
        raise RLMError(f"{name} needs a value")
    return args[i + 1]
