"""A lean HTTP/1.1 keep-alive transport for httpx2, used under the openai client.

Why: httpx2's default transport (httpcore over anyio) spends about 1.5 ms of CPU per request in
pool bookkeeping, socket probes and layered stream wrappers; at 64 calls in flight that alone keeps
the loop thread from sustaining the request rate a server allows. See :class:`Http11Transport`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx2

__all__ = ["Http11Transport", "fast_transport_ok"]


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection: a byte buffer filled by the event loop."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[bool] | None = None
        self.closed = False
        self._writable: asyncio.Future[None] | None = None  # set while the transport is paused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(True)
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    async def send(self, head: bytes, body: bytes, request: httpx2.Request) -> None:
        """Write a request; a large body goes in slices, each once the socket took the last.

        Why: handed over whole, the unsent part of a multi-megabyte prompt is copied into the
        transport's buffer, so every call in flight would hold its body twice.
        """
        assert self.transport is not None
        if len(body) <= _SLICE:
            self.transport.write(head + body)
            return
        self.transport.write(head)
        view = memoryview(body)
        for start in range(0, len(body), _SLICE):
            if self._writable is not None:
                await self._writable
            if self.closed:
                raise httpx2.WriteError("the server closed the connection", request=request)
            self.transport.write(view[start:start + _SLICE])

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def _more(self, timeout: float | None, request: httpx2.Request) -> None:
        if self.closed:
            raise httpx2.RemoteProtocolError("the server closed the connection", request=request)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self.waiter = fut
        timer = loop.call_later(timeout, _expire, fut) if timeout else None
        try:
            got = await fut
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()
        if not got:
            raise httpx2.ReadTimeout(f"no data from the server within {timeout:g} s",
                                     request=request)

    async def readline(self, timeout: float | None, request: httpx2.Request) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return line
            if len(self.buf) > 65536:
                raise httpx2.RemoteProtocolError("response header line too long", request=request)
            await self._more(timeout, request)

    async def readexactly(self, n: int, timeout: float | None, request: httpx2.Request) -> bytes:
        while len(self.buf) < n:
            await self._more(timeout, request)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


#: Request bodies above this are written in slices of this size (``_Connection.send``).
_SLICE = 256 * 1024


def _expire(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


class Http11Transport(httpx2.AsyncBaseTransport):
    """A lean HTTP/1.1 keep-alive transport for httpx2, used under the openai client.

    Why: the default transport (httpcore over anyio) spends about 1.5 ms of CPU per request in
    pool bookkeeping, socket probes and layered stream wrappers; at 64 calls in flight that alone
    keeps the loop thread from sustaining the request rate the server allows. This one writes the
    request httpx2 built (headers, body) and reads the response (Content-Length or chunked) on an
    asyncio protocol; httpx2 still decodes the body, openai still does retries, errors, headers.
    Timeouts raise httpx2's exceptions, so the client's retries treat them as before. A
    connection is reused only after a complete response; a cancelled or failed exchange closes it.
    Not used for proxies (:func:`fast_transport_ok`) or a caller-supplied transport.
    """

    def __init__(self, max_idle: int) -> None:
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._max_idle = max_idle
        self._ssl: Any = None
        self._closed = False

    def _ssl_context(self) -> Any:
        if self._ssl is None:
            self._ssl = httpx2.create_ssl_context()
        return self._ssl

    async def _connect(self, scheme: str, host: str, port: int, timeout: float | None,
                       request: httpx2.Request) -> _Connection:
        loop = asyncio.get_running_loop()
        ssl = self._ssl_context() if scheme == "https" else None
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(
                _Connection, host, port, ssl=ssl, server_hostname=host if ssl else None), timeout)
        except TimeoutError:
            raise httpx2.ConnectTimeout(f"could not connect within {timeout:g} s",
                                        request=request) from None
        except OSError as exc:
            raise httpx2.ConnectError(str(exc), request=request) from None
        return conn

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        scheme = url.scheme
        port = url.port or (443 if scheme == "https" else 80)
        key = (scheme, url.host, port)
        timeouts = request.extensions.get("timeout") or {}
        read_timeout = timeouts.get("read")
        idle = self._idle.setdefault(key, [])
        conn: _Connection | None = None
        while idle:
            candidate = idle.pop()
            if not candidate.closed and not candidate.buf:
                conn = candidate
                break
            candidate.close()
        if conn is None:
            conn = await self._connect(scheme, url.host, port, timeouts.get("connect"), request)
        try:
            body = await request.aread()
            head = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), url.raw_path)]
            head += [b"%s: %s" % kv for kv in request.headers.raw]
            await conn.send(b"\r\n".join(head) + b"\r\n\r\n", body, request)
            status_line = await conn.readline(read_timeout, request)
            parts = status_line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise httpx2.RemoteProtocolError(f"bad status line {status_line[:80]!r}",
                                                 request=request)
            status = int(parts[1])
            headers: list[tuple[bytes, bytes]] = []
            length: int | None = None
            chunked = close = False
            while True:
                line = await conn.readline(read_timeout, request)
                if not line:
                    break
                name, _, value = line.partition(b":")
                name, value = name.strip(), value.strip()
                headers.append((name, value))
                low = name.lower()
                if low == b"content-length":
                    length = int(value)
                elif low == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif low == b"connection":
                    close = value.lower() == b"close"
            if parts[0] == b"HTTP/1.0":
                close = True
            stream: httpx2.AsyncByteStream
            if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
                stream = httpx2.ByteStream(b"")
            elif chunked:
                # Read as it arrives (a streamed answer's events, live); the connection is
                # released by the body: reused after its last chunk, closed if abandoned.
                stream = _ChunkedBody(self, key, conn, read_timeout, request, close)
            elif length is not None:
                stream = httpx2.ByteStream(await conn.readexactly(length, read_timeout, request))
            else:  # body delimited by the end of the connection
                while not conn.closed:
                    await conn._more(read_timeout, request)
                stream, close = httpx2.ByteStream(bytes(conn.buf)), True
        except BaseException:
            conn.close()  # unknown state (cancelled, timed out, malformed): never reuse it
            raise
        if not isinstance(stream, _ChunkedBody):
            self.release(key, conn, reuse=not close)
        return httpx2.Response(status, headers=headers, stream=stream, request=request,
                               extensions={"http_version": b"HTTP/1.1"})

    def release(self, key: tuple[str, str, int], conn: _Connection, *, reuse: bool) -> None:
        """Keep a connection whose exchange completed for the next request, or close it."""
        idle = self._idle.setdefault(key, [])
        if reuse and not conn.closed and not conn.buf and not self._closed \
                and len(idle) < self._max_idle:
            idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


class _ChunkedBody(httpx2.AsyncByteStream):
    """A chunked response body handed over chunk by chunk as it arrives.

    Why: a streamed chat completion is read event by event (live prose, and a reader that stops
    early). Closing the body before its end closes the connection, which is what tells a server
    such as llama.cpp's to stop generating; a body read to its end gives the connection back.
    """

    def __init__(self, transport: Http11Transport, key: tuple[str, str, int], conn: _Connection,
                 timeout: float | None, request: httpx2.Request, close: bool) -> None:
        self._transport, self._key, self._conn = transport, key, conn
        self._timeout, self._request, self._close = timeout, request, close
        self._complete = False
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn, timeout, request = self._conn, self._timeout, self._request
        try:
            while True:
                size = int((await conn.readline(timeout, request)).split(b";", 1)[0], 16)
                if size == 0:
                    while await conn.readline(timeout, request):
                        pass  # trailers
                    self._complete = True
                    return
                data = await conn.readexactly(size, timeout, request)
                await conn.readline(timeout, request)
                yield data
        except BaseException:
            conn.close()
            raise

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._transport.release(self._key, self._conn,
                                    reuse=self._complete and not self._close)


def fast_transport_ok() -> bool:
    """The lean transport knows no proxies: use httpx2's own when the environment sets one
    (``HTTP(S)_PROXY`` / ``ALL_PROXY``, read the standard library's way)."""
    import urllib.request

    proxies = urllib.request.getproxies()
    return not any(proxies.get(k) for k in ("http", "https", "all"))
