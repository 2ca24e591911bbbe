"""The model client: ``openai.AsyncOpenAI`` on a background loop, behind limits and a cache.

Every call — root or sub, from a cell or from the engine — goes through :meth:`LMClient.acomplete`
on the background loop, so one concurrency limit, one rate limit, one cache and one usage ledger
govern the whole run tree. Identical calls in flight at the same moment share one request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx2
from asyncio_throttle import Throttler

from ..config import RLMConfig, redact
from ..errors import ModelCallError, ReplayMissError, RunStopped
from ..trajectory import Usage
from .cache import ResponseCache, cache_key
from .loop import BackgroundLoop
from .usage import UsageLedger

if TYPE_CHECKING:
    import openai

__all__ = ["LMClient", "Completion"]

SCRIPTED_BASE_URL = "http://scripted.invalid/v1"


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
        limits = httpx2.Limits(
            max_connections=cfg.concurrency + 8, max_keepalive_connections=cfg.concurrency + 8
        )
        http = httpx2.AsyncClient(
            transport=transport,  # None: a real network transport
            limits=limits,
            timeout=httpx2.Timeout(cfg.call_timeout, connect=min(10.0, cfg.call_timeout)),
            event_hooks={"request": [self._on_request]},
        )
        self._http = http
        self._client = openai.AsyncOpenAI(
            api_key=cfg.api_key or ("scripted-no-key" if cfg.scripted else "not-needed"),
            base_url=self.base_url or None,
            max_retries=cfg.max_retries,
            timeout=cfg.call_timeout,
            http_client=http,
        )
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
    ) -> Completion:
        """One chat completion on the background loop (await it there, or use :meth:`complete`)."""
        if self._stopped:
            raise RunStopped("the run was stopped; no new model calls start")
        params = self.params(root=root)
        key = cache_key(model, messages, params)
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
            result = await self._call(messages, model=model, depth=depth, params=params, key=key)
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
                    params: dict[str, Any], key: str) -> Completion:
        import openai

        async with self._sem:
            if self._throttle is not None:
                async with self._throttle:
                    pass
            if self._tokens is not None:
                await self._tokens.acquire(sum(len(str(m.get("content", ""))) for m in messages) // 4)
            if self._stopped:
                raise RunStopped("the run was stopped; no new model calls start")
            if self.on_call_start is not None:
                self.on_call_start()
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            started = time.perf_counter()
            try:
                resp = await self._client.chat.completions.create(
                    model=model, messages=messages, **params  # type: ignore[arg-type]
                )
            except openai.APIError as exc:
                self.ledger.note_failure()
                raise ModelCallError(self._explain(exc, model)) from None
            finally:
                self.in_flight -= 1
            latency = time.perf_counter() - started
        text = (resp.choices[0].message.content or "") if resp.choices else ""
        u = resp.usage
        prompt = getattr(u, "prompt_tokens", 0) or 0
        completion = getattr(u, "completion_tokens", 0) or 0
        details = getattr(u, "prompt_tokens_details", None)
        cached = (getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
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
                 root: bool = False) -> Completion:
        """Blocking form for synchronous code (a cell's ``llm()``); interrupt-aware."""
        return self.loop.run(self.acomplete(messages, model=model, depth=depth, root=root))

    async def acomplete_many(
        self, batch: list[list[dict[str, Any]]], *, model: str, depth: int,
        on_done: Callable[[int, Completion | BaseException], None] | None = None,
    ) -> list[Completion | BaseException]:
        """All calls at once (the semaphore bounds them); one failure does not cancel the rest."""

        async def one(i: int, msgs: list[dict[str, Any]]) -> Completion | BaseException:
            try:
                res: Completion | BaseException = await self.acomplete(msgs, model=model, depth=depth)
            except (ModelCallError, ReplayMissError, RunStopped) as exc:
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
            await self._client.close()

        with contextlib.suppress(Exception):
            self.loop.run(_close())
        if self._owns_loop:
            self.loop.close()
