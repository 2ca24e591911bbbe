"""``RLMKernel``: an IPython kernel whose user namespace is an RLM's REPL.

Plain cells run exactly as in ipykernel. Four kinds of cell are the kernel's own: ``%%rlm`` (a run),
``%rlm continue|step|replay|resume|fork`` (drive a run, or start a branch of one), and a step cell (first line
``# rlm: run=<id> step=<n>``), whose re-run makes it the new truth for that step. They are handled
here, in ``do_execute``, because a run must await its model calls inside the cell's execution: that
is what lets Pause/Step/Stop messages reach the kernel mid-run (ipykernel >= 7.4).
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shlex
import threading
from typing import Any

from ipykernel.ipkernel import IPythonKernel
from IPython.display import Pretty, display

from .. import __version__, cells
from ..config import RLMConfig, env_name, redact, setting_traits
from ..errors import ConfigError, RLMError
from ..kernelspec import language_info
from ..notebook import MARKER_RE, llm_cell_source
from ..states import RunState, StepState
from .channel import FrontendChannel
from .clients import ClientPool
from .display import end_bundle, show_end
from .driver import RunDriver, RunOutcome
from .magics import RLMMagics
from .options import OptionError, parse_fork_cell, parse_rlm_cell
from .records import Records
from .registry import RunRegistry

__all__ = ["RLMKernel"]

_LLM_CALL_RE = re.compile(r"^%%llm\b[^\n]*?--call[ =]([\w-]+)")
_DRIVER_RE = re.compile(r"^%rlm[ \t]+(continue|step|replay|resume)\b([^\n]*)\s*$")
_FORK_RE = re.compile(r"^%%?rlm[ \t]+fork\b")


class RLMKernel(IPythonKernel):
    """ipykernel's Python kernel that routes ``%%rlm``/``%%llm`` cells and recorded cells.

    Over 250 lines because it is where Jupyter's execute requests meet the trajectory: which
    cell is a record to show (Run All), a stale or superseded step, a query to run or re-run, and
    the replies and banners for each. The work itself is delegated: runs to ``RunDriver``, records
    to ``Records``, front-ends to ``FrontendChannel``, clients to ``ClientPool``.
    """

    implementation = "rlm_kernel"
    implementation_version = __version__
    language_info = language_info()  # what the notebooks we write record (kernelspec.py)
    banner = (
        "RLM kernel: a Python REPL for Recursive Language Models. `%%rlm` runs a query over "
        "`context`; `llm`, `llm_batch`, `rlm` are here for you too. `%rlm?` for help."
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.registry = RunRegistry()
        self.records = Records(self.registry)
        self.pool = ClientPool()
        self.channel = FrontendChannel(self, on_hello=self.registry.sync_runs,
                                       on_control=self._on_control)
        self.driver = RunDriver(self._shell, self._settings(), registry=self.registry,
                                pool=self.pool, channel=self.channel, log=self.log)
        self._shell.register_magics(RLMMagics(self._shell, driver=self.driver))
        self.comm_manager.register_target(cells.TARGET, self.channel.on_comm_open)
        # The settings hold the key now; model code (and the programs it starts) read
        # os.environ first, so it leaves the environment.
        os.environ.pop(env_name("api_key", setting_traits()["api_key"]), None)
        # Warm the openai import (~1.5 s) off the main thread, so the first %%rlm starts at once.
        threading.Thread(target=_warm_imports, name="rlm-warm-imports", daemon=True).start()

    def _load_config(self, cfg: Any, section_names: Any = None, traits: Any = None) -> None:
        """``c.RLMKernel.<setting>`` is an RLM setting (read by :meth:`_settings`), not a trait of
        this class: kept from traitlets, which would log it as "not recognized"."""
        names = set(setting_traits())
        own = cfg.get("RLMKernel") if "RLMKernel" in cfg else None
        if own is not None and names & set(own):
            cfg = copy.deepcopy(cfg)
            for name in names & set(own):
                del cfg["RLMKernel"][name]
        super()._load_config(cfg, section_names, traits)

    async def do_execute(
        self, code: str, silent: bool, store_history: bool = True,
        user_expressions: dict[str, Any] | None = None, allow_stdin: bool = False, *,
        cell_meta: dict[str, Any] | None = None, cell_id: str | None = None,
    ) -> dict[str, Any]:
        stripped = code.lstrip()
        if stripped.rstrip() == "%rlm sync":
            # A client that lost messages (IOPub drops them under load) asks for the whole
            # trajectory; it comes back in this reply, on the shell channel, which drops nothing.
            return {**self.ok_reply(None), "rlm_sync": self.channel.sync_message()}
        if not silent:
            shown = self._recorded_cell(stripped, cell_id)
            if shown is not None:
                return shown
        m = _DRIVER_RE.match(stripped)
        fork = _FORK_RE.match(stripped)
        hit = None if silent else self.registry.step_of(code)
        if not silent and (stripped.startswith("%%rlm") or m or fork or hit is not None):
            try:
                with self.driver.interrupts.routed(self.driver.stop_active):
                    if fork:
                        return await self._fork(code, cell_id)
                    if stripped.startswith("%%rlm"):
                        return await self._run_query(code, cell_id)
                    if m:
                        return await self._drive(m.group(1), m.group(2), code, cell_id)
                    assert hit is not None
                    return await self._rerun_step(*hit, code, cell_id)
            except KeyboardInterrupt:
                return self._fail("KeyboardInterrupt", "interrupted before the run started")
            except Exception as exc:  # noqa: BLE001 - a cell must always get its reply
                self.log.exception("rlm: internal error")
                return self._fail(type(exc).__name__,
                                  f"{exc} (an internal error of rlm-kernel; the kernel log has "
                                  "the traceback, and a bug report is welcome)")
        return await super().do_execute(code, silent, store_history, user_expressions,
                                        allow_stdin, cell_meta=cell_meta, cell_id=cell_id)

    @property
    def _shell(self) -> Any:
        """ipykernel declares ``shell`` optional; an IPython kernel always has one."""
        assert self.shell is not None
        return self.shell

    # -- the kernel's own cells ----------------------------------------------------------------
    async def _run_query(self, code: str, cell_id: str | None) -> dict[str, Any]:
        try:
            opts, query = parse_rlm_cell(code)
        except OptionError as exc:
            return self._fail("UsageError", str(exc))
        supersedes, shown = self._recorded_query(opts, query, code, cell_id)
        if shown is not None:
            return shown
        if self.registry.active:
            return self._fail("RLMBusy", f"run {self.registry.active} is in flight; stop it first")
        self._banner()
        try:
            outcome = await self.driver.start(query, opts, source=code, cell_id=cell_id,
                                              supersedes=supersedes)
        except RLMError as exc:
            return self._fail(type(exc).__name__, str(exc))
        return self._finish(outcome)

    async def _fork(self, code: str, cell_id: str | None) -> dict[str, Any]:
        try:
            opts, query = parse_fork_cell(code)
        except OptionError as exc:
            return self._fail("UsageError", str(exc))
        _, shown = self._recorded_query(opts, query or "", code, cell_id)
        if shown is not None:
            return shown
        if self.registry.active:
            return self._fail("RLMBusy", f"run {self.registry.active} is in flight; stop it first")
        self._banner()
        try:
            outcome = await self.driver.fork(opts, query, cell_id=cell_id)
        except RLMError as exc:
            return self._fail(type(exc).__name__, str(exc))
        return self._finish(outcome)

    async def _drive(self, action: str, rest: str, code: str,
                     cell_id: str | None = None) -> dict[str, Any]:
        try:
            args = shlex.split(rest)
        except ValueError as exc:
            return self._fail("UsageError", str(exc))
        trust = "--trust" in args
        args = [a for a in args if a != "--trust"]
        try:
            if action in ("continue", "step"):
                run_id = _opt(args, "--run")
                outcome = await self.driver.resume(run_id, step_mode=action == "step",
                                                   source=code, notebook=_opt(args, "--from"),
                                                   trust=trust)
                return self._finish(outcome)
            if len(args) != 1:
                return self._fail("UsageError", f"usage: %rlm {action} [--trust] PATH.ipynb")
            if action == "resume":
                self._banner()
            outcomes = await self.driver.replay(args[0], live=action == "resume", source=code,
                                                cell_id=cell_id, trust=trust)
        except RLMError as exc:
            return self._fail(type(exc).__name__, str(exc))
        reply = self.ok_reply(outcomes[-1].execution_count if outcomes else None)
        for outcome in outcomes:
            reply = self._finish(outcome)
        return reply

    async def _rerun_step(self, run: Any, step: Any, code: str,
                          cell_id: str | None) -> dict[str, Any]:
        result, count = await self.driver.rerun_step(run, step, code, cell_id)
        if result.error:
            ename, _, evalue = result.error.partition(": ")
            return {"status": "error", "ename": ename, "evalue": evalue, "traceback": [],
                    "execution_count": count}
        return self.ok_reply(count)

    # -- recorded cells: re-executed, they show their record -------------------------------------
    def _recorded_cell(self, code: str, cell_id: str | None) -> dict[str, Any] | None:
        """A step or ``%%llm --call`` cell of a recorded run, unchanged: its record, re-sent as its
        outputs; nothing runs, no model is called (Run All, Restart & Run All, nbconvert
        --execute). None for any other cell, and for an edited step of a run this kernel holds
        (that is a human's re-run: the new truth for that step)."""
        m = MARKER_RE.match(code)
        if m is not None:
            rid, n = m.group("run"), int(m.group("step"))
            run, book = self.records.run(rid)
            step = run.step(n) if run is not None else None
            if run is None or step is None:
                return self._fail("RecordNotFound", (
                    f"this cell is step {n} of run {rid}, which neither this kernel nor a notebook "
                    "it can find records; nothing ran. `%rlm continue --from NOTEBOOK.ipynb` "
                    "loads the run; or remove the cell's first line to run it as ordinary code"))
            body = MARKER_RE.sub("", code, count=1).lstrip("\n")
            unchanged = body.strip() == (step.code or "").strip()
            if m.group("flag") and not unchanged:
                return self._fail("StaleStep", (
                    f"step {n} of run {rid} is {m.group('flag')}: it is history, kept as it ran, "
                    "and an edit to it cannot act; nothing ran. To try this code from that point, "
                    f"`%rlm fork --at {n - 1} --run {rid}` starts a branch; or remove the cell's "
                    "first line to run it as ordinary code"))
            if m.group("flag") or (unchanged and step.status != StepState.PROPOSED):
                return self._show(self.records.step_outputs(run, step, book, cell_id), code,
                                  run_id=rid, cell_id=cell_id)
            if book is not None:
                return self._fail("RunNotLoaded", (
                    f"step {n} of run {rid} was edited, but this kernel does not hold the run (a "
                    f"restarted kernel?); nothing ran. `%rlm continue --from "
                    f"{os.path.basename(book.path)} --run {rid}` rebuilds it; then re-run this "
                    "cell"))
            return None
        c = _LLM_CALL_RE.match(code)
        if c is not None and "--fresh" not in code.partition("\n")[0]:
            call_id = c.group(1)
            rid = call_id.rsplit("-s", 1)[0]
            run, book = self.records.run(rid)
            call = run.subcalls.get(call_id) if run is not None else None
            if call is None:
                return None  # the magic says what it can
            body = code.partition("\n")[2]
            recorded = llm_cell_source(call).partition("\n")[2]
            if body.strip() == recorded.strip():
                return self._show(self.records.call_outputs(call, book), code, run_id=rid,
                                  cell_id=cell_id)
        return None

    def _recorded_query(self, opts: dict[str, Any], query: str, code: str, cell_id: str | None,
                        ) -> tuple[tuple[Any, dict[str, Any]] | None, dict[str, Any] | None]:
        """A query (or fork) cell that recorded a run: unchanged and without ``--fresh``, it shows
        its record (the second value, the reply). Otherwise the first value is the run a new
        run will replace (with the runs it came with), or None for a cell that recorded none."""
        rid = opts.get("recorded")
        if not rid:
            return None, None
        run, book = self.records.run(rid)
        if run is None:
            if opts.get("fresh"):
                return None, None
            return None, self._fail("RecordNotFound", (
                f"this query cell recorded run {rid}, which neither this kernel nor a notebook it "
                "can find holds; nothing ran. Add --fresh to its first line to ask the model "
                "again"))
        runs = book.runs if book is not None else self.registry.runs
        place = self.registry.places.get(rid)
        recorded_head = (place.source if place is not None else run.query).lstrip().split("\n")[0]
        same = run.query.strip() == query.strip() and (
            place is None or recorded_head == code.lstrip().split("\n")[0])
        if same and not opts.get("fresh"):
            outputs = self.records.query_outputs(run, book, cell_id)
            if outputs is None:  # this kernel ran it; the query cell showed its summary
                outputs = [{"output_type": "display_data", "metadata": {},
                            "data": end_bundle(run, self._summary_line(run))}]
            return None, self._show(outputs, code, run_id=rid, cell_id=cell_id)
        return (run, runs), None

    def _show(self, outputs: list[dict[str, Any]], code: str, *, run_id: str,
              cell_id: str | None) -> dict[str, Any]:
        """Send recorded outputs as this execution's, exactly as recorded; the reply is ok (a
        recorded error is shown, not raised: Run All goes on).

        One recorded output IOPub cannot carry to JupyterLab as it is: a sub-call's response, an
        ``execute_result`` without an execution count (its cell was never executed). JupyterLab
        (and Notebook 7) reject that message outright, and the cell would lose its record. For
        them it goes on IOPub as ``display_data`` (nothing lost, even without the extension), and
        the cell's recorded outputs follow over ``rlm.cells``, which the extension applies as
        they are: the cell ends byte-identical. Other clients (nbclient) get it as recorded."""
        count = self._shell.execution_count
        with contextlib.suppress(Exception):
            self._shell.history_manager.store_inputs(count, code, code)
        self._shell.execution_count += 1
        strict = self._frontend_needs_counts()
        relay = False
        for out in outputs:
            kind = out.get("output_type")
            if kind == "stream":
                text = out.get("text", "")
                content = {"name": out.get("name", "stdout"),
                           "text": "".join(text) if isinstance(text, list) else text}
            elif kind == "error":
                content = {k: out.get(k) for k in ("ename", "evalue", "traceback")}
            elif kind in ("display_data", "execute_result"):
                content = {"data": out.get("data", {}), "metadata": out.get("metadata", {})}
                if kind == "execute_result" and out.get("execution_count") is None and strict:
                    kind, relay = "display_data", True
                if kind == "execute_result":
                    content["execution_count"] = out.get("execution_count")
                else:
                    content["transient"] = {}
            else:
                continue
            self.send_response(self.iopub_socket, kind, content)
        if relay and cell_id:
            self.channel.send(cells.update_msg(run_id, cell_id, outputs=outputs))
        return self.ok_reply(count)

    def _frontend_needs_counts(self) -> bool:
        """Is the front-end one whose message validation rejects an ``execute_result`` without
        a count? JupyterLab and Notebook 7 do: they are the clients of a kernel a Jupyter server
        started (it sets ``JPY_SESSION_NAME``), and the extension says so in its hello."""
        return bool(os.environ.get("JPY_SESSION_NAME")) or "jupyterlab" in self.channel.clients

    # -- replies -------------------------------------------------------------------------------
    def _settings(self) -> RLMConfig:
        """The session's settings: defaults, env, then ``c.RLMKernel.*`` / ``c.RLMConfig.*``.

        A bad value in the environment or a config file must not keep the kernel from starting
        (the front-end would only see a dead kernel): it is logged and said again, with what to
        do, on the first RLM cell; the session runs on the defaults meanwhile.
        """
        names = set(setting_traits())
        section = {k: v for k, v in self.config.get("RLMKernel", {}).items() if k in names}
        self._config_error: str | None = None
        try:
            return RLMConfig(parent=self, **section)
        except ConfigError as exc:
            self._config_error = str(exc)
            self.log.error("rlm: %s", exc)
            saved = {k: os.environ.pop(k) for k in list(os.environ)
                     if k.startswith("RLM_") or k in ("OPENAI_BASE_URL",)}
            try:
                return RLMConfig(parent=self)
            finally:
                os.environ.update(saved)

    def _on_control(self, action: str, run: str | None) -> None:
        self.driver.control(action, run)

    def _banner(self) -> None:
        if self.driver.config.scripted:
            from ..scripted.wire import SCRIPTED_BANNER

            display(Pretty(SCRIPTED_BANNER))
        if self._config_error:
            display(Pretty(f"rlm-kernel: a setting was ignored: {self._config_error}; "
                           "fix it (environment or Jupyter config) and restart the kernel"))

    def _summary_line(self, run: Any) -> str:
        st = cells.run_status(run, self.registry.runs)  # the run tree's counters
        calls = sum(st["subcalls"].values())
        return (f"run {run.run_id} · {st['step']} steps · {calls} sub-calls · "
                f"{st['tokens']:,} tokens · {run.elapsed_s:.2f}s")

    def _finish(self, outcome: RunOutcome) -> dict[str, Any]:
        run = outcome.run
        if run.status == RunState.PAUSED:
            # A mirroring front-end shows a paused run in its run bar and the query cell's
            # header; a "[paused]" line in the cell would outlive the pause in the saved file.
            if not self.channel.mirrors:
                display(Pretty(f"[paused] {run.stop_reason}"))
        else:
            show_end(run, self._summary_line(run))
        if outcome.error is not None:
            return self._fail(*outcome.error, count=outcome.execution_count)
        return self.ok_reply(outcome.execution_count)

    def ok_reply(self, count: int | None) -> dict[str, Any]:
        return {"status": "ok", "execution_count": count if count is not None else
                self._shell.execution_count - 1, "payload": [], "user_expressions": {}}

    def _fail(self, ename: str, evalue: str, count: int | None = None) -> dict[str, Any]:
        evalue = redact(evalue)
        tb = [f"\x1b[0;31m{ename}\x1b[0m: {evalue}"]
        self.send_response(self.iopub_socket, "error",
                           {"ename": ename, "evalue": evalue, "traceback": tb})
        if count is None:
            count = self._shell.execution_count
            self._shell.execution_count += 1
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
