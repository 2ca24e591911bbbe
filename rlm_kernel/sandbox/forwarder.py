"""The key holder: a small process outside the sandbox that forwards the kernel's model calls.

Why a separate process: model code runs in the kernel's process, so anything the kernel holds it
can reach (Python objects, memory). The forwarder is started *before* the kernel enters the
sandbox, so it is outside it; it alone holds the API key and reaches the network. The kernel talks
plain HTTP to it on 127.0.0.1 with a per-kernel token instead of the key, and the sandbox lets the
kernel connect to that one port only. So model code

- never sees the provider key (the kernel never has it),
- reaches only the model endpoint's host (the forwarder's upstream is fixed), and there only the
  OpenAI-compatible paths the kernel uses (``/chat/completions``, ``/models``),
- needs no DNS and no UDP (the forwarder resolves names).

Other local users cannot borrow the key through the forwarder: every request must carry the
token. The forwarder exits when the kernel does (``PR_SET_PDEATHSIG``, and its stdin closes); it
runs in a session of its own, so a forced shutdown that kills the kernel's process group does not
kill it first. On its way out it removes the sandbox's private temporary folder, which the kernel
cannot (removing a folder of ``/tmp`` is a right the sandbox withholds). A kernel with no endpoint
(the scripted model) still gets one, for that last job only.

Protocol: the forwarder inherits a listening socket (its fd number is ``argv[1]``; ``-1``: none)
and reads one JSON line on stdin: ``{"upstream": base_url, "key": api_key, "token": token,
"cleanup": folder}``; a later line ``{"key": ...}`` replaces the key (``%rlm config api_key`` in
the sandboxed kernel).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

__all__ = ["Forwarder", "start", "FORWARDED_PATHS"]

FORWARDED_PATHS = ("/chat/completions", "/models")
_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade", b"trailer",
        b"proxy-connection", b"proxy-authorization", b"proxy-authenticate", b"host",
        b"content-length", b"authorization"}
_MAX_HEAD = 64 * 1024
_MAX_IDLE = 64  # kept-alive connections to the endpoint
_PR_SET_PDEATHSIG = 1
# What the forwarder passes on from the kernel's environment: TLS trust and proxies only.
_ENV = ("PATH", "PYTHONPATH", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "https_proxy",
        "http_proxy", "all_proxy", "no_proxy")


@dataclass
class Forwarder:
    """The kernel's side: where to send requests, and with which token (``url`` is empty when
    there is no endpoint to forward to)."""

    url: str  # http://127.0.0.1:PORT/<upstream path>: the kernel's base_url
    port: int
    token: str  # the kernel's "API key"
    upstream: str
    process: subprocess.Popen[bytes]
    control: IO[bytes]

    def set_key(self, key: str) -> None:
        self.control.write(json.dumps({"key": key}).encode() + b"\n")
        self.control.flush()


def start(upstream: str, key: str, *, cleanup: str = "") -> Forwarder:
    """Start the forwarder for ``upstream`` (a base URL; empty: none) holding ``key``, and
    removing the folder ``cleanup`` when it exits. It makes no thread in this process."""
    listener = None
    path = ""
    if upstream:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the model endpoint {upstream!r} is not an http(s) URL")
        path = parts.path.rstrip("/")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(256)
    port = int(listener.getsockname()[1]) if listener else 0
    token = "rlm-sandbox-" + secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if k in _ENV}
    fd = listener.fileno() if listener else -1
    try:
        # By file, not ``-m``: it needs only the standard library (and httpx2 for TLS), not the
        # whole package, so it is up sooner.
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(fd)],
                                stdin=subprocess.PIPE, pass_fds=[fd] if listener else [],
                                env=env, start_new_session=True)
    finally:
        if listener:
            listener.close()  # the forwarder has its own copy
    assert proc.stdin is not None
    config = {"upstream": upstream, "key": key, "token": token, "cleanup": cleanup}
    proc.stdin.write(json.dumps(config).encode() + b"\n")
    proc.stdin.flush()
    return Forwarder(url=f"http://127.0.0.1:{port}{path}" if listener else "", port=port,
                     token=token, upstream=upstream, process=proc, control=proc.stdin)


# ------------------------------------------------------------------------ the forwarder process


class _State:
    def __init__(self, config: dict[str, str]) -> None:
        self.upstream = config["upstream"].rstrip("/")
        self.prefix = urlsplit(self.upstream).path.rstrip("/")
        self.key = config.get("key", "")
        self.token = config["token"].encode()
        self.origin = _Origin(self.upstream)


class _Origin:
    """HTTP/1.1 keep-alive connections to the model endpoint, plain or TLS.

    Lean on purpose: httpx's client costs milliseconds of CPU per request, which at 64 calls in
    flight made the forwarder the bottleneck. Behind a proxy (``HTTPS_PROXY``...) it uses httpx,
    which knows how to tunnel.
    """

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        self.netloc = (parts.netloc.rsplit("@", 1)[-1]).encode()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.ssl: Any = None
        self.proxied: Any = None
        import urllib.request

        if urllib.request.getproxies() and not urllib.request.proxy_bypass(self.host):
            import httpx2

            self.proxied = httpx2.AsyncClient(timeout=httpx2.Timeout(None, connect=30.0),
                                              limits=httpx2.Limits(max_connections=None))
        elif self.tls:
            import httpx2

            self.ssl = httpx2.create_ssl_context()  # the trust store the openai client uses

    async def send(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                   body: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
        """One exchange: (status, reason, headers, body). Raises OSError/ValueError on failure."""
        if self.proxied is not None:
            scheme = "https" if self.tls else "http"
            r = await self.proxied.request(method.decode(), f"{scheme}://{self.netloc.decode()}"
                                           f"{target.decode('latin-1')}", headers=headers,
                                           content=body)
            return (r.status_code, r.reason_phrase.encode("latin-1"),
                    [kv for kv in r.headers.raw if kv[0].lower() != b"content-encoding"],
                    r.content)
        for attempt in (0, 1):
            fresh = not self.idle
            conn = self.idle.pop() if self.idle else await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self.ssl,
                                        server_hostname=self.host if self.tls else None), 30)
            try:
                result, reusable = await self._exchange(conn, method, target, headers, body)
            except (OSError, ValueError, asyncio.IncompleteReadError):
                conn[1].close()
                if fresh or attempt:
                    raise
                continue  # a kept-alive connection the server had closed: one fresh try
            except BaseException:
                conn[1].close()
                raise
            if reusable and len(self.idle) < _MAX_IDLE:
                self.idle.append(conn)
            else:
                conn[1].close()
            return result
        raise AssertionError("unreachable")

    async def _exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                        method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                        body: bytes) -> tuple[tuple[int, bytes, list[tuple[bytes, bytes]], bytes], bool]:
        reader, writer = conn
        head = [b"%s %s HTTP/1.1" % (method, target), b"host: " + self.netloc,
                b"content-length: %d" % len(body)]
        head += [name + b": " + value for name, value in headers]
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        status_line = (await reader.readuntil(b"\r\n")).rstrip()
        version, status, *reason = status_line.split(b" ", 2)
        if not version.startswith(b"HTTP/1."):
            raise ValueError(f"not an HTTP/1.1 answer: {status_line[:60]!r}")
        out: list[tuple[bytes, bytes]] = []
        length, chunked, close = None, False, version == b"HTTP/1.0"
        while line := (await reader.readuntil(b"\r\n")).rstrip(b"\r\n"):
            name, _, value = line.partition(b":")
            name, value = name.strip(), value.strip()
            low = name.lower()
            if low == b"content-length":
                length = int(value)
            elif low == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif low == b"connection":
                close = close or value.lower() == b"close"
            out.append((name, value))
        code = int(status)
        if method == b"HEAD" or code in (204, 304) or code < 200:
            data = b""
        elif chunked:
            pieces = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
                pieces.append(await reader.readexactly(size))
                await reader.readuntil(b"\r\n")
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            data = b"".join(pieces)
        elif length is not None:
            data = await reader.readexactly(length)
        else:
            data, close = await reader.read(), True
        return (code, reason[0] if reason else b"", out, data), not close


def _reply(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    body = json.dumps({"error": {"message": message, "type": "rlm_sandbox"}}).encode()
    writer.write(b"HTTP/1.1 %d Error\r\ncontent-type: application/json\r\ncontent-length: %d"
                 b"\r\nconnection: close\r\n\r\n%s" % (status, len(body), body))


async def _serve(state: _State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head[:-4].split(b"\r\n")
            try:
                method, target, _version = lines[0].split(b" ", 2)
            except ValueError:
                return _reply(writer, 400, "malformed request line")
            headers: list[tuple[bytes, bytes]] = []
            length, close, auth = 0, False, b""
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                low, value = name.strip().lower(), value.strip()
                if low == b"content-length":
                    length = int(value)
                elif low == b"transfer-encoding":
                    return _reply(writer, 411, "send a content-length")
                elif low == b"connection":
                    close = value.lower() == b"close"
                elif low == b"authorization":
                    auth = value
                if low not in _HOP:
                    headers.append((name.strip(), value))
            if not secrets.compare_digest(auth, b"Bearer " + state.token):
                return _reply(writer, 401, "not the sandboxed kernel's token")  # body unread
            body = await reader.readexactly(length) if length else b""
            path = target.decode("latin-1").split("?", 1)[0]
            if not (path.startswith(state.prefix + "/") and
                    path[len(state.prefix):].rstrip("/") in FORWARDED_PATHS):
                return _reply(writer, 403, f"the sandbox forwards only {', '.join(FORWARDED_PATHS)}"
                                           f" under {state.prefix or '/'}")
            if state.key:
                headers.append((b"authorization", b"Bearer " + state.key.encode()))
            if not await _exchange(state, method, target, headers, body, reader, writer) or close:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def _exchange(state: _State, method: bytes, target: bytes,
                    headers: list[tuple[bytes, bytes]], body: bytes,
                    reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Send one request upstream and relay its response; False: close the connection."""
    sending = asyncio.ensure_future(state.origin.send(method, target, headers, body))
    # The kernel sends nothing until the response is complete (no pipelining), so anything read
    # now is a hang-up (a cancelled call, Stop): then the upstream call is cancelled too.
    hangup = asyncio.ensure_future(reader.read(1))
    try:
        done, _ = await asyncio.wait({sending, hangup}, return_when=asyncio.FIRST_COMPLETED)
        if sending not in done:
            return False
        try:
            status, reason, out, data = sending.result()
        except Exception as exc:  # noqa: BLE001 - any failure upstream is the caller's 502
            _reply(writer, 502, f"the sandbox's forwarder could not reach the model endpoint: "
                                f"{type(exc).__name__}: {exc}")
            return False
        head = [b"HTTP/1.1 %d %s" % (status, reason), b"content-length: %d" % len(data)]
        head += [name + b": " + value for name, value in out if name.lower() not in _HOP]
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + data)
        await writer.drain()
        return not hangup.done()
    finally:
        for task in (sending, hangup):
            if not task.done():
                task.cancel()
        await asyncio.gather(sending, hangup, return_exceptions=True)


async def _main(listener: socket.socket | None, stdin: Any, config: dict[str, str]) -> None:
    loop = asyncio.get_running_loop()
    control = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(control), stdin)
    config.update(json.loads(await control.readline()))
    server, state = None, None
    if listener is not None:
        state = _State(config)
        server = await asyncio.start_server(lambda r, w: _serve(state, r, w), sock=listener,
                                            limit=_MAX_HEAD)
    try:
        while line := await control.readline():  # EOF: the kernel is gone
            with contextlib.suppress(ValueError, KeyError, TypeError):
                key = str(json.loads(line)["key"])
                if state is not None:
                    state.key = key
    finally:
        if server is not None:
            server.close()


def _exit(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the kernel's interrupts are not for us
    signal.signal(signal.SIGTERM, _exit)  # the kernel died (or a shutdown): clean up, then go
    libc = ctypes.CDLL(None)
    if hasattr(libc, "prctl"):  # Linux: told when the kernel dies (its closed stdin says so too)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    fd = int(sys.argv[1])
    listener = socket.socket(fileno=fd) if fd >= 0 else None
    config: dict[str, str] = {}
    try:
        with open(0, "rb", buffering=0, closefd=False) as stdin:
            asyncio.run(_main(listener, stdin, config))
    finally:
        if config.get("cleanup"):
            shutil.rmtree(config["cleanup"], ignore_errors=True)


if __name__ == "__main__":
    main()
