"""The world the hostile sandbox corpus (tests/data/sandbox_hostile.json) runs in: a fake home with
planted secrets, a folder outside the working folder, a model endpoint (a tiny HTTP server), a second
listening TCP port, a listening unix socket and a process outside the sandbox. Shared by
tests/test_sandbox.py and the kernel e2e tests."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _unsupported() -> str | None:
    """Why this machine cannot run the sandbox (tests that need it skip, saying so), or None."""
    from rlm_kernel.sandbox import SandboxUnavailable, probe

    try:
        probe()
    except SandboxUnavailable as exc:
        return f"no sandbox on this machine: {exc}"
    return None


#: None where the sandbox runs (Linux >= 6.7 with Landlock, x86_64/aarch64: CI, this project's VM)
UNSUPPORTED = _unsupported()
CORPUS = json.loads((Path(__file__).parent / "data" / "sandbox_hostile.json").read_text())["cases"]
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nPLANTED-PRIVATE-KEY\n-----END OPENSSH PRIVATE KEY-----\n"
AWS = "[default]\naws_access_key_id = AKIAPLANTED\naws_secret_access_key = PLANTED-AWS-CREDENTIAL\n"


ANSWER = json.dumps({"object": "chat.completion", "choices": [{"index": 0, "message": {
    "role": "assistant", "content": "forty-two"}, "finish_reason": "stop"}]}).encode()


class _Endpoint(BaseHTTPRequestHandler):
    """A model endpoint that answers every request with one chat completion."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    do_GET = do_POST = _answer


@dataclass
class World:
    root: Path
    home: Path = field(init=False)
    work: Path = field(init=False)
    outside: Path = field(init=False)
    endpoint_port: int = 0  # the model endpoint: reached only through the forwarder
    port2: int = 0  # any other local service
    unix_path: str = ""
    victim_pid: int = 0
    _closers: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.home, self.work, self.outside = (self.root / n for n in ("home", "work", "outside"))
        for d in (self.home / ".ssh", self.home / ".aws", self.work, self.outside):
            d.mkdir(parents=True)
        (self.home / ".ssh" / "id_rsa").write_text(SSH_KEY)
        (self.home / ".aws" / "credentials").write_text(AWS)
        self.endpoint_port = self._endpoint()
        self.port2 = self._listen()
        # A short path: unix socket paths are limited to 107 bytes.
        self.unix_path = f"/tmp/rlm-sbx-{os.getpid()}-{id(self) % 100000}.sock"
        u = socket.socket(socket.AF_UNIX)
        u.bind(self.unix_path)
        u.listen(16)
        self._closers += [u.close, lambda: os.unlink(self.unix_path)]
        victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        self.victim_pid = victim.pid
        self._closers += [victim.kill, victim.wait]

    def _listen(self) -> int:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(64)  # connects complete in the backlog; nobody needs to accept
        self._closers.append(s.close)
        return int(s.getsockname()[1])

    def _endpoint(self) -> int:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self._closers += [httpd.shutdown, httpd.server_close]
        return int(httpd.server_port)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.endpoint_port}/v1"

    def fill(self, code: str) -> str:
        return (code.replace("@HOME@", str(self.home)).replace("@OUTSIDE@", str(self.outside))
                .replace("@PORT2@", str(self.port2)).replace("@UNIX@", self.unix_path)
                .replace("@VICTIM@", str(self.victim_pid))
                .replace("@ENDPOINT@", str(self.endpoint_port)))

    def close(self) -> None:
        for close in self._closers:
            with contextlib.suppress(OSError):
                close()
