"""The model client: ``openai.AsyncOpenAI`` on a background loop, behind limits and a cache.

Every call — root or sub, from a cell or from the engine — goes through :meth:`LMClient.acomplete`
on the background loop, so one concurrency limit, one rate limit, one cache and one usage ledger
govern the whole run tree. Identical calls in flight at the same moment share one request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx2
from asyncio_throttle import Throttler

from ..config import RLMConfig, redact
from ..errors import BudgetExceeded, ModelCallError, ReplayMissError, RunStopped
from ..trajectory import Usage
from .cache import ResponseCache, cache_key
from .loop import BackgroundLoop
from .usage import UsageLedger

if TYPE_CHECKING:
    import openai

__all__ = ["LMClient", "Completion"]

SCRIPTED_BASE_URL = "http://scripted.invalid/v1"


#: Connections per httpx pool (see ``_setup``).
_CONNECTIONS_PER_POOL = 8


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def _loads(content: bytes) -> dict[str, Any]:
    data = json.loads(content)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data


def _read_completion(data: dict[str, Any]) -> tuple[str, int, int, int]:
    """``(text, prompt, completion, cached tokens)`` of a chat-completion body, read leniently
    (as the SDK's non-validating parse does: missing or null fields count as empty / zero)."""
    choices = data.get("choices") or ()
    text = ""
    if choices and isinstance(choices[0], dict):
        message = choices[0].get("message") or {}
        text = (message.get("content") if isinstance(message, dict) else None) or ""
    u = data.get("usage") or {}
    if not isinstance(u, dict):
        u = {}
    details = u.get("prompt_tokens_details") or {}
    cached = (details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    return str(text), int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0), int(cached)


@dataclass
class Completion:
    text: str
    model: str
    usage: Usage
    latency_s: float
    cache_key: str
    cached: bool


class _TokenWindow:
    """Sliding one-minute window of estimated prompt tokens (asyncio-throttle counts requests only)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._events: deque[tuple[float, int]] = deque()
        self._used = 0
        self._lock = asyncio.Lock()

    async def acquire(self, tokens: int) -> None:
        tokens = min(tokens, self.per_minute)
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._events and now - self._events[0][0] >= 60:
                    self._used -= self._events.popleft()[1]
                if self._used + tokens <= self.per_minute:
                    self._events.append((now, tokens))
                    self._used += tokens
                    return
                await asyncio.sleep(max(0.05, 60 - (now - self._events[0][0])))


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


class _Http11Transport(httpx2.AsyncBaseTransport):
    """A lean HTTP/1.1 keep-alive transport for httpx2, used under the openai client.

    Why: the default transport (httpcore over anyio) spends about 1.5 ms of CPU per request in
    pool bookkeeping, socket probes and layered stream wrappers; at 64 calls in flight that alone
    keeps the loop thread from sustaining the request rate the server allows. This one writes the
    request httpx2 built (headers, body) and reads the response (Content-Length or chunked) on an
    asyncio protocol; httpx2 still decodes the body, openai still does retries, errors, headers.
    Timeouts raise httpx2's exceptions, so the client's retries treat them as before. A
    connection is reused only after a complete response; a cancelled or failed exchange closes it.
    Not used for proxies (``_fast_transport_ok``) or a caller-supplied transport.
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
            if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
                content = b""
            elif chunked:
                pieces = []
                while True:
                    size = int((await conn.readline(read_timeout, request)).split(b";", 1)[0], 16)
                    if size == 0:
                        while await conn.readline(read_timeout, request):
                            pass  # trailers
                        break
                    pieces.append(await conn.readexactly(size, read_timeout, request))
                    await conn.readline(read_timeout, request)
                content = b"".join(pieces)
            elif length is not None:
                content = await conn.readexactly(length, read_timeout, request)
            else:  # body delimited by the end of the connection
                while not conn.closed:
                    await conn._more(read_timeout, request)
                content, close = bytes(conn.buf), True
        except BaseException:
            conn.close()  # unknown state (cancelled, timed out, malformed): never reuse it
            raise
        if close or self._closed or len(idle) >= self._max_idle:
            conn.close()
        else:
            idle.append(conn)
        return httpx2.Response(status, headers=headers, stream=httpx2.ByteStream(content),
                               request=request, extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


def _fast_transport_ok() -> bool:
    """The lean transport knows no proxies: use httpx2's own when the environment sets one."""
    from httpx2._utils import get_environment_proxies

    try:
        return not any(get_environment_proxies().values())
    except Exception:  # noqa: BLE001 - when in doubt, the standard transport
        return False


class LMClient:
    """Async OpenAI-compatible client with concurrency and rate limits, cache and usage ledger."""

    def __init__(
        self,
        config: RLMConfig,
        *,
        cache: ResponseCache | None = None,
        ledger: UsageLedger | None = None,
        loop: BackgroundLoop | None = None,
        cache_only: bool = False,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.cache = cache if cache is not None else ResponseCache()
        self.ledger = ledger if ledger is not None else UsageLedger(config.prices)
        self.loop = loop or BackgroundLoop()
        self._owns_loop = loop is None
        self.cache_only = cache_only
        self.base_url = config.base_url or (SCRIPTED_BASE_URL if config.scripted else "")
        self._transport = transport
        self._stopped = False
        self._inflight: set[asyncio.Task[Any]] = set()
        self._pending: dict[str, asyncio.Future[Completion]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.on_call_start: Callable[[], None] | None = None
        self.loop.run(self._setup())

    async def _setup(self) -> None:
        import openai  # here, not at module import: its types cost ~1.5 s of kernel start-up

        cfg = self.config
        transport = self._transport
        if transport is None and cfg.scripted:
            from ..scripted import ScriptedModel, ScriptedTransport

            latency = cfg.scripted_latency or 0.0
            transport = ScriptedTransport(ScriptedModel(latency=latency))
        # The lean transport when we may (see _Http11Transport). Otherwise httpx2's own, as
        # several small connection pools instead of one big one: httpcore's pool re-examines
        # every idle connection (a socket probe each) whenever a request enters or leaves it, so
        # its CPU per request grows with the pool size. Each call takes the least-busy pool;
        # with at most `concurrency` calls in flight, no pool ever needs more than `size`.
        fast = transport is None and cfg.fast_transport and _fast_transport_ok()
        n_pools = 1 if transport is not None or fast else -(-cfg.concurrency // _CONNECTIONS_PER_POOL)
        size = -(-cfg.concurrency // n_pools) + 2
        limits = httpx2.Limits(max_connections=size, max_keepalive_connections=size)
        self._clients: list[openai.AsyncOpenAI] = []
        for _ in range(n_pools):
            http = httpx2.AsyncClient(
                transport=_Http11Transport(cfg.concurrency + 8) if fast else transport,
                limits=limits,
                timeout=httpx2.Timeout(cfg.call_timeout, connect=min(10.0, cfg.call_timeout)),
                event_hooks={"request": [self._on_request]},
            )
            self._clients.append(openai.AsyncOpenAI(
                api_key=cfg.api_key or ("scripted-no-key" if cfg.scripted else "not-needed"),
                base_url=self.base_url or None,
                max_retries=cfg.max_retries,
                timeout=cfg.call_timeout,
                http_client=http,
            ))
        self._client = self._clients[0]
        self._load = [0] * n_pools
        self._sem = asyncio.Semaphore(cfg.concurrency)
        self._throttle = (
            Throttler(rate_limit=cfg.requests_per_minute, period=60.0)
            if cfg.requests_per_minute > 0 else None
        )
        self._tokens = _TokenWindow(cfg.tokens_per_minute) if cfg.tokens_per_minute > 0 else None

    async def _on_request(self, request: httpx2.Request) -> None:
        self.ledger.note_attempt()

    # -- parameters ---------------------------------------------------------------------------
    def params(self, *, root: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.config.temperature >= 0:
            out["temperature"] = self.config.temperature
        if root and self.config.root_max_tokens > 0:
            out["max_tokens"] = self.config.root_max_tokens
        return out

    def key_for(self, messages: list[dict[str, Any]], model: str, root: bool = False) -> str:
        return cache_key(model, messages, self.params(root=root))

    # -- calls ---------------------------------------------------------------------------------
    async def acomplete(
        self, messages: list[dict[str, Any]], *, model: str, depth: int, root: bool = False,
        key: str | None = None, precheck: Callable[[], None] | None = None,
    ) -> Completion:
        """One chat completion on the background loop (await it there, or use :meth:`complete`).

        ``key``: the cache key when the caller already computed it (:meth:`key_for`), so a large
        prompt is serialised and hashed once per call, not twice. ``precheck``: called when the
        call has its concurrency slot, just before it is sent (a run's budgets: a big batch stops
        sending once the budget is spent, instead of every queued call going out); what it raises
        is the call's outcome.
        """
        if self._stopped:
            raise RunStopped("the run was stopped; no new model calls start")
        params = self.params(root=root)
        key = key or cache_key(model, messages, params)
        if self.config.cache or self.cache_only:
            hit = self.cache.get(key)
            if hit is not None:
                self.ledger.note_cache_hit()
                return Completion(hit, model, Usage(), 0.0, key, True)
        if self.cache_only:
            raise ReplayMissError(
                f"replay has no recorded response for this {'root' if root else 'sub'}-call "
                f"(model {model!r}, key {key}); the trajectory's code or context differs from the "
                "recording. Run it live (with a model) to continue past this point."
            )
        # In-flight dedup is response reuse too: with cache=False identical calls stay independent
        # (a user sampling several answers to one prompt asked for that).
        dedup = self.config.cache
        shared = self._pending.get(key) if dedup else None
        if shared is not None:
            done = await asyncio.shield(shared)
            return Completion(done.text, model, Usage(), 0.0, key, True)
        fut: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        if dedup:
            self._pending[key] = fut
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            result = await self._call(messages, model=model, depth=depth, params=params, key=key,
                                      precheck=precheck)
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc if isinstance(exc, Exception) else RunStopped("cancelled"))
                fut.exception()  # mark retrieved: a lone waiter-less failure is not an error
            raise
        else:
            fut.set_result(result)
            if self.config.cache:
                self.cache.put(key, result.text)
            return result
        finally:
            if self._pending.get(key) is fut:
                del self._pending[key]
            if task is not None:
                self._inflight.discard(task)

    async def _call(self, messages: list[dict[str, Any]], *, model: str, depth: int,
                    params: dict[str, Any], key: str,
                    precheck: Callable[[], None] | None = None) -> Completion:
        import openai

        async with self._sem:
            if self._throttle is not None:
                async with self._throttle:
                    pass
            if self._tokens is not None:
                await self._tokens.acquire(sum(len(str(m.get("content", ""))) for m in messages) // 4)
            if self._stopped:
                raise RunStopped("the run was stopped; no new model calls start")
            if precheck is not None:
                precheck()
            if self.on_call_start is not None:
                self.on_call_start()
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            load = self._load
            pool = min(range(len(load)), key=load.__getitem__) if len(load) > 1 else 0
            load[pool] += 1
            started = time.perf_counter()
            try:
                # Through the openai client (its retries with backoff on 429/5xx/timeouts, its
                # error classes, its headers), but with the body serialised once here and the
                # answer read as plain JSON: the SDK's per-request transform of the messages and
                # its pydantic parse of the response cost milliseconds of CPU per call.
                raw = await self._clients[pool].post(
                    "/chat/completions", cast_to=httpx2.Response,
                    content=_dumps({"model": model, "messages": messages, **params}),
                )  # Content-Type: application/json is among the client's default headers
                data = _loads(raw.content)
            except openai.APIError as exc:
                self.ledger.note_failure()
                raise ModelCallError(self._explain(exc, model)) from None
            except ValueError as exc:  # not JSON: the endpoint is not OpenAI-compatible
                self.ledger.note_failure()
                raise ModelCallError(redact(
                    f"{self.base_url or 'the OpenAI API'} answered HTTP 200 with a body that is "
                    f"not a chat completion ({exc}); check OPENAI_BASE_URL / --base-url")) from None
            finally:
                self.in_flight -= 1
                load[pool] -= 1
            latency = time.perf_counter() - started
        text, prompt, completion, cached = _read_completion(data)
        usage = self.ledger.usage_for(model, prompt, completion, cached)
        self.ledger.record(model, depth, usage)
        return Completion(text, model, usage, latency, key, False)

    def _explain(self, exc: openai.APIError, model: str) -> str:
        import openai

        where = self.base_url or "the OpenAI API"
        retries = self.config.max_retries
        if isinstance(exc, openai.NotFoundError):
            msg = (f"model {model!r} was not found at {where} (HTTP 404); check --model / "
                   "RLM_MODEL / RLM_SUB_MODEL against the models your endpoint serves")
        elif isinstance(exc, openai.AuthenticationError):
            msg = f"{where} rejected the API key (HTTP 401); check OPENAI_API_KEY"
        elif isinstance(exc, openai.RateLimitError):
            msg = (f"{where} kept rate-limiting (HTTP 429) after {retries} retries; lower "
                   "--concurrency or set requests_per_minute")
        elif isinstance(exc, openai.APITimeoutError):
            msg = (f"{where} did not answer within {self.config.call_timeout:g} s, "
                   f"{retries + 1} attempts; raise call_timeout or check the server")
        elif isinstance(exc, openai.APIConnectionError):
            msg = (f"could not connect to {where} after {retries + 1} attempts; check "
                   "OPENAI_BASE_URL / --base-url and that the server is running")
        elif isinstance(exc, openai.APIStatusError):
            msg = f"{where} answered HTTP {exc.status_code} after {retries} retries: {exc.message}"
        else:
            msg = f"model call failed: {exc}"
        return redact(msg)

    def complete(self, messages: list[dict[str, Any]], *, model: str, depth: int,
                 root: bool = False, key: str | None = None) -> Completion:
        """Blocking form for synchronous code (a cell's ``llm()``); interrupt-aware."""
        return self.loop.run(self.acomplete(messages, model=model, depth=depth, root=root, key=key))

    async def acomplete_many(
        self, batch: list[list[dict[str, Any]]], *, model: str, depth: int,
        on_done: Callable[[int, Completion | BaseException], None] | None = None,
        keys: list[str] | None = None, precheck: Callable[[], None] | None = None,
    ) -> list[Completion | BaseException]:
        """All calls at once (the semaphore bounds them); one failure does not cancel the rest."""

        async def one(i: int, msgs: list[dict[str, Any]]) -> Completion | BaseException:
            try:
                res: Completion | BaseException = await self.acomplete(
                    msgs, model=model, depth=depth, key=keys[i] if keys else None,
                    precheck=precheck)
            except (ModelCallError, ReplayMissError, RunStopped, BudgetExceeded) as exc:
                res = exc
            if on_done is not None:
                on_done(i, res)
            return res

        tasks = [asyncio.ensure_future(one(i, m)) for i, m in enumerate(batch)]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            raise

    # -- stopping ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Refuse new calls and cancel every call in flight (thread-safe, returns at once)."""
        self._stopped = True

        def cancel() -> None:
            for task in list(self._inflight):
                task.cancel()

        with contextlib.suppress(RuntimeError):
            self.loop.loop.call_soon_threadsafe(cancel)

    def resume(self) -> None:
        self._stopped = False

    @property
    def stopped(self) -> bool:
        return self._stopped

    def close(self) -> None:
        async def _close() -> None:
            for client in self._clients:
                await client.close()

        with contextlib.suppress(Exception):
            self.loop.run(_close())
        if self._owns_loop:
            self.loop.close()
