"""The sandbox's key holder (rlm_kernel.sandbox.forwarder): a real forwarder process between the
project's model client and a recording upstream over real HTTP (and TLS)."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest

from rlm_kernel.config import RLMConfig
from rlm_kernel.lm import LMClient
from rlm_kernel.sandbox import forwarder

REAL_KEY = "sk-real-0123456789abcdefSECRET"
ANSWER = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "forty-two"},
                       "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


@dataclass
class Upstream:
    url: str
    seen: list[tuple[str, str]] = field(default_factory=list)  # (path, authorization)
    hung_up: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: Upstream

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.upstream.seen.append((self.path, self.headers.get("authorization", "")))
        if body.get("model") == "slow":  # wait for the caller to hang up (bounded)
            for _ in range(200):
                ready, _, _ = select.select([self.connection], [], [], 0.05)
                if ready and not self.connection.recv(1, socket.MSG_PEEK):
                    self.upstream.hung_up.set()
                    return
        data = json.dumps(ANSWER).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_GET = _answer


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[Upstream]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    scheme, host = "http", "127.0.0.1"
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
        scheme, host = "https", "localhost"
    up = Upstream(f"{scheme}://{host}:{httpd.server_port}/v1")
    _Handler.upstream = up
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield up
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    yield from _serve()


@pytest.fixture
def forwarders() -> Iterator[Any]:
    made: list[forwarder.Forwarder] = []

    def start(url: str, key: str = REAL_KEY) -> forwarder.Forwarder:
        fw = forwarder.start(url, key)
        made.append(fw)
        return fw

    yield start
    for fw in made:
        fw.control.close()
        fw.process.wait(timeout=10)


def _ask(fw: forwarder.Forwarder) -> str:
    client = LMClient(RLMConfig(base_url=fw.url, api_key=fw.token, max_retries=0))
    try:
        return client.complete([{"role": "user", "content": "q"}], model="m", depth=1).text
    finally:
        client.close()


def test_the_kernel_client_gets_answers_and_only_the_forwarder_sends_the_key(upstream, forwarders
                                                                            ) -> None:
    fw = forwarders(upstream.url)
    assert fw.url.startswith("http://127.0.0.1:") and fw.url.endswith("/v1")
    assert _ask(fw) == "forty-two"
    assert upstream.seen == [("/v1/chat/completions", f"Bearer {REAL_KEY}")]
    assert fw.token != REAL_KEY and REAL_KEY not in fw.url


def test_a_request_without_the_kernel_token_is_refused(upstream, forwarders) -> None:
    fw = forwarders(upstream.url)
    for auth in ({}, {"authorization": "Bearer guess"}, {"authorization": f"Bearer {REAL_KEY}"}):
        r = httpx2.post(fw.url + "/chat/completions", json={}, headers=auth)
        assert r.status_code == 401 and "token" in r.json()["error"]["message"]
    assert upstream.seen == []


def test_only_the_model_paths_are_forwarded(upstream, forwarders) -> None:
    fw = forwarders(upstream.url)
    auth = {"authorization": f"Bearer {fw.token}"}
    for path in ("/files", "/chat/completions/../../files", "/../admin", "/fine_tuning/jobs"):
        r = httpx2.post(fw.url + path, json={}, headers=auth)
        assert r.status_code == 403, path
    assert httpx2.get(fw.url + "/models", headers=auth).status_code == 200
    assert [p for p, _ in upstream.seen] == ["/v1/models"]


def test_a_key_set_later_replaces_the_first(upstream, forwarders) -> None:
    fw = forwarders(upstream.url, key="")
    fw.set_key("sk-typed-later-0123456789")
    auth = {"authorization": f"Bearer {fw.token}"}
    for _ in range(100):  # the control line and the request race: bounded
        httpx2.get(fw.url + "/models", headers=auth)
        if upstream.seen[-1][1] == "Bearer sk-typed-later-0123456789":
            break
    assert upstream.seen[-1][1] == "Bearer sk-typed-later-0123456789"
    assert upstream.seen[0][1] in ("", "Bearer sk-typed-later-0123456789")  # no key: none sent


def test_hanging_up_cancels_the_upstream_call(upstream, forwarders) -> None:
    fw = forwarders(upstream.url)
    assert _ask(fw) == "forty-two"  # the forwarder is up: the next call reaches the upstream
    with pytest.raises(httpx2.ReadTimeout):
        httpx2.post(fw.url + "/chat/completions", json={"model": "slow"},
                    headers={"authorization": f"Bearer {fw.token}"}, timeout=0.5)
    assert upstream.hung_up.wait(10), "the upstream call went on after the caller hung up"


def test_an_unreachable_endpoint_is_a_clear_502(forwarders) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    fw = forwarders(f"http://127.0.0.1:{port}/v1")
    r = httpx2.post(fw.url + "/chat/completions", json={},
                    headers={"authorization": f"Bearer {fw.token}"})
    assert r.status_code == 502 and "could not reach the model endpoint" in r.text


def test_the_forwarder_exits_when_the_kernel_closes_its_pipe(upstream) -> None:
    fw = forwarder.start(upstream.url, REAL_KEY)
    assert _ask(fw) == "forty-two"
    fw.control.close()
    assert fw.process.wait(timeout=10) == 0


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_an_https_endpoint_is_reached_over_verified_tls(tmp_path: Path, forwarders,
                                                       monkeypatch) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = _serve(ctx)
    up = next(server)
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the test's own certificate
        fw = forwarders(up.url)
        assert _ask(fw) == "forty-two"
        assert up.seen == [("/v1/chat/completions", f"Bearer {REAL_KEY}")]
        monkeypatch.delenv("SSL_CERT_FILE")
        untrusted = forwarders(up.url)  # the system's trust store does not know the certificate
        r = httpx2.post(untrusted.url + "/chat/completions", json={},
                        headers={"authorization": f"Bearer {untrusted.token}"})
        assert r.status_code == 502 and "CERTIFICATE_VERIFY_FAILED" in r.text
    finally:
        next(server, None)
    assert os.environ.get("SSL_CERT_FILE") is None


def test_the_sandboxed_session_keeps_its_endpoint_and_hands_a_typed_key_on(upstream,
                                                                           forwarders) -> None:
    from rlm_kernel.errors import ConfigError
    from rlm_kernel.kernel.sandboxed import ForwarderGate

    fw = forwarders(upstream.url, key="")
    gate = ForwarderGate(fw)
    with pytest.raises(ConfigError, match="restart the kernel"):
        gate.admit({"base_url": "http://127.0.0.1:9/v1"})
    assert gate.admit({"base_url": upstream.url + "/"}) == {"base_url": upstream.url + "/"}
    assert gate.admit({"api_key": "sk-typed-0123456789abcdef"}) == {"api_key": fw.token}
    routed = gate.route(RLMConfig(base_url=upstream.url, api_key=fw.token, max_retries=0,
                                  cache=False))
    assert (routed.base_url, routed.api_key) == (fw.url, fw.token)
    client = LMClient(routed)
    try:
        for _ in range(100):  # the key reaches the forwarder on its control pipe: bounded wait
            client.complete([{"role": "user", "content": "q"}], model="m", depth=1)
            if upstream.seen[-1][1] == "Bearer sk-typed-0123456789abcdef":
                break
    finally:
        client.close()
    assert upstream.seen[-1] == ("/v1/chat/completions", "Bearer sk-typed-0123456789abcdef")
    scripted = ForwarderGate(None)
    for change in ({"base_url": upstream.url}, {"api_key": "sk-x-0123456789"}):
        with pytest.raises(ConfigError, match="scripted model"):
            scripted.admit(change)


def test_the_sandbox_temp_folder_goes_when_the_kernel_dies_even_killed(tmp_path: Path) -> None:
    """A forced shutdown SIGKILLs the kernel (its process group): the forwarder, in a session of
    its own, is told by the parent-death signal and removes the folder the kernel could not."""
    folder = tmp_path / "rlm-sandbox-x"
    (folder / "home").mkdir(parents=True)
    code = ("import sys, time\nfrom rlm_kernel.sandbox import forwarder\n"
            f"fw = forwarder.start('', '', cleanup={str(folder)!r})\n"
            "print(fw.process.pid, flush=True)\ntime.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    for _ in range(500):  # bounded: the child removes the folder, then exits
        if not folder.exists():
            break
        select.select([], [], [], 0.02)
    assert not folder.exists()
    with pytest.raises(ProcessLookupError):
        for _ in range(500):
            os.kill(child, 0)
            select.select([], [], [], 0.02)
