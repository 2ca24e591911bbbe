"""The model client: ``openai.AsyncOpenAI`` on a background loop, behind limits and a cache.

Every call — root or sub, from a cell or from the engine — goes through :meth:`LMClient.acomplete`
on the background loop, so one concurrency limit, one rate limit, one cache and one usage ledger
govern the whole run tree. Identical calls in flight at the same moment share one request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx2
from asyncio_throttle import Throttler

from ..config import RLMConfig, redact, without_userinfo
from ..errors import (
    AuthenticationFailed,
    BadRequest,
    BudgetExceeded,
    ConfigError,
    ContextWindowExceeded,
    EndpointUnreachable,
    InvalidResponse,
    ModelCallError,
    ModelNotFound,
    ModelTimeout,
    RateLimited,
    ReplayMissError,
    RunStopped,
    ServerError,
)
from ..media import estimate_tokens, key_messages
from ..outputs import clean_text
from ..reasoning import is_reasoning_model, request_params
from ..tool_mode import TOOLS, encode, tools_offered
from ..trajectory import Usage
from .cache import ResponseCache, cache_key
from .http11 import Http11Transport, fast_transport_ok
from .limit import AdaptiveLimit
from .loop import BackgroundLoop
from .stream import StreamReader
from .usage import UsageLedger

if TYPE_CHECKING:
    import openai

__all__ = ["LMClient", "Completion", "window_from_error", "system_dropped"]

log = logging.getLogger("rlm_kernel")

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


def _read_completion(data: dict[str, Any]) -> tuple[str, str | None, dict[str, Any] | None]:
    """``(text, finish reason, usage object)`` of a chat-completion body.

    The text is the whole answer as one string: reasoning sent beside the content
    (``reasoning_content``, vLLM/DeepSeek; ``reasoning``, OpenRouter) goes first as a
    ``<think>`` block, tool calls after it as :func:`~rlm_kernel.tool_mode.encode` writes them,
    so the cache and the notebook keep all of it and the engine splits it apart.

    Raises ValueError when the body is not a usable answer: an error object, no choices, or a
    message with no content and no tool calls (an empty string is a real, if short, answer).
    Usage counts that are missing count as zero; ones that are not whole numbers >= 0 are
    refused, so a broken server cannot make the bill negative or absurd.
    """
    if "error" in data and not data.get("choices"):
        err = data.get("error")
        detail = err.get("message") if isinstance(err, dict) else err
        raise ValueError(f"an error object: {str(detail)[:200]}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise ValueError("the message has no content")
    text = message.get("content")
    calls = [{"name": c["function"].get("name"), "arguments": c["function"].get("arguments")}
             for c in message.get("tool_calls") or []
             if isinstance(c, dict) and isinstance(c.get("function"), dict)]
    if not isinstance(text, str):
        if not calls:
            raise ValueError("the message has no content")
        text = ""
    text = with_reasoning(encode(text, calls),
                          message.get("reasoning_content") or message.get("reasoning"))
    finish = choices[0].get("finish_reason")
    usage = data.get("usage")
    return (clean_text(text), (str(finish) if finish else None),
            (usage if isinstance(usage, dict) else None))


def with_reasoning(text: str, reasoning: Any) -> str:
    """The answer with the reasoning a server sent beside it first, as a ``<think>`` block."""
    if isinstance(reasoning, str) and reasoning.strip():
        return f"<think>\n{reasoning.strip()}\n</think>\n\n{text}"
    return text


def _usage_counts(u: dict[str, Any]) -> tuple[int, int, int]:
    """``(prompt, completion, cached)`` tokens of a usage object (missing counts are zero)."""
    details = u.get("prompt_tokens_details") or {}
    cached = (details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    return _count(u.get("prompt_tokens")), _count(u.get("completion_tokens")), _count(cached)


#: More tokens than any model reads or writes in one call: a count above it is a server bug.
_MAX_TOKENS_PER_CALL = 100_000_000


def _count(value: Any) -> int:
    """A usage count as reported: a whole number (or its digits as a string, as some servers
    send); anything else (negative, absurd, not a number) counts as not reported (0), so a
    broken server can neither fail a good answer nor inflate the bill."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TOKENS_PER_CALL:
        return 0
    return value


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:500]
        if isinstance(inner, str):
            return inner[:500]
    return str(getattr(exc, "message", exc))[:500]


_WINDOW_WORDS = ("context length", "context window", "maximum context", "too many tokens",
                 "exceeds the context", "n_ctx", "context_length_exceeded", "prompt is too long")


def _is_window_error(detail: str) -> bool:
    low = detail.lower()
    return any(w in low for w in _WINDOW_WORDS)


_WINDOW_RE = re.compile(
    r"(?:maximum context length is|context window of|context length of|n_ctx\W{0,3}|"
    r"max_model_len\W{0,3})\s*(\d{3,9})", re.IGNORECASE)


def window_from_error(message: str) -> int | None:
    """The window size a context-overflow message states, e.g. llama.cpp's and vLLM's "This
    model's maximum context length is 2048 tokens", or None when it names none."""
    m = _WINDOW_RE.search(message)
    return int(m.group(1)) if m else None


#: More characters per token than any tokenizer averages on English prose: a prompt whose tokens
#: times this is still below its system message's length cannot have included that message.
_MAX_CHARS_PER_TOKEN = 8


def system_dropped(prompt_tokens: int, system_chars: int) -> bool:
    """A call whose prompt holds a system message of ``system_chars`` characters was counted at
    so few tokens that the message cannot have been in it (0 tokens: nothing to tell)."""
    return prompt_tokens > 0 and prompt_tokens * _MAX_CHARS_PER_TOKEN < system_chars


_PROBE_SYSTEM = ("You are a careful assistant. Answer every question briefly and exactly, in plain "
                 "words, without lists, headings or code unless asked. ") * 6

#: Keys under which OpenAI-compatible servers list a model's window in ``/v1/models``.
_WINDOW_KEYS = ("max_model_len", "context_length", "context_window", "max_context_length",
                "n_ctx", "n_ctx_train")


@dataclass
class Completion:
    text: str
    model: str
    usage: Usage
    latency_s: float
    cache_key: str
    cached: bool
    finish_reason: str | None = None  # "length": cut at the token bound (max_tokens)


class _StreamCut(Exception):
    """A streamed reply ended without a finish reason: interrupted by the server, or failed inside
    the stream (llama.cpp answers 200 and then closes a stream whose prompt overflows)."""

    def __init__(self, events: int, done: bool, detail: str) -> None:
        super().__init__(detail)
        self.events, self.done = events, done


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
    """Async OpenAI-compatible client with concurrency and rate limits, cache and usage ledger.

    One class on purpose: the order of a call's stages (stopped? cache, in-flight dedup, slot,
    rate limits, budget precheck, request, usage, cache fill) is the client's contract, and it
    reads top to bottom in :meth:`acomplete` and :meth:`_call`. The transport is its own module
    (``http11.py``), errors are classes of ``errors.py``, the cache and ledger are their own.
    """

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
        self.where = without_userinfo(self.base_url) or "the OpenAI API"  # for messages
        if config.scripted and transport is None:
            raise ConfigError(
                "no endpoint: set OPENAI_BASE_URL / OPENAI_API_KEY, or build the client with "
                "rlm_kernel.connect.open_client(config), which serves the embedded scripted model")
        self._transport = transport
        self._stopped = False
        self._inflight: set[asyncio.Task[Any]] = set()
        self._pending: dict[str, asyncio.Future[Completion]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.on_call_start: Callable[[], None] | None = None
        # What this endpoint turned out to want, learned from its answers and kept for the
        # client's life: the name of the token bound, whether it takes stream_options, whether
        # streams survive (llama-cpp-python cuts a stream when another request waits), whether
        # it drops system messages (set by the engine, which can tell from usage).
        self.bound_param = "max_tokens"
        self.stream_options = True
        self.streaming = config.stream
        self.cuts_streams = False  # then only a call alone in flight is streamed
        self.system_dropped = False
        self.window: int | None = None  # learned (amodel_window, overflows); the setting wins
        self._window_asked = False
        self.loop.run(self._setup())

    async def _setup(self) -> None:
        import openai  # here, not at module import: its types cost ~1.5 s of kernel start-up

        cfg = self.config
        transport = self._transport
        # The lean transport when we may (see lm/http11.py). Otherwise httpx2's own, as
        # several small connection pools instead of one big one: httpcore's pool re-examines
        # every idle connection (a socket probe each) whenever a request enters or leaves it, so
        # its CPU per request grows with the pool size. Each call takes the least-busy pool;
        # with at most `concurrency` calls in flight, no pool ever needs more than `size`.
        fast = transport is None and cfg.fast_transport and fast_transport_ok()
        n_pools = 1 if transport is not None or fast else -(-cfg.concurrency // _CONNECTIONS_PER_POOL)
        size = -(-cfg.concurrency // n_pools) + 2
        limits = httpx2.Limits(max_connections=size, max_keepalive_connections=size)
        self._clients: list[openai.AsyncOpenAI] = []
        for _ in range(n_pools):
            http = httpx2.AsyncClient(
                transport=Http11Transport(cfg.concurrency + 8) if fast else transport,
                limits=limits,
                timeout=httpx2.Timeout(cfg.call_timeout, connect=min(10.0, cfg.call_timeout)),
                event_hooks={"request": [self._on_request], "response": [self._on_response]},
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
        self._limit = AdaptiveLimit(cfg.concurrency)  # halves on a 429 (lm/limit.py)
        #: (when, message) of the last call that found the endpoint unreachable; None once one
        #: is answered. Calls queued before then fail at once; later calls try again.
        self._down: tuple[float, str] | None = None
        self._throttle = (
            Throttler(rate_limit=cfg.requests_per_minute, period=60.0)
            if cfg.requests_per_minute > 0 else None
        )
        self._tokens = _TokenWindow(cfg.tokens_per_minute) if cfg.tokens_per_minute > 0 else None

    async def _on_request(self, request: httpx2.Request) -> None:
        if request.url.path.endswith("/chat/completions"):  # not the model listing
            self.ledger.note_attempt()

    async def _on_response(self, response: httpx2.Response) -> None:
        """Every attempt's status, retries included (the openai client makes those itself)."""
        if response.status_code == 429:
            self._limit.rate_limited()
            await self._limit.requeue()  # the openai client's retry waits for a slot
        elif response.request.url.path.endswith("/chat/completions"):
            self._limit.succeeded()

    @property
    def concurrency_now(self) -> int:
        """How many calls may be in flight now (the configured concurrency, less after 429s)."""
        return self._limit.limit

    # -- parameters ---------------------------------------------------------------------------
    def params(self, *, root: bool, model: str = "") -> dict[str, Any]:
        """The parameters that make a response (and its cache key), besides model and messages:
        sampling, the root's tools in tool mode, and what reasoning models take
        (``reasoning_effort``) or refuse (``temperature``...: dropped for them). The token bound
        is not among them: it is sent, but a reply it cut is never cached, so raising it asks
        again (and recorded trajectories keep their keys whatever the bound)."""
        cfg = self.config
        out: dict[str, Any] = {}
        if cfg.temperature >= 0:
            out["temperature"] = cfg.temperature
        if root and tools_offered(cfg.mode):
            out["tools"] = TOOLS
        return request_params(model, out, reasoning_model=cfg.reasoning_model,
                              reasoning_effort=cfg.reasoning_effort)

    def bound(self, *, root: bool) -> int:
        """Most tokens a reply may have (0: none sent)."""
        return self.config.root_max_tokens if root else self.config.sub_max_tokens

    def key_for(self, messages: list[dict[str, Any]], model: str, root: bool = False) -> str:
        """The cache key of a call; data-URL images count by their sha256 (``key_messages``),
        so a caller may pass the messages it sends or, cheaper, their hashed form."""
        return cache_key(model, key_messages(messages), self.params(root=root, model=model))

    # -- calls ---------------------------------------------------------------------------------
    async def acomplete(
        self, messages: list[dict[str, Any]], *, model: str, depth: int, root: bool = False,
        key: str | None = None, precheck: Callable[[], None] | None = None,
        max_tokens: int | None = None, on_text: Callable[[str], None] | None = None,
        fresh: bool = False,
    ) -> Completion:
        """One chat completion on the background loop (await it there, or use :meth:`complete`).

        ``key``: the cache key when the caller already computed it (:meth:`key_for`), so a large
        prompt is serialised and hashed once per call, not twice. ``precheck``: called when the
        call has its concurrency slot, just before it is sent (a run's budgets: a big batch stops
        sending once the budget is spent, instead of every queued call going out); what it raises
        is the call's outcome. ``max_tokens``: this call's token bound instead of the configured
        one (the engine lowers it to what the window has left). ``on_text``: called on this loop
        with each piece of text as a streamed reply arrives. ``fresh``: ask the model even if the
        cache holds a response (a human's ``%%llm --fresh``); the new response replaces it.
        """
        if self._stopped:
            raise RunStopped("the run was stopped; no new model calls start")
        params = self.params(root=root, model=model)
        key = key or cache_key(model, key_messages(messages), params)
        if self.cache_only or (self.config.cache and not fresh):
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
        dedup = self.config.cache and not fresh
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
            bound = self.bound(root=root) if max_tokens is None else max_tokens
            result = await self._call(messages, model=model, depth=depth, params=params, key=key,
                                      precheck=precheck, bound=bound, on_text=on_text)
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc if isinstance(exc, Exception) else RunStopped("cancelled"))
                fut.exception()  # mark retrieved: a lone waiter-less failure is not an error
            raise
        else:
            fut.set_result(result)
            if self.config.cache and result.finish_reason != "length":
                self.cache.put(key, result.text)
            return result
        finally:
            if self._pending.get(key) is fut:
                del self._pending[key]
            if task is not None:
                self._inflight.discard(task)

    async def _call(self, messages: list[dict[str, Any]], *, model: str, depth: int,
                    params: dict[str, Any], key: str,
                    precheck: Callable[[], None] | None = None, bound: int = 0,
                    on_text: Callable[[str], None] | None = None) -> Completion:
        import openai

        queued = time.monotonic()
        async with self._limit:
            down = self._down
            if down is not None and down[0] >= queued:
                # Found unreachable (after its retries) while this call waited for a slot: fail
                # it at once instead of retrying into the same dead endpoint, wave after wave.
                self.ledger.note_failure()
                raise EndpointUnreachable(down[1], status_code=None)
            if self._throttle is not None:
                async with self._throttle:
                    pass
            if self._tokens is not None:
                await self._tokens.acquire(estimate_tokens(messages))
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
                text, finish, usage_obj = await self._exchange(
                    pool, {"model": model, "messages": messages, **params}, bound, on_text)
            except openai.APIError as exc:
                self.ledger.note_failure()
                error = self._error(exc, model)
                if isinstance(error, EndpointUnreachable):
                    self._down = (time.monotonic(), str(error))
                raise error from None
            except ModelCallError:
                self.ledger.note_failure()
                raise
            except ValueError as exc:  # not a usable chat completion
                self.ledger.note_failure()
                raise InvalidResponse(redact(
                    f"{self.where} answered HTTP 200 with a body that is "
                    f"not a usable chat completion ({exc}); check OPENAI_BASE_URL / --base-url "
                    "and the server's log"), status_code=200) from None
            finally:
                self.in_flight -= 1
                load[pool] -= 1
            latency = time.perf_counter() - started
        self._down = None  # it answers
        if usage_obj is None:  # honestly unknown, not zero: counted as unreported
            usage = Usage(requests=1, unreported=1)
        else:
            prompt, completion, cached = _usage_counts(usage_obj)
            usage = self.ledger.usage_for(model, prompt, completion, cached, self.config.prices)
        self.ledger.record(model, depth, usage)
        return Completion(text, model, usage, latency, key, False, finish)

    async def _exchange(self, pool: int, body: dict[str, Any], bound: int,
                        on_text: Callable[[str], None] | None,
                        ) -> tuple[str, str | None, dict[str, Any] | None]:
        """One call on the wire: ``(text, finish reason, usage object or None)``.

        Through the openai client (its retries with backoff on 429/5xx/timeouts, its error
        classes, its headers), with the body serialised once here and the answer read as plain
        JSON or SSE: the SDK's per-request transform of the messages and its pydantic parse of the
        response cost milliseconds of CPU per call. Each adaptation to what the server answered
        happens at most once per call and is kept for the client's life: a refused ``max_tokens``
        (sent again as ``max_completion_tokens``), refused ``stream_options`` (left out), a stream
        the server cut (asked again without streaming).
        """
        import openai

        adapted: set[str] = set()
        while True:
            wire = dict(body)
            if bound > 0:
                reasoning = is_reasoning_model(str(body.get("model", "")),
                                               self.config.reasoning_model)
                wire["max_completion_tokens" if reasoning else self.bound_param] = bound
            stream = (self.streaming and "plain" not in adapted
                      and (not self.cuts_streams or self.in_flight <= 1))
            if stream:
                wire["stream"] = True
                if self.stream_options:
                    wire["stream_options"] = {"include_usage": True}
            try:
                if stream:
                    return await self._streamed(pool, wire, on_text)
                raw = await self._clients[pool].post(
                    "/chat/completions", cast_to=httpx2.Response, content=_dumps(wire))
                # Content-Type: application/json is among the client's default headers
                return _read_completion(_loads(raw.content))
            except openai.APIStatusError as exc:
                change = self._adapt(exc, adapted, stream)
                if change is None:
                    raise
                adapted.add(change)
            except _StreamCut as cut:
                adapted.add("plain")
                if cut.done and cut.events and not self.cuts_streams:
                    # [DONE] after events but no finish reason: the server interrupted it (a
                    # llama-cpp-python server does when another request waits), and would
                    # again: from now on only a call alone in flight is streamed.
                    self.cuts_streams = True
                    log.warning("rlm: %s cut a streamed reply short (%s); from now on only a "
                                "call alone in flight is streamed to it. On llama-cpp-python, "
                                "start the server with --interrupt_requests false to stream "
                                "all calls.", self.base_url, cut)

    def _adapt(self, exc: Any, adapted: set[str], stream: bool) -> str | None:
        """What to change after a 400 that refused one of our parameters (None: nothing)."""
        if getattr(exc, "status_code", None) not in (400, 422):
            return None
        detail = _error_message(exc).lower()
        if ("max_tokens" in detail and "bound" not in adapted
                and self.bound_param == "max_tokens"
                and ("max_completion_tokens" in detail or "unsupported" in detail
                     or "not supported" in detail)):
            self.bound_param = "max_completion_tokens"
            return "bound"
        if stream and "stream_options" in detail and self.stream_options:
            self.stream_options = False
            return "stream_options"
        return None

    async def _streamed(self, pool: int, wire: dict[str, Any],
                        on_text: Callable[[str], None] | None,
                        ) -> tuple[str, str | None, dict[str, Any] | None]:
        """A streamed call read to its end; closing it early (cancel, Stop, timeout) closes the
        connection, which stops the server's generation."""
        resp = await self._clients[pool].post(
            "/chat/completions", cast_to=httpx2.Response, stream=True, content=_dumps(wire))
        reader = StreamReader()
        try:
            if not resp.headers.get("content-type", "").startswith("text/event-stream"):
                # Some servers answer a stream request with one JSON body (or an error object).
                return _read_completion(_loads(await resp.aread()))
            try:
                async for piece in resp.aiter_bytes():
                    new = reader.feed(piece)
                    if new and on_text is not None:
                        on_text(new)
            except httpx2.TimeoutException:
                raise ModelTimeout(redact(
                    f"{self.base_url} sent nothing for {self.config.call_timeout:g} s in the "
                    "middle of a streamed reply; check the server's load and log")) from None
            except httpx2.TransportError as exc:
                result = reader.close()
                raise _StreamCut(result.events, result.done,
                                 f"the connection broke after {result.events} events: "
                                 f"{type(exc).__name__}") from None
        finally:
            await resp.aclose()
        result = reader.close()
        if result.error is not None:
            raise BadRequest(redact(f"{self.base_url} reported an error inside the stream: "
                                    f"{result.error}"), status_code=200)
        if result.finish_reason is None:
            raise _StreamCut(result.events, result.done,
                             f"{result.events} events, {'[DONE]' if result.done else 'no [DONE]'}"
                             ", no finish reason")
        text = with_reasoning(encode(result.text, result.tool_calls), result.reasoning)
        return clean_text(text), result.finish_reason, result.usage

    def _error(self, exc: openai.APIError, model: str) -> ModelCallError:
        """The openai client's exception as one of ours: a class per cause, the HTTP status, and
        advice that fits the cause (retry counts only where the client does retry)."""
        import openai

        where = self.where
        retries = self.config.max_retries
        status = getattr(exc, "status_code", None)
        kind: type[ModelCallError]
        if isinstance(exc, openai.NotFoundError):
            kind, msg = ModelNotFound, (
                f"model {model!r} was not found at {where} (HTTP 404); check --model / "
                "RLM_MODEL / RLM_SUB_MODEL against the models your endpoint serves")
        elif isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            kind, msg = AuthenticationFailed, (
                f"{where} rejected the API key (HTTP {status}); check OPENAI_API_KEY")
        elif isinstance(exc, openai.RateLimitError):
            kind, msg = RateLimited, (
                f"{where} kept rate-limiting (HTTP 429) after {retries} retries; lower "
                "--concurrency or set requests_per_minute")
        elif isinstance(exc, openai.APITimeoutError):
            kind, msg = ModelTimeout, (
                f"{where} did not answer within {self.config.call_timeout:g} s on any of "
                f"{retries + 1} attempts; check that the server is up and not busy with an "
                "earlier request, and bound generation (root_max_tokens, sub_max_tokens) rather "
                "than raising call_timeout")
        elif isinstance(exc, openai.APIConnectionError):
            kind, msg = EndpointUnreachable, (
                f"could not connect to {where} after {retries + 1} attempts; check "
                "OPENAI_BASE_URL / --base-url and that the server is running")
        elif isinstance(exc, openai.APIStatusError) and status in (400, 413, 422):
            detail = _error_message(exc)
            if _is_window_error(detail):
                kind, msg = ContextWindowExceeded, (
                    f"the prompt does not fit {model!r}'s context window at {where} "
                    f"(HTTP {status}: {detail})")
            else:
                kind, msg = BadRequest, f"{where} refused the request (HTTP {status}): {detail}"
        elif isinstance(exc, openai.APIStatusError) and status is not None and status >= 500:
            kind, msg = ServerError, (
                f"{where} answered HTTP {status} after {retries} retries: "
                f"{_error_message(exc)}")
        elif isinstance(exc, openai.APIStatusError):
            kind, msg = ModelCallError, f"{where} answered HTTP {status}: {_error_message(exc)}"
        else:
            kind, msg = ModelCallError, f"model call failed: {exc}"
        return kind(redact(msg), status_code=status)

    # -- what the endpoint is like ----------------------------------------------------------
    async def amodel_window(self, model: str) -> int | None:
        """The context window ``/models`` reports for ``model`` (vLLM's ``max_model_len`` and
        the like), or None: many servers (llama-cpp-python, OpenAI) report none. Asked once."""
        if self._window_asked:
            return self.window
        self._window_asked = True
        try:
            raw = await self._client.get("/models", cast_to=httpx2.Response)
            entries = _loads(raw.content).get("data") or []
        except Exception:  # noqa: BLE001 - a listing is a hint; without it we learn otherwise
            return self.window
        for entry in entries if isinstance(entries, list) else ():
            if not isinstance(entry, dict) or entry.get("id") not in (model, None):
                continue
            for where in (entry, entry.get("meta") or {}):
                for k in _WINDOW_KEYS:
                    value = where.get(k) if isinstance(where, dict) else None
                    if isinstance(value, int) and value > 0:
                        self.window = self.window or value
                        return self.window
        return self.window

    async def adrops_system(self, model: str, depth: int = 0) -> bool | None:
        """Whether the server's chat template drops system messages, from the prompt tokens of a
        one-token call whose system message is most of its text; None when it reports no usage.

        Why: llama-cpp-python's ``gemma`` format (and others) silently drop them, and a server
        that streams without usage gives no other sign. Asked only when the first root call's
        usage could not tell; its usage is recorded like any call's.
        """
        body = {"model": model, "messages": [{"role": "system", "content": _PROBE_SYSTEM},
                                             {"role": "user", "content": "Hi"}],
                self.bound_param: 1}
        try:
            raw = await self._client.post("/chat/completions", cast_to=httpx2.Response,
                                          content=_dumps(body))
            _, _, usage_obj = _read_completion(_loads(raw.content))
        except Exception:  # noqa: BLE001 - no answer, no conclusion
            return None
        if usage_obj is None:
            return None
        prompt, completion, cached = _usage_counts(usage_obj)
        self.ledger.record(model, depth, self.ledger.usage_for(model, prompt, completion, cached,
                                                               self.config.prices))
        return system_dropped(prompt, len(_PROBE_SYSTEM))

    def complete(self, messages: list[dict[str, Any]], *, model: str, depth: int,
                 root: bool = False, key: str | None = None, fresh: bool = False) -> Completion:
        """Blocking form for synchronous code (a cell's ``llm()``); interrupt-aware."""
        return self.loop.run(self.acomplete(messages, model=model, depth=depth, root=root, key=key,
                                            fresh=fresh))

    async def acomplete_many(
        self, batch: list[list[dict[str, Any]]], *, model: str, depth: int,
        on_done: Callable[[int, Completion | BaseException], None] | None = None,
        keys: list[str] | None = None, precheck: Callable[[int], None] | None = None,
    ) -> list[Completion | BaseException]:
        """All calls at once (the semaphore bounds them); one failure does not cancel the rest.

        ``precheck(i)`` runs as call ``i`` gets its slot, just before it is sent."""

        async def one(i: int, msgs: list[dict[str, Any]]) -> Completion | BaseException:
            try:
                res: Completion | BaseException = await self.acomplete(
                    msgs, model=model, depth=depth, key=keys[i] if keys else None,
                    precheck=functools.partial(precheck, i) if precheck else None)
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
