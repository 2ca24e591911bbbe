"""The sandboxed kernel application: ``python -m rlm_kernel --sandbox -f CONNECTION_FILE``.

It is ipykernel's application with the sandbox (:mod:`rlm_kernel.sandbox`) slotted into its start:

1. after the connection file is read and before the first ZeroMQ socket (whose I/O threads would
   otherwise keep every right), the process reads what the kernel needs (the API key, the endpoint),
   then enters the sandbox: files, TCP ports, environment, capabilities;
2. the kernel binds its own sockets (its ports and IPC folder are allowed) and starts as usual;
3. once every thread exists, the seccomp filter is installed on all of them.

If the sandbox cannot be entered (an old Linux, a working folder that is the home folder...) the
kernel still starts, so the front-end can show why, but it is a :class:`RefusingKernel`: every
cell fails with the reason and no code runs. It never runs model code unsandboxed.

Settings (environment, read before the scrub): ``RLM_SANDBOX_WORKDIR`` the working folder (default:
the folder the kernel starts in, i.e. the notebook's); ``RLM_SANDBOX_READ`` more files or folders
model code may read (``os.pathsep``-separated: context files, data folders); ``RLM_SANDBOX_ENV``
names of extra environment variables model code may see (comma-separated).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from typing import Any

from ipykernel.ipkernel import IPythonKernel
from ipykernel.kernelapp import IPKernelApp
from ipykernel.zmqshell import ZMQInteractiveShell
from IPython.utils._process_common import process_handler
from traitlets import Type, Unicode

from .. import sandbox
from ..config import RLMConfig
from ..sandbox import forwarder
from .kernel import RLMKernel

__all__ = ["SandboxedKernelApp", "RefusingKernel", "RLMSandboxedKernel", "launch"]

_REFUSED = "SandboxUnavailable"
OPENAI_BASE_URL = "https://api.openai.com/v1"  # the openai client's default endpoint


def _refusal(kernel: IPythonKernel, reason: str, silent: bool) -> dict[str, Any]:
    evalue = (f"the sandbox could not be started, so this kernel runs no code: {reason}. Fix that "
              "and restart the kernel, or choose the plain 'RLM (Python 3)' kernel if you accept "
              "running model code unsandboxed.")
    tb = [f"\x1b[0;31m{_REFUSED}\x1b[0m: {evalue}"]
    if not silent:
        kernel.send_response(kernel.iopub_socket, "error",
                             {"ename": _REFUSED, "evalue": evalue, "traceback": tb})
    shell = kernel.shell
    assert shell is not None
    count = shell.execution_count
    shell.execution_count += 1
    return {"status": "error", "ename": _REFUSED, "evalue": evalue, "traceback": tb,
            "execution_count": count}


class SandboxedShell(ZMQInteractiveShell):
    """``!cmd`` through pipes: IPython's default needs a pseudo-terminal, and ``/dev/pts`` (every
    terminal of the machine, the user's too) stays closed to model code."""

    def system_piped(self, cmd: str) -> None:
        if cmd.rstrip().endswith("&"):
            raise OSError("Background processes not supported.")
        code = process_handler(self.var_expand(cmd, depth=1), _relay, stderr=subprocess.STDOUT)
        self.user_ns["_exit_code"] = code
        if getattr(self, "system_raise_on_error", False) and code != 0:
            raise subprocess.CalledProcessError(code or -1, cmd)

    system = system_piped


def _relay(p: subprocess.Popen[bytes]) -> int:
    """Copy a command's output to the cell line by line, as it comes."""
    assert p.stdout is not None
    for line in iter(p.stdout.readline, b""):
        sys.stdout.write(line.decode("utf-8", "replace"))
    return p.wait()


class RLMSandboxedKernel(RLMKernel):
    """The RLM kernel inside the sandbox: its banner says what model code cannot do."""

    shell_class = Type(SandboxedShell)
    sandbox_report: sandbox.Report | None = None
    refusal = ""  # set if the sandbox could not be completed: then no cell runs

    def _process_children(self) -> list[Any]:
        # ipykernel finds child processes through psutil and /proc, which the sandbox closes
        # (/proc/<pid>/environ would show the key the kernel started with). Without it ipykernel
        # does what it does when psutil is absent: a normal shutdown leaves children to their
        # process group, which a restart or a forced shutdown kills.
        return []

    @property
    def banner(self) -> str:  # type: ignore[override]
        report = self.sandbox_report
        return RLMKernel.banner + ("\n" + report.describe() if report else "")

    async def do_execute(  # type: ignore[override]
        self, code: str, silent: bool, *args: Any, **kw: Any) -> dict[str, Any]:
        if self.refusal or self.sandbox_report is None:
            return _refusal(self, self.refusal or "the sandbox was not sealed", silent)
        return await super().do_execute(code, silent, *args, **kw)


class RefusingKernel(IPythonKernel):
    """Started where the sandbox could not be: every cell fails with why; nothing runs."""

    implementation = "rlm_kernel"
    reason = Unicode("").tag(config=True)

    @property
    def banner(self) -> str:  # type: ignore[override]
        return f"RLM sandboxed kernel: NOT SANDBOXED, so it runs nothing. {self.reason}"

    async def do_execute(  # type: ignore[override]
        self, code: str, silent: bool, *args: Any, **kw: Any) -> dict[str, Any]:
        return _refusal(self, self.reason, silent)

    def do_complete(self, code: str, cursor_pos: int | None) -> dict[str, Any]:  # type: ignore[override]
        return {"status": "ok", "matches": [], "cursor_start": cursor_pos or 0,
                "cursor_end": cursor_pos or 0, "metadata": {}}

    def do_inspect(self, code: str, cursor_pos: int | None, detail_level: int = 0,  # type: ignore[override]
                   omit_sections: Any = ()) -> dict[str, Any]:
        return {"status": "ok", "found": False, "data": {}, "metadata": {}}


class SandboxedKernelApp(IPKernelApp):
    """ipykernel's application, entering the sandbox before its first socket."""

    report: sandbox.Report | None = None
    refusal: str = ""
    forwarder: sandbox.forwarder.Forwarder | None = None

    def init_sockets(self) -> None:
        try:
            self.report = self._enter()
        except (sandbox.SandboxUnavailable, sandbox.PolicyError, OSError) as exc:
            self.refusal = str(exc)
            self.log.error("rlm: NOT sandboxed, refusing to run code: %s", exc)
            self.kernel_class = RefusingKernel
            self.config.RefusingKernel.reason = self.refusal
        super().init_sockets()

    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)
        if self.report is None or self.subapp is not None:
            return
        kernel = self.kernel
        assert isinstance(kernel, RLMSandboxedKernel)
        if self.forwarder is not None:
            # The kernel talks to the key holder with a token; the key never enters it.
            kernel.rlm.config.base_url = self.forwarder.url
            kernel.rlm.config.api_key = self.forwarder.token
        try:
            sandbox.seal(self.report)
        except OSError as exc:
            # Landlock already holds, but unix sockets and UDP would stay open: refuse.
            kernel.refusal = self.refusal = f"the seccomp filter could not be installed ({exc})"
            self.log.error("rlm: sandbox incomplete, refusing to run code: %s", exc)
            return
        kernel.sandbox_report = self.report
        self.log.info("rlm: %s", self.report.describe())

    def _enter(self) -> sandbox.Report:
        if not self.connection_file or not os.path.isfile(self.abs_connection_file):
            raise sandbox.SandboxUnavailable(
                "the sandboxed kernel needs a connection file from its front-end "
                "(-f PATH, as Jupyter passes it)")
        ports = [self.shell_port, self.iopub_port, self.stdin_port, self.control_port, self.hb_port]
        if any(p <= 0 for p in ports):
            raise sandbox.SandboxUnavailable(
                "the connection file leaves ports to choose (0); the sandbox allows only the "
                "kernel's own ports, so they must be given")
        ipc_dirs: list[str] = []
        if self.transport == "ipc":
            self.ip = os.path.abspath(self.ip)  # the sandbox changes the working folder
            ipc_dirs.append(os.path.dirname(self.ip))
        section = {k: v for k, v in self.config.get("RLMKernel", {}).items()
                   if k in RLMConfig.class_trait_names(config=True)}
        cfg = RLMConfig(parent=self, **section)
        env = os.environ
        workdir = env.get("RLM_SANDBOX_WORKDIR") or os.getcwd()
        read = [p for p in env.get("RLM_SANDBOX_READ", "").split(os.pathsep) if p]
        keep = [n.strip() for n in env.get("RLM_SANDBOX_ENV", "").split(",") if n.strip()]
        if not cfg.scripted:
            # Started before the sandbox, so outside it: it alone holds the key and the network.
            self.forwarder = forwarder.start(cfg.base_url or OPENAI_BASE_URL, cfg.api_key)
        try:
            policy = sandbox.kernel_policy(
                workdir=workdir, tmpdir=_private_tmpdir(), read=read,
                kernel_files=[self.abs_connection_file],
                endpoints=[self.forwarder.url] if self.forwarder else [],
                kernel_ports=ports if self.transport == "tcp" else (), ipc_dirs=ipc_dirs,
                keep_env=keep)
        except sandbox.PolicyError:
            self._stop_forwarder()
            raise
        # IPython's history database lives in the (now unreadable) profile: keep it in memory.
        self.config.HistoryManager.hist_file = ":memory:"
        self.kernel_class = RLMSandboxedKernel
        # ipykernel's pipe for forked children's output binds a random TCP port, which the
        # sandbox forbids; such output is lost, which is said in the README, not on every start.
        warnings.filterwarnings("ignore", message="Couldn't bind IOPub Pipe")
        try:
            return sandbox.enter(policy)
        except BaseException:
            self._stop_forwarder()
            raise

    def _stop_forwarder(self) -> None:
        if self.forwarder is not None:
            self.forwarder.control.close()  # its stdin closes: it exits
            self.forwarder = None


def _private_tmpdir() -> str:
    path = tempfile.mkdtemp(prefix="rlm-sandbox-")
    atexit.register(shutil.rmtree, path, True)
    return path


def launch(argv: list[str] | None = None) -> None:
    SandboxedKernelApp.launch_instance(argv=argv)


if __name__ == "__main__":
    launch()
