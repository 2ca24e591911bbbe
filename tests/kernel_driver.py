"""The one jupyter_client driver of real ``rlm`` kernels the tests share.

``KernelDriver`` starts a kernel by its kernelspec name (installed into the session's private
Jupyter path by the ``_isolated_jupyter`` fixture of ``tests/conftest.py``), runs cells, and keeps
every IOPub message of each: outputs, ``rlm.cells`` payloads (applied to a notebook mirror, as a
front-end would), widget comms. It plays a mirroring front-end when asked (``open_comm``), sends
``control`` messages and widget clicks. Waits are on messages, with generous deadlines.
"""

from __future__ import annotations

import os
import queue
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.manager import KernelManager

from rlm_kernel import cells
from rlm_kernel.kernelspec import KERNEL_NAME
from rlm_kernel.mirror import NotebookMirror

#: Model settings a developer's shell may hold; a test kernel never sees them unless given.
MODEL_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RLM_MODEL", "RLM_SUB_MODEL",
             "RLM_CONCURRENCY", "RLM_PANEL")


@dataclass
class Ran:
    reply: dict[str, Any]
    msgs: list[dict[str, Any]] = field(default_factory=list)  # IOPub messages of this cell
    comm: list[dict[str, Any]] = field(default_factory=list)  # rlm.cells payloads meanwhile
    iopub: list[dict[str, Any]] = field(default_factory=list)  # every IOPub message meanwhile
    received: int = 0  # len(iopub) when the execute reply arrived

    @property
    def outputs_text(self) -> str:
        parts = []
        for m in self.msgs:
            c = m["content"]
            if m["msg_type"] == "stream":
                parts.append(c["text"])
            elif m["msg_type"] in ("display_data", "execute_result", "update_display_data"):
                parts.append(str(c["data"].get("text/plain", "")))
            elif m["msg_type"] == "error":
                parts.append(f"{c['ename']}: {c['evalue']}")
        return "\n".join(parts)


def _payloads(data: dict[str, Any]) -> list[dict[str, Any]]:
    """A batch's messages one by one (so tests read the protocol's messages, not its framing)."""
    if data.get("type") == "batch":
        return [{"v": data.get("v"), **m} for m in data.get("msgs", [])]
    return [data]


class KernelDriver:
    """A real ``rlm`` kernel; ``run`` executes one cell and collects its messages."""

    def __init__(self, env: dict[str, str] | None = None, cwd: str | None = None,
                 log: Any = None, kernel_name: str = KERNEL_NAME) -> None:
        self.km = KernelManager(kernel_name=kernel_name)
        full = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}
        full.update(env or {})
        extra = {"stdout": log, "stderr": log} if log is not None else {}
        self.km.start_kernel(env=full, cwd=cwd, **extra)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=90)
        self.comm_id: str | None = None
        self.mirror = NotebookMirror()

    # -- playing a front-end --------------------------------------------------------------------
    def open_comm(self, mirrors: bool = True) -> None:
        """Play a mirroring front-end (like the JupyterLab extension)."""
        self.comm_id = uuid.uuid4().hex
        msg = self.kc.session.msg("comm_open", {"comm_id": self.comm_id,
                                                "target_name": cells.TARGET,
                                                "data": cells.hello_msg("test", mirrors)})
        self.kc.shell_channel.send(msg)

    def send_control(self, action: str) -> None:
        assert self.comm_id
        msg = self.kc.session.msg("comm_msg", {"comm_id": self.comm_id,
                                               "data": cells.control_msg(action)})
        self.kc.shell_channel.send(msg)

    def click(self, comm_id: str) -> None:
        """A click on an ipywidgets Button."""
        msg = self.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {
            "method": "custom", "content": {"event": "click"}}})
        self.kc.shell_channel.send(msg)

    # -- running cells --------------------------------------------------------------------------
    def submit(self, code: str, cell_id: str | None = None) -> str:
        msg = self.kc.session.msg("execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": False})
        if cell_id:
            msg["metadata"]["cellId"] = cell_id
        self.kc.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def collect(self, msg_id: str, timeout: float = 120,
                on_msg: Callable[[dict[str, Any]], None] | None = None,
                on_iopub: Callable[[dict[str, Any]], None] | None = None) -> Ran:
        """Wait for the cell's reply and its idle; ``on_msg`` sees each rlm.cells payload,
        ``on_iopub`` each raw IOPub message, as they arrive."""
        ran = Ran(reply={})
        idle = False
        deadline = time.monotonic() + timeout
        while not (ran.reply and idle):
            assert time.monotonic() < deadline, f"cell did not finish in {timeout} s"
            if not ran.reply and not self.km.is_alive():
                ran.reply = {"status": "died"}
                while True:  # what the kernel sent before it died still counts
                    try:
                        m = self.kc.get_iopub_msg(timeout=0.5)
                    except queue.Empty:
                        return ran
                    self._take(m, msg_id, ran, on_msg, on_iopub)
            try:
                m = self.kc.get_iopub_msg(timeout=0.05)
            except queue.Empty:
                m = None
            if m is not None:
                idle = self._take(m, msg_id, ran, on_msg, on_iopub) or idle
            if not ran.reply:
                try:
                    r = self.kc.get_shell_msg(timeout=0)
                    if r["parent_header"].get("msg_id") == msg_id:
                        ran.reply = r["content"]
                        ran.received = len(ran.iopub)
                except queue.Empty:
                    pass
        return ran

    def _take(self, m: dict[str, Any], msg_id: str, ran: Ran, on_msg: Any, on_iopub: Any) -> bool:
        """File one IOPub message; True when it is this cell's idle."""
        ran.iopub.append(m)
        if on_iopub is not None:
            on_iopub(m)
        if m["msg_type"] in ("comm_msg", "comm_open"):
            data = m["content"].get("data") or {}
            if data.get("v") == cells.PROTOCOL_VERSION and (
                    self.comm_id is None or m["content"]["comm_id"] == self.comm_id):
                self.mirror.apply(data)
                for payload in _payloads(data):
                    ran.comm.append(payload)
                    if on_msg is not None:
                        on_msg(payload)
            return False
        if m["parent_header"].get("msg_id") != msg_id:
            return False
        if m["msg_type"] == "status":
            return m["content"]["execution_state"] == "idle"
        ran.msgs.append(m)
        return False

    def run(self, code: str, cell_id: str | None = None, timeout: float = 120,
            on_msg: Any = None, on_iopub: Any = None) -> Ran:
        return self.collect(self.submit(code, cell_id), timeout, on_msg, on_iopub)

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
