"""Starting an ``rlm`` kernel process for a headless client, with nothing heavier than
jupyter_client imported.

Why its own module: a command (``rlm-kernel run``) starts the kernel first and imports the rest
of its front-end (nbclient, nbformat: a few hundred milliseconds) while the kernel boots in its
own process, on the other core. :class:`~rlm_kernel.headless.HeadlessRunner` takes the started
manager; without one it starts the kernel itself, the same way.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from .kernelspec import SANDBOXED_KERNEL_NAME, kernel_json, kernel_name

__all__ = ["CellAwareClient", "kernel_manager", "kernel_log", "run_sync", "start_kernel"]

#: IPython's history of a headless kernel lives in memory: no sqlite file, no lock to wait on
#: (what nbclient passes too).
HISTORY_ARGS = ["--HistoryManager.hist_file=:memory:"]


class CellAwareClient(AsyncKernelClient):
    """A kernel client that says which cell it executes (``metadata.cellId``), as JupyterLab
    does: the kernel anchors a run's cells to the query cell by that id."""

    cell_id: str | None = None

    def execute(self, code: str, silent: bool = False, store_history: bool = True,
                user_expressions: dict[str, Any] | None = None, allow_stdin: bool | None = None,
                stop_on_error: bool = True) -> str:
        content = {"code": code, "silent": silent, "store_history": store_history,
                   "user_expressions": user_expressions or {},
                   "allow_stdin": self.allow_stdin if allow_stdin is None else allow_stdin,
                   "stop_on_error": stop_on_error}
        msg = self.session.msg("execute_request", content)
        if self.cell_id and not silent:
            msg["metadata"]["cellId"] = self.cell_id
        self.shell_channel.send(msg)
        return str(msg["header"]["msg_id"])


class _ThisPythonSpecs(KernelSpecManager):
    """Always the ``rlm`` (or ``rlm-sandboxed``) kernel of this interpreter: no install needed."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(name=kernel_name,
                          **kernel_json(sandboxed=kernel_name == SANDBOXED_KERNEL_NAME))


def kernel_manager(sandboxed: bool = False) -> AsyncKernelManager:
    """A manager of this interpreter's ``rlm`` kernel over IPC (local only: no unencrypted-TCP
    warning on every run), its socket paths absolute (IPC paths are relative to each process's
    working folder otherwise)."""
    km = AsyncKernelManager(kernel_name=kernel_name(sandboxed),
                            kernel_spec_manager=_ThisPythonSpecs(), transport="ipc",
                            client_class=f"{__name__}.CellAwareClient")
    km.ip = os.path.join(tempfile.gettempdir(), f"rlm-kernel-{uuid.uuid4().hex[:12]}")
    return km


def kernel_log(km: AsyncKernelManager) -> str:
    """Where the kernel's own stdout and stderr go (never to the command's stdout: that is the
    answer's)."""
    return f"{km.ip}.log"


async def start_kernel(km: AsyncKernelManager, *, env: dict[str, str], cwd: str) -> None:
    """Start the kernel process (returns once it is launched, not once it is ready)."""
    log = open(kernel_log(km), "ab")  # noqa: SIM115 - the kernel process holds it open
    try:
        await km.start_kernel(extra_arguments=list(HISTORY_ARGS), env=env, cwd=cwd, stdout=log,
                              stderr=log)
    finally:
        log.close()


def run_sync(coro: Any) -> Any:
    """Run a coroutine of a headless client from synchronous code (the CLI, the eval runner)."""
    if sys.platform == "win32":  # pragma: no cover - zmq's asyncio needs the selector loop
        asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())
    return asyncio.run(coro)
