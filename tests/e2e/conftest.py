"""End-to-end fixtures: the ``rlm`` kernelspec installed into a private Jupyter path, and a small
jupyter_client harness that runs cells on a real kernel and keeps every message."""

from __future__ import annotations

import os
import queue
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from rlm_kernel import cells
from rlm_kernel.install import install
from rlm_kernel.mirror import NotebookMirror

# Installed at import, before jupyter_kernel_test's setUpClass looks the kernel up by name.
_JUPYTER_DIR = tempfile.mkdtemp(prefix="rlm-jupyter-")
install(prefix=_JUPYTER_DIR)
os.environ["JUPYTER_PATH"] = os.path.join(_JUPYTER_DIR, "share", "jupyter")


@dataclass
class Ran:
    reply: dict[str, Any]
    msgs: list[dict[str, Any]] = field(default_factory=list)  # IOPub messages of this cell
    comm: list[dict[str, Any]] = field(default_factory=list)  # rlm.cells payloads meanwhile

    @property
    def outputs_text(self) -> str:
        parts = []
        for m in self.msgs:
            c = m["content"]
            if m["msg_type"] == "stream":
                parts.append(c["text"])
            elif m["msg_type"] in ("display_data", "execute_result"):
                parts.append(str(c["data"].get("text/plain", "")))
            elif m["msg_type"] == "error":
                parts.append(f"{c['ename']}: {c['evalue']}")
        return "\n".join(parts)


class KernelHarness:
    """A real ``rlm`` kernel; ``run`` executes one cell and collects its messages."""

    def __init__(self, env: dict[str, str] | None = None, cwd: str | None = None,
                 log: Any = None) -> None:
        self.km = KernelManager(kernel_name="rlm")
        full = {k: v for k, v in os.environ.items()
                if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RLM_MODEL", "RLM_SUB_MODEL")}
        full.update(env or {})
        extra = {"stdout": log, "stderr": log} if log is not None else {}
        self.km.start_kernel(env=full, cwd=cwd, **extra)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=90)
        self.comm_id: str | None = None
        self.mirror = NotebookMirror()

    def open_comm(self, mirrors: bool = True) -> None:
        """Play a mirroring front-end (like the JupyterLab extension)."""
        self.comm_id = uuid.uuid4().hex
        msg = self.kc.session.msg("comm_open", {"comm_id": self.comm_id, "target_name": cells.TARGET,
                                                "data": cells.hello_msg("test", mirrors)})
        self.kc.shell_channel.send(msg)

    def send_control(self, action: str) -> None:
        assert self.comm_id
        msg = self.kc.session.msg("comm_msg", {"comm_id": self.comm_id,
                                               "data": cells.control_msg(action)})
        self.kc.shell_channel.send(msg)

    def submit(self, code: str, cell_id: str | None = None) -> str:
        msg = self.kc.session.msg("execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": False})
        if cell_id:
            msg["metadata"]["cellId"] = cell_id
        self.kc.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def collect(self, msg_id: str, timeout: float = 120, on_msg: Any = None) -> Ran:
        ran = Ran(reply={})
        idle = False
        import time

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
                    data = m["content"].get("data") or {}
                    if m["msg_type"] == "comm_msg" and data.get("v") == cells.PROTOCOL_VERSION:
                        ran.comm.append(data)
                        self.mirror.apply(data)
            try:
                m = self.kc.get_iopub_msg(timeout=0.05)
            except queue.Empty:
                m = None
            if m is not None:
                if m["msg_type"] in ("comm_msg", "comm_open"):
                    data = m["content"].get("data") or {}
                    if data.get("v") == cells.PROTOCOL_VERSION and (
                            self.comm_id is None or m["content"]["comm_id"] == self.comm_id):
                        ran.comm.append(data)
                        self.mirror.apply(data)
                        if on_msg is not None:
                            on_msg(data)
                elif m["parent_header"].get("msg_id") == msg_id:
                    if m["msg_type"] == "status":
                        idle = m["content"]["execution_state"] == "idle"
                    else:
                        ran.msgs.append(m)
            if not ran.reply:
                try:
                    r = self.kc.get_shell_msg(timeout=0)
                    if r["parent_header"].get("msg_id") == msg_id:
                        ran.reply = r["content"]
                except queue.Empty:
                    pass
        return ran

    def run(self, code: str, cell_id: str | None = None, timeout: float = 120) -> Ran:
        return self.collect(self.submit(code, cell_id), timeout)

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture
def kernel_factory() -> Iterator[Any]:
    made: list[KernelHarness] = []

    def make(env: dict[str, str] | None = None, cwd: str | None = None,
             log: Any = None) -> KernelHarness:
        k = KernelHarness(env, cwd, log)
        made.append(k)
        return k

    yield make
    for k in made:
        k.close()
