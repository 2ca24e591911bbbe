"""Headless runs: a real ``rlm`` kernel through jupyter_client, mirrored into a notebook file.

The runner is a client of the ``rlm.cells`` protocol like the JupyterLab extension: it opens the
comm, applies every message to a :class:`~rlm_kernel.mirror.NotebookMirror` and flushes the partial
notebook after each step, so a crash or Ctrl-C never loses a finished step.
"""

from __future__ import annotations

import os
import queue
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import KernelManager

from . import cells
from .config import redact
from .install import DISPLAY_NAME, KERNEL_NAME
from .mirror import NotebookMirror
from .notebook import write_notebook

__all__ = ["HeadlessKernel", "HeadlessResult", "KernelDied"]


class KernelDied(RuntimeError):
    """The kernel process ended while a cell was running."""


class _ThisPythonSpecs(KernelSpecManager):
    """Always the ``rlm`` kernel of this interpreter: no kernelspec install needed."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(argv=[sys.executable, "-m", "rlm_kernel", "-f", "{connection_file}"],
                          display_name=DISPLAY_NAME, language="python",
                          interrupt_mode="signal", name=KERNEL_NAME)


@dataclass
class HeadlessResult:
    status: str  # final | stopped | error | paused | died | interrupted
    answer: str | None = None
    reason: str | None = None
    output: str | None = None
    errors: list[str] = field(default_factory=list)


class HeadlessKernel:
    """One kernel, one notebook mirror; ``execute`` runs a cell and keeps its outputs."""

    def __init__(self, *, env: dict[str, str] | None = None, cwd: str | None = None,
                 output: str | None = None, startup_timeout: float = 90,
                 initial_cells: list[dict[str, Any]] | None = None) -> None:
        self.output = output
        self.mirror = NotebookMirror(initial_cells)
        # IPC sockets: local only, and no unencrypted-TCP warning on every run.
        self.km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=_ThisPythonSpecs(),
                                transport="ipc")
        # IPC socket paths are relative to each process's cwd unless absolute.
        self.km.ip = os.path.join(tempfile.gettempdir(), f"rlm-kernel-{uuid.uuid4().hex[:12]}")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.km.start_kernel(env=full_env, cwd=cwd or os.getcwd())
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=startup_timeout)
        except BaseException:
            self.kc.stop_channels()
            self.km.shutdown_kernel(now=True)  # never leave a half-started kernel behind
            raise
        self.comm_id = uuid.uuid4().hex
        self._send("comm_open", {"comm_id": self.comm_id, "target_name": cells.TARGET,
                                 "data": cells.hello_msg("headless", True)})
        self._dirty = False
        self._last_flush = 0.0
        self.count = 0

    def _send(self, msg_type: str, content: dict[str, Any], metadata: dict[str, Any] | None = None
              ) -> str:
        msg = self.kc.session.msg(msg_type, content)
        if metadata:
            msg["metadata"].update(metadata)
        self.kc.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def control(self, action: str, run: str | None = None) -> None:
        self._send("comm_msg", {"comm_id": self.comm_id, "data": cells.control_msg(action, run)})

    # -- running cells -------------------------------------------------------------------------
    def execute(self, code: str, *, timeout: float | None = None, on_interrupt: Any = None,
                record: bool = True) -> dict[str, Any]:
        """Run ``code`` as a new cell of the mirrored notebook (``record=False``: a control cell
        kept out of the file, e.g. ``%rlm resume``); return the execute_reply content."""
        self.count += 1
        cell = nbformat.v4.new_code_cell(code)
        cell["id"] = f"cell-{self.count}-{uuid.uuid4().hex[:6]}"
        if record:
            self.mirror.cells.append(cell)
        msg_id = self._send("execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True,
        }, metadata={"cellId": cell["id"]})
        deadline = None if timeout is None else time.monotonic() + timeout
        reply: dict[str, Any] | None = None
        idle = False
        interrupted_at: float | None = None
        while reply is None or not idle:
            try:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"the cell did not finish within {timeout:g} s")
                if not self.km.is_alive():
                    # Drain what the kernel sent before it died: its last cells still count.
                    while self._pump(msg_id, cell, wait=0.5) is not None:
                        pass
                    self.flush(force=True)
                    raise KernelDied(
                        "the kernel died while running the cell (model code may have called "
                        "os._exit or run out of memory); the partial trajectory is kept"
                    )
                idle = self._pump(msg_id, cell) or idle
                if reply is None:
                    reply = self._reply_for(msg_id)
                if interrupted_at is not None and time.monotonic() - interrupted_at > 15:
                    break
            except KeyboardInterrupt:
                # Ctrl-C: interrupt the kernel (it cancels every in-flight call) and keep
                # draining so the stopped run's last cells still reach the file.
                interrupted_at = time.monotonic()
                self.km.interrupt_kernel()
                if on_interrupt is not None:
                    on_interrupt()
        self.flush(force=True)
        return reply or {"status": "error", "ename": "Interrupted", "evalue": "interrupted"}

    def _reply_for(self, msg_id: str) -> dict[str, Any] | None:
        try:
            msg = self.kc.get_shell_msg(timeout=0)
        except queue.Empty:
            return None
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_reply":
            return msg["content"]
        return None

    def _pump(self, msg_id: str, cell: dict[str, Any], wait: float = 0.1) -> bool | None:
        """Handle one IOPub message; True once our cell's kernel went idle, None if none came."""
        try:
            msg = self.kc.get_iopub_msg(timeout=wait)
        except queue.Empty:
            self.flush()
            return None
        mtype, content = msg["msg_type"], msg["content"]
        if mtype in ("comm_msg", "comm_open") and content.get("comm_id") == self.comm_id:
            data = content.get("data") or {}
            kind = self.mirror.apply(data)
            self._dirty = True
            patch = data.get("patch", {})
            if kind == "update" and "execution_count" in patch or kind == "finish":
                self.flush(force=True)  # a step just finished: it must survive a crash
            return False
        if msg["parent_header"].get("msg_id") != msg_id:
            return False
        if mtype == "status":
            return content.get("execution_state") == "idle"
        elif mtype in ("stream", "display_data", "execute_result", "error"):
            out = nbformat.v4.output_from_msg(msg)
            if mtype == "stream" and cell["outputs"] and cell["outputs"][-1].get("name") == out.name:
                cell["outputs"][-1]["text"] += out.text
            else:
                cell["outputs"].append(out)
            self._dirty = True
        elif mtype == "execute_input":
            cell["execution_count"] = content.get("execution_count")
        return False

    def flush(self, force: bool = False) -> None:
        if not self.output or not self._dirty:
            return
        now = time.monotonic()
        if not force and now - self._last_flush < 2.0:
            return
        write_notebook(self.mirror.notebook(), self.output)
        self._dirty = False
        self._last_flush = now

    def last_finish(self) -> dict[str, Any] | None:
        return list(self.mirror.finished.values())[-1] if self.mirror.finished else None

    def close(self) -> None:
        self.flush(force=True)
        try:
            self.kc.stop_channels()
        finally:
            if self.km.is_alive():
                self.km.shutdown_kernel(now=True)

    def __enter__(self) -> HeadlessKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def error_text(reply: dict[str, Any]) -> str:
    return redact(f"{reply.get('ename', 'Error')}: {reply.get('evalue', '')}")
