"""The sandboxed kernel: ``python -m rlm_kernel --sandbox -f CONNECTION_FILE`` (``rlm-sandboxed``).

It is ipykernel's application with the sandbox (:mod:`rlm_kernel.sandbox`) slotted into its start:

1. after the connection file is read and before the first ZeroMQ socket (whose I/O threads would
   otherwise keep every right), the process reads its settings, starts the key-holding forwarder
   (outside the sandbox) and enters the sandbox: files, TCP ports, environment, capabilities;
2. the kernel binds its own sockets (its ports and IPC folder are allowed) and starts as usual,
   its session settings naming the real endpoint and, for a key, the forwarder's token;
3. once every thread exists, the seccomp filter is installed on all of them.

If the sandbox cannot be entered (an old Linux, a working folder that is the home folder...) the
kernel still starts, so the front-end can show why, but it is a :class:`RefusingKernel`: every
cell fails with the reason and no code runs. It never runs model code unsandboxed.
"""

from __future__ import annotations

import os
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
from ..config import RLMConfig, setting_traits
from ..errors import ConfigError
from ..sandbox import forwarder
from .kernel import RLMKernel

__all__ = ["SandboxedKernelApp", "RefusingKernel", "RLMSandboxedKernel", "ForwarderGate",
           "launch"]

_REFUSED = "SandboxUnavailable"
#: The openai client's endpoint when none is named (a key alone means the OpenAI API).
DEFAULT_ENDPOINT = "https://api.openai.com/v1"


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


class ForwarderGate:
    """The sandboxed session's endpoint: its clients reach the forwarder, never the endpoint.

    The session's settings keep the real endpoint (that is what trajectories record) and, in place
    of the key, the forwarder's token; a key typed later (``%rlm config api_key``) is handed to
    the forwarder and replaced by the token. Another endpoint would need another forwarder, started
    outside the sandbox: only a restart can do that, so it is refused with that advice.
    """

    def __init__(self, fw: forwarder.Forwarder | None) -> None:
        self.fw = fw

    def admit(self, changes: dict[str, Any]) -> dict[str, Any]:
        fw = self.fw
        url = changes.get("base_url")
        if url is not None and (fw is None or url.rstrip("/") != fw.upstream.rstrip("/")):
            now = f"reaches only {fw.upstream}" if fw else "has no model endpoint (it started " \
                  "with the scripted model) and no network"
            raise ConfigError(
                f"the sandboxed kernel {now}, fixed when it started: its key holder runs outside "
                "the sandbox. Set OPENAI_BASE_URL (and OPENAI_API_KEY) and restart the kernel.")
        key = changes.get("api_key")
        if key:
            if fw is None:
                raise ConfigError(
                    "the sandboxed kernel started with the scripted model and has no network; set "
                    "OPENAI_API_KEY (and OPENAI_BASE_URL) and restart the kernel to use a model")
            if key != fw.token:
                fw.set_key(key)  # the forwarder holds it from now on; the kernel keeps the token
                changes = {**changes, "api_key": fw.token}
        return changes

    def route(self, cfg: RLMConfig) -> RLMConfig:
        if self.fw is None:
            return cfg
        return cfg.copy(base_url=self.fw.url, api_key=self.fw.token)


class RLMSandboxedKernel(RLMKernel):
    """The RLM kernel inside the sandbox: its banner says what model code cannot do."""

    shell_class = Type(SandboxedShell)
    sandbox_report: sandbox.Report | None = None
    refusal = ""  # set if the sandbox could not be completed: then no cell runs

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        app = self.parent
        fw = app.forwarder if isinstance(app, SandboxedKernelApp) else None
        self.pool.gate = ForwarderGate(fw if fw is not None and fw.url else None)

    @property
    def banner(self) -> str:  # type: ignore[override]
        report = self.sandbox_report
        return RLMKernel.banner + ("\n" + report.describe() if report else "")

    async def do_execute(
            self, code: str, silent: bool, *args: Any, **kw: Any) -> dict[str, Any]:
        if self.refusal or self.sandbox_report is None:
            return _refusal(self, self.refusal or "the sandbox was not sealed", silent)
        return await super().do_execute(code, silent, *args, **kw)

    def _process_children(self) -> list[Any]:
        # ipykernel finds child processes through psutil and /proc, which the sandbox closes
        # (/proc/<pid>/environ shows the environment a process started with). Without it ipykernel
        # does what it does when psutil is absent: a normal shutdown leaves children to their
        # process group, which a restart or a forced shutdown kills.
        return []


class RefusingKernel(IPythonKernel):
    """Started where the sandbox could not be: every cell fails with why; nothing runs."""

    implementation = "rlm_kernel"
    reason = Unicode("").tag(config=True)

    @property
    def banner(self) -> str:  # type: ignore[override]
        return f"RLM sandboxed kernel: NOT SANDBOXED, so it runs nothing. {self.reason}"

    async def do_execute(
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
    forwarder: forwarder.Forwarder | None = None

    def init_sockets(self) -> None:
        try:
            self.report = self._enter()
        except (sandbox.SandboxUnavailable, sandbox.PolicyError, ConfigError, OSError) as exc:
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
        launch_settings = sandbox.LaunchSettings.from_environ(os.environ)
        cfg = self._session_settings()
        tmpdir = tempfile.mkdtemp(prefix="rlm-sandbox-")
        # Started before the sandbox, so outside it: it alone holds the key and reaches the
        # endpoint (none for the scripted model), and it removes ``tmpdir`` once the kernel is gone.
        fw = forwarder.start("" if cfg.scripted else cfg.base_url or DEFAULT_ENDPOINT,
                             cfg.api_key, cleanup=tmpdir)
        self.forwarder = fw
        try:
            policy = sandbox.kernel_policy(
                workdir=launch_settings.workdir or os.getcwd(), tmpdir=tmpdir,
                read=launch_settings.read, kernel_files=[self.abs_connection_file],
                endpoints=[fw.url] if fw.url else [],
                kernel_ports=ports if self.transport == "tcp" else (), ipc_dirs=ipc_dirs,
                keep_env=launch_settings.keep_env)
            self._hand_over(cfg)
            # IPython's history database lives in the (unreadable) profile: keep it in memory.
            self.config.HistoryManager.hist_file = ":memory:"
            self.kernel_class = RLMSandboxedKernel
            # ipykernel's pipe for forked children's output binds a random TCP port, which the
            # sandbox forbids: such output is lost (docs/sandbox.md), not warned about each start.
            warnings.filterwarnings("ignore", message="Couldn't bind IOPub Pipe")
            return sandbox.enter(policy)
        except BaseException:
            self._stop_forwarder()
            raise

    def _session_settings(self) -> RLMConfig:
        """The settings the kernel will read (environment, then ``c.RLMKernel.*``), read now,
        while the environment and the user's files are still there."""
        names = set(setting_traits())
        section = {k: v for k, v in self.config.get("RLMKernel", {}).items() if k in names}
        return RLMConfig(parent=self, **section)

    def _hand_over(self, cfg: RLMConfig) -> None:
        """What the kernel's settings say once the environment is scrubbed: the real endpoint
        (trajectories record it), the forwarder's token for a key, and that it is sandboxed."""
        values: dict[str, Any] = {"sandboxed": True}
        if self.forwarder is not None and self.forwarder.url:
            values.update(base_url=self.forwarder.upstream, api_key=self.forwarder.token)
        for name, value in values.items():
            setattr(self.config.RLMConfig, name, value)
            if name in self.config.get("RLMKernel", {}):  # c.RLMKernel.* comes first: replace it
                setattr(self.config.RLMKernel, name, value)

    def _stop_forwarder(self) -> None:
        if self.forwarder is not None:
            self.forwarder.control.close()  # its stdin closes: it exits
            self.forwarder = None


def launch(argv: list[str] | None = None) -> None:
    SandboxedKernelApp.launch_instance(argv=argv)
