"""Headless runs: nbclient driving a real ``rlm`` kernel, mirroring ``rlm.cells`` into a notebook file.

:class:`HeadlessRunner` *is* an nbclient :class:`~nbclient.NotebookClient` (cells are executed,
their outputs recorded, timeouts and a dead kernel detected exactly as nbclient does) that also
plays the part of a mirroring front-end: it opens the ``rlm.cells`` comm and applies every message
to a :class:`~rlm_kernel.mirror.NotebookMirror`, so the file it writes holds the run's cells. It
flushes the partial notebook after each finished step (atomically, not re-validated each time),
so a crash or Ctrl-C never loses a finished step.

Nothing is lost to a slow reader: IOPub may drop messages the runner did not read in time, so
after each cell it checks the protocol's sequence numbers, and when messages are missing (or a run
never said it finished) it asks the kernel for its authoritative trajectory (``%rlm sync``), which
comes back in the execute reply on the shell channel, a channel that does not drop messages. It
never waits on a message that may have been dropped: a cell ends with its execute reply (plus
nbclient's bounded wait for the cell's last output).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbclient.util import ensure_async
from traitlets import Float, Unicode

from . import cells
from .config import redact
from .kernelspec import kernel_name, notebook_kernelspec
from .launch import CellAwareClient, kernel_log, kernel_manager, start_kernel
from .mirror import NotebookMirror
from .notebook import write_notebook

__all__ = ["HeadlessRunner", "HeadlessKernel", "HeadlessResult", "DeadKernelError", "error_text",
           "SYNC_CODE"]

#: The cell a client executes to receive the kernel's whole trajectory in the execute reply.
SYNC_CODE = "%rlm sync"
#: A partial write waits this many times as long as the last one took.
WRITE_SHARE = 20
#: After a kernel interrupt, how long to keep draining for the run's last cells before giving up.
INTERRUPT_GRACE_S = 15.0


@dataclass
class HeadlessResult:
    """What a cell's execution gave: the execute reply's content, and whether it was cut short."""

    reply: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False


class _CommEnd:
    """nbclient hands comm messages on our comm id to ``handle_msg``."""

    def __init__(self, runner: HeadlessRunner) -> None:
        self.runner = runner

    def handle_msg(self, msg: dict[str, Any]) -> None:
        self.runner.receive(msg.get("content", {}).get("data") or {})


class HeadlessRunner(NotebookClient):
    """An nbclient client of a fresh ``rlm`` kernel that keeps the run's cells in a notebook file."""

    output_path = Unicode(None, allow_none=True,
                     help="Notebook file to write (partial after each step, whole at the end).",
                     ).tag(config=True)
    flush_interval = Float(2.0, help="Least seconds between two partial writes of the notebook, "
                           "except after a finished step (always written).").tag(config=True)

    def __init__(self, *, env: dict[str, str] | None = None, cwd: str | None = None,
                 output: str | None = None, initial_cells: list[dict[str, Any]] | None = None,
                 sandboxed: bool = False, km: AsyncKernelManager | None = None,
                 **kwargs: Any) -> None:
        """``km``: a manager from :func:`~rlm_kernel.launch.kernel_manager` whose kernel is
        already starting (a command starts it before importing this module); else one is made
        and :meth:`astart` starts its kernel."""
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = notebook_kernelspec(sandboxed)
        name = kernel_name(sandboxed)
        km = km or kernel_manager(sandboxed)
        self.kernel_log = kernel_log(km)
        kwargs.setdefault("timeout", None)
        kwargs.setdefault("iopub_timeout", 2)
        super().__init__(nb, km=km, kernel_name=name, allow_errors=True, **kwargs)
        self.output_path = output
        self.mirror = NotebookMirror(initial_cells, sandboxed=sandboxed)
        self._env = {**os.environ, **(env or {})}
        self._cwd = cwd or os.getcwd()
        self.comm_id = uuid.uuid4().hex
        self.comm_objects[self.comm_id] = _CommEnd(self)
        self.on_cell_executed = self._keep_reply
        self._reply: dict[str, Any] = {}
        self._dirty = False
        self._last_flush = 0.0
        self._step_done = False
        self.count = 0
        self.started = False
        self.write_error: str | None = None  # why the last write of the file failed, if it did
        self._write_s = 0.0  # how long the last write took

    # -- lifecycle ------------------------------------------------------------------------------
    async def astart(self) -> None:
        """Start the kernel and say hello as a mirroring front-end."""
        # The kernel's own stdout/stderr (its log, and what ipykernel echoes of output written to
        # its descriptors) go to a log file, never to this process's stdout: that is the answer's.
        assert isinstance(self.km, AsyncKernelManager)
        if not self.km.has_kernel:
            await start_kernel(self.km, env=self._env, cwd=self._cwd)
        try:
            await self.async_start_new_kernel_client()
        except BaseException:
            with contextlib.suppress(Exception):
                await self._ashutdown()
            raise
        assert self.kc is not None
        msg = self.kc.session.msg("comm_open", {"comm_id": self.comm_id,
                                                "target_name": cells.TARGET,
                                                "data": cells.hello_msg("headless", True)})
        self.kc.shell_channel.send(msg)
        self.started = True

    async def aclose(self) -> None:
        self.flush(final=True)
        await self._ashutdown()

    async def _ashutdown(self) -> None:
        km, kc = self.km, self.kc
        try:
            if kc is not None:
                kc.stop_channels()
        finally:
            if km is not None:
                pgid = getattr(getattr(km, "provisioner", None), "pgid", None)
                with contextlib.suppress(Exception):
                    if await ensure_async(km.is_alive()):
                        await ensure_async(km.shutdown_kernel(now=True))
                # Programs the model's code started (its process group) go with the kernel,
                # also when the kernel itself already died.
                if pgid and hasattr(os, "killpg"):
                    with contextlib.suppress(OSError):
                        os.killpg(pgid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await ensure_async(km.cleanup_resources())
            self.kc = None

    # -- running cells --------------------------------------------------------------------------
    async def aexecute(self, code: str, *, record: bool = True,
                       after: str | None = None) -> HeadlessResult:
        """Run ``code`` as the next cell of the mirrored notebook, or as the cell after the one
        whose id is ``after`` (``record=False``: a control cell kept out of the file, e.g.
        ``%rlm resume``). Ctrl-C interrupts the kernel (which stops the run and cancels its
        calls) and keeps draining so the run's last cells reach the file."""
        self.count += 1
        cell = nbformat.v4.new_code_cell(code)
        cell["id"] = f"cell-{self.count}-{uuid.uuid4().hex[:6]}"
        if record:
            self.mirror.append(cell, after)
        self._reply = {}
        result = HeadlessResult()
        loop = asyncio.get_running_loop()
        # nbclient writes the executed cell back into ``self.nb``: give it this one cell there
        # (the mirror holds the whole notebook).
        self.nb.cells = [cell]
        assert isinstance(self.kc, CellAwareClient)
        self.kc.cell_id = cell["id"]
        task = asyncio.ensure_future(self.async_execute_cell(cell, 0))

        def on_sigint() -> None:
            if result.interrupted:  # a second Ctrl-C: stop waiting
                task.cancel()
                return
            result.interrupted = True
            assert self.km is not None
            asyncio.ensure_future(ensure_async(self.km.interrupt_kernel()))
            loop.call_later(INTERRUPT_GRACE_S, task.cancel)

        with _sigint_handler(loop, on_sigint):
            try:
                await task
            except asyncio.CancelledError:
                pass
            except DeadKernelError:
                await self._drain_after_death()
                self.flush(final=True)
                raise
        await self._resync_if_needed()
        self.flush(force=True)
        result.reply = self._reply or {"status": "error", "ename": "Interrupted",
                                       "evalue": "interrupted"}
        return result

    def _keep_reply(self, cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        self._reply = execute_reply.get("content", {})

    async def _resync_if_needed(self) -> None:
        """Messages went missing, or a run started and never said how it ended: fetch the
        kernel's whole trajectory over the shell channel."""
        m = self.mirror
        unfinished = any(r not in m.finished for r in m.status)
        if not m.gaps and not unfinished:
            return
        assert self.kc is not None
        msg_id = self.kc.execute(SYNC_CODE, silent=True, store_history=False)
        with contextlib.suppress(Exception):
            reply = await self.async_wait_for_reply(msg_id)
            data = ((reply or {}).get("content") or {}).get("rlm_sync")
            if data:
                m.gaps = 0
                m.apply(data)
                self._dirty = True

    async def _drain_after_death(self) -> None:
        """The kernel died: what it sent before dying is still queued; its last cells count."""
        if self.kc is None:
            return
        while True:
            try:
                msg = await self.kc.iopub_channel.get_msg(timeout=0.3)
            except Exception:  # noqa: BLE001 - queue empty (or channel gone)
                return
            if msg["msg_type"] == "comm_msg" and msg["content"].get("comm_id") == self.comm_id:
                self.receive(msg["content"].get("data") or {})

    # -- rlm.cells ------------------------------------------------------------------------------
    def receive(self, data: dict[str, Any]) -> None:
        try:
            kind = self.mirror.apply(data)
        except ValueError as exc:
            self.log.warning("rlm.cells: %s", exc)
            return
        self._dirty = True
        if kind in ("finish", "sync") or _finishes_a_step(data):
            self._step_done = True
        self.flush()

    def last_finish(self) -> dict[str, Any] | None:
        return list(self.mirror.finished.values())[-1] if self.mirror.finished else None

    # -- the file -------------------------------------------------------------------------------
    def flush(self, *, force: bool = False, final: bool = False) -> None:
        """Write the notebook: always when ``final`` (validated), after a finished step, else at
        most every ``flush_interval`` seconds. Atomic (temp file + rename)."""
        if not self.output_path or not (self._dirty or final):
            return
        now = time.monotonic()
        # A write of a large notebook costs time: spend at most a twentieth of the run on it.
        interval = max(self.flush_interval, WRITE_SHARE * self._write_s)
        if not (force or final) and now - self._last_flush < (0.0 if self._step_done else interval):
            return
        try:
            if final:
                write_notebook(self.mirror.document(), self.output_path)
            else:
                _write_json(self.mirror, self.output_path)
        except OSError as exc:  # a full disk, a vanished directory: the run goes on
            self.write_error = f"{type(exc).__name__}: {exc.strerror or exc}"
            return
        self.write_error = None
        self._dirty = self._step_done = False
        self._last_flush = time.monotonic()
        self._write_s = self._last_flush - now


def _finishes_a_step(data: dict[str, Any]) -> bool:
    """An update that gives a step cell its outputs, alone or inside a batch."""
    msgs = data.get("msgs", []) if data.get("type") == "batch" else [data]
    return any(m.get("type") == "update" and "execution_count" in m.get("patch", {})
               for m in msgs)


def _write_json(mirror: NotebookMirror, path: str) -> None:
    """A partial notebook: valid nbformat JSON, but neither validated (done once, at the end)
    nor indented (json's C encoder runs only without ``indent``): a 5,000-cell notebook flushed
    the nbformat way cost most of the runner's CPU. The final write is nbformat's own."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    nb = mirror.document()
    fd, tmp = tempfile.mkstemp(prefix=".rlm-", suffix=".ipynb", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(nb, ensure_ascii=False))  # dumps: the C encoder; dump is not
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _sigint_handler(loop: asyncio.AbstractEventLoop, handler: Any) -> Any:
    """Route Ctrl-C to ``handler`` while a cell runs (main thread only; elsewhere a no-op)."""
    try:
        loop.add_signal_handler(signal.SIGINT, handler)
    except (RuntimeError, ValueError, NotImplementedError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def error_text(reply: dict[str, Any]) -> str:
    return redact(f"{reply.get('ename', 'Error')}: {reply.get('evalue', '')}")


class HeadlessKernel:
    """:class:`HeadlessRunner` for synchronous code (scripts, benchmarks, the eval runner, tests):
    one kernel, started at construction, cells executed one at a time on a private event loop."""

    def __init__(self, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self.runner = HeadlessRunner(**kwargs)
        try:
            self._loop.run_until_complete(self.runner.astart())
        except BaseException:
            self._loop.close()
            raise

    @property
    def mirror(self) -> NotebookMirror:
        return self.runner.mirror

    @property
    def km(self) -> Any:
        return self.runner.km

    def execute(self, code: str, *, record: bool = True) -> dict[str, Any]:
        """Run one cell; its execute reply's content."""
        return self._loop.run_until_complete(self.runner.aexecute(code, record=record)).reply

    def last_finish(self) -> dict[str, Any] | None:
        return self.runner.last_finish()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._loop.run_until_complete(self.runner.aclose())
        finally:
            self._loop.close()

    def __enter__(self) -> HeadlessKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
