"""``ScriptedModel``: settings, fault injection, stats and the one request handler.

Why one handler: the loopback HTTP server and the in-process httpx transport both call
:meth:`ScriptedModel.handle`, so latency, faults, routing, policies, usage and stats behave the same
whichever path a test or a user takes. ``handle`` only ever awaits ``asyncio.sleep``; it runs on the
server's loop or the client's loop and never blocks either.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import image_policy, policies
from .message import AssistantMessage, as_message
from .reasoning import decorate, refused_param
from .tool_calls import offers_repl_tool, to_tool_calls
from .wire import (
    DEFAULT_MODELS,
    NOT_AN_LLM,
    ChatRequest,
    PrefixCache,
    WireError,
    completion_body,
    count_tokens,
    error_body,
    message_tokens,
    models_body,
    parse_request,
    sse_chunks,
)

__all__ = ["FaultPlan", "ScriptedModel", "ScriptedStats", "Reply", "MAX_HANG_S"]

#: Upper bound of a simulated hang, so a forgotten fault plan cannot wedge a test run for ever.
MAX_HANG_S = 300.0
FAULT_KINDS = (429, 500, 503, "timeout")

_FAULT_MESSAGES = {
    429: ("rate_limit_exceeded", "requests",
          "Rate limit reached (injected by the scripted demonstration model's fault plan)."),
    500: ("server_error", "server_error",
          "The server had an error while processing your request (injected by the scripted "
          "demonstration model's fault plan)."),
    503: ("service_unavailable", "server_error",
          "The server is overloaded (injected by the scripted demonstration model's fault plan)."),
}


@dataclass(frozen=True)
class FaultPlan:
    """Which requests fail and how: each chat request fails with probability ``rate``, its kind
    drawn from ``kinds`` (429, 500, 503 or "timeout"), from an RNG seeded with ``seed``.

    "timeout" makes the server hang ``hang_s`` seconds (capped at :data:`MAX_HANG_S`) and then
    answer normally, so the client's own timeout is what fails the call. Error responses carry
    ``retry-after-ms`` (``retry_after_s``; None to omit), which the openai client honours: a small
    value keeps retry tests fast.
    """

    rate: float = 0.0
    kinds: tuple[int | str, ...] = (429, 500, 503)
    hang_s: float = 30.0
    retry_after_s: float | None = 0.05
    seed: int = 0
    #: A provider's cap on requests in flight (0: none): one that arrives while ``capacity``
    #: others are being answered gets a 429, as from a provider whose limit was reached.
    capacity: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be in 0..1, got {self.rate}")
        bad = [k for k in self.kinds if k not in FAULT_KINDS]
        if bad or not self.kinds:
            raise ValueError(f"fault kinds must be among {FAULT_KINDS}, got {self.kinds}")
        if self.hang_s < 0:
            raise ValueError("hang_s must be >= 0")


class Reply(NamedTuple):
    """What :meth:`ScriptedModel.handle` returns: a JSON object or an async iterator of SSE bytes."""

    status: int
    headers: dict[str, str]
    payload: dict[str, Any] | AsyncIterator[bytes]


@dataclass
class ScriptedStats:
    """Live counters, safe to read and reset from any thread.

    ``by_status`` counts what the server sent (a "timeout" fault counts as its eventual 200, or
    not at all if the request was abandoned first); ``faults`` counts injected faults by kind.
    """

    requests: int = 0
    root_requests: int = 0
    sub_requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    by_policy: dict[str, int] = field(default_factory=dict)
    #: Request parameters seen (``temperature``, ``reasoning_effort``, ``tools``...), by name.
    params: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    images: int = 0  # image parts of answered requests
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def reset(self) -> None:
        """Zero every counter except ``in_flight`` (requests still running keep being counted)."""
        with self._lock:
            self.requests = self.root_requests = self.sub_requests = 0
            self.max_in_flight = self.in_flight
            self.by_status = {}
            self.faults = {}
            self.by_policy = {}
            self.params = {}
            self.prompt_tokens = self.completion_tokens = self.cached_tokens = 0
            self.images = 0

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests, "root_requests": self.root_requests,
                "sub_requests": self.sub_requests, "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight, "by_status": dict(self.by_status),
                "faults": dict(self.faults), "by_policy": dict(self.by_policy),
                "params": dict(self.params),
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cached_tokens": self.cached_tokens, "images": self.images,
            }

    # internal bookkeeping -------------------------------------------------------------------------
    def _enter(self) -> int:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.requests

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _status(self, status: int) -> None:
        with self._lock:
            self.by_status[status] = self.by_status.get(status, 0) + 1

    def _bump(self, table: str, key: str) -> None:
        with self._lock:
            d = getattr(self, table)
            d[key] = d.get(key, 0) + 1

    def _saw_params(self, extra: dict[str, Any]) -> None:
        with self._lock:
            for key in extra:
                if key not in ("stream", "stream_options"):
                    self.params[key] = self.params.get(key, 0) + 1

    def _answered(self, root: bool, policy: str, prompt: int, completion: int, cached: int,
                  images: int = 0) -> None:
        with self._lock:
            self.images += images
            if root:
                self.root_requests += 1
            else:
                self.sub_requests += 1
            self.by_policy[policy] = self.by_policy.get(policy, 0) + 1
            self.prompt_tokens += prompt
            self.completion_tokens += completion
            self.cached_tokens += cached


class ScriptedModel:
    """The scripted demonstration model (deterministic rules, not an LLM).

    ``latency``: seconds added to every answered chat request, a fixed number or a ``(lo, hi)``
    range drawn uniformly from an RNG seeded with ``seed``. ``faults``: a :class:`FaultPlan`.
    ``root_replies``: when set, replaces the root policies: reply k is
    ``root_replies[number of assistant messages so far]``, clamped to the last one (tests use it
    to feed the engine hostile or malformed replies). Any model name starting with ``scripted`` is
    accepted; root vs sub is decided by the messages, not the name. Image parts (OpenAI
    ``image_url`` parts with data URLs) are checked as a real endpoint checks them
    (:mod:`.vision`), and a sub-call that carries images is answered by :mod:`.image_policy`.
    """

    def __init__(
        self,
        *,
        latency: float | tuple[float, float] = 0.0,
        faults: FaultPlan | None = None,
        root_replies: Sequence[str] | None = None,
        seed: int = 0,
        prefix_cache_entries: int = 4096,
    ) -> None:
        if isinstance(latency, (tuple, list)):
            lo, hi = float(latency[0]), float(latency[1])
            if not 0 <= lo <= hi:
                raise ValueError(f"latency range must satisfy 0 <= lo <= hi, got {latency}")
            self.latency: float | tuple[float, float] = (lo, hi)
        else:
            if latency < 0:
                raise ValueError("latency must be >= 0")
            self.latency = float(latency)
        self.faults = faults or FaultPlan()
        self.root_replies = list(root_replies) if root_replies is not None else None
        self.seed = seed
        self.stats = ScriptedStats()
        self.prefix_cache = PrefixCache(prefix_cache_entries)
        #: ``(sha256, width, height, mime, detail)`` of the images of answered requests, in
        #: arrival order (the newest 10,000): what a test compares with what it sent.
        self.received_images: deque[tuple[str, int, int, str, str | None]] = deque(maxlen=10_000)
        self._rng_lock = threading.Lock()
        self._latency_rng = random.Random(seed)
        self._fault_rng = random.Random(self.faults.seed)

    # ---------------------------------------------------------------------------------------------
    def _draw_latency(self) -> float:
        if isinstance(self.latency, tuple):
            with self._rng_lock:
                return self._latency_rng.uniform(*self.latency)
        return self.latency

    def _draw_fault(self) -> int | str | None:
        plan = self.faults
        if plan.rate <= 0:
            return None
        with self._rng_lock:
            if self._fault_rng.random() >= plan.rate:
                return None
            return self._fault_rng.choice(plan.kinds)

    def _base_headers(self) -> dict[str, str]:
        return {"x-scripted-model": NOT_AN_LLM}

    def _error(self, status: int, message: str, *, type: str, code: str | None,
               extra: dict[str, str] | None = None) -> Reply:
        self.stats._status(status)
        headers = {**self._base_headers(), "content-type": "application/json", **(extra or {})}
        return Reply(status, headers, error_body(message, type=type, code=code))

    def models(self) -> Reply:
        """``GET /v1/models``."""
        return Reply(200, {**self._base_headers(), "content-type": "application/json"},
                     models_body(DEFAULT_MODELS))

    def answer(self, request: ChatRequest) -> tuple[bool, str, str | AssistantMessage]:
        """``(is_root, policy name, content)`` for a parsed request: the pure part of ``handle``.

        A root request that offers the ``repl`` function tool is answered with tool calls
        instead of fences (:mod:`~rlm_kernel.scripted.tool_calls`).
        """
        if policies.is_root_request(request.messages):
            if self.root_replies:
                k = sum(role == "assistant" for role, _ in request.messages)
                reply: str | AssistantMessage = self.root_replies[
                    min(k, len(self.root_replies) - 1)]
                name = "root_replies"
            else:
                name, reply = policies.root_reply(request.messages, request.model)
            if isinstance(reply, str) and offers_repl_tool(request.tools):
                reply = to_tool_calls(reply, request.tools)
            return True, name, decorate(reply, request.model, root=True)
        prompt = policies.sub_prompt(request.messages)
        if request.images:
            name, content = image_policy.answer_images(prompt, request.images)
        else:
            name, content = policies.sub_answer(prompt)
        return False, name, decorate(content, request.model, root=False)

    async def handle(self, body: dict[str, Any] | bytes | str) -> Reply:
        """Answer one ``POST /chat/completions`` body (decoded JSON, or raw bytes/str).

        Order: parse (400), model name (404), injected fault (429/500/503 at once, or a bounded
        hang), latency, policy, usage. ``in_flight`` covers the whole time, including a streamed
        body until its last chunk is sent.
        """
        number = self.stats._enter()
        streaming = False
        try:
            if isinstance(body, (bytes, str)):
                try:
                    body = json.loads(body or b"null")
                except ValueError as exc:
                    return self._error(400, f"We could not parse the JSON body of your request: "
                                       f"{exc}", type="invalid_request_error", code=None)
            try:
                request = parse_request(body)
            except WireError as exc:
                return self._error(exc.status, exc.message, type=exc.type, code=exc.code)
            if not request.model.startswith("scripted"):
                return self._error(
                    404,
                    f"The model `{request.model}` does not exist or you do not have access to it. "
                    f"This endpoint is the rlm-kernel scripted demonstration model (not an LLM); "
                    f"its models are {', '.join(DEFAULT_MODELS)} (any name starting with "
                    f"'scripted' is accepted).",
                    type="invalid_request_error", code="model_not_found",
                )
            self.stats._saw_params(request.extra)
            refused = refused_param(request.model, request.extra)
            if refused is not None:
                return self._error(
                    400, f"Unsupported parameter: '{refused}' is not supported with this model.",
                    type="invalid_request_error", code="unsupported_parameter")
            fault = self._draw_fault()
            if fault is None and 0 < self.faults.capacity < self.stats.in_flight:
                fault = 429
            if fault is not None:
                self.stats._bump("faults", str(fault))
            if fault in _FAULT_MESSAGES:
                code, type_, message = _FAULT_MESSAGES[fault]
                extra = {}
                if self.faults.retry_after_s is not None:
                    extra["retry-after-ms"] = str(int(self.faults.retry_after_s * 1000))
                return self._error(int(fault), message, type=type_, code=code, extra=extra)
            if fault == "timeout":
                await asyncio.sleep(min(self.faults.hang_s, MAX_HANG_S))
            delay = self._draw_latency()
            if delay > 0:
                await asyncio.sleep(delay)

            is_root, policy, reply = self.answer(request)
            content = as_message(reply)
            finish = "stop"
            if request.max_tokens is not None and count_tokens(content.content) > request.max_tokens:
                content = AssistantMessage(content.content[: request.max_tokens * 4],
                                           content.reasoning_content, content.tool_calls)
                finish = "length"
            prompt_tokens = request.prompt_tokens
            cached = self.prefix_cache.lookup_and_remember(request.messages)
            self.stats._answered(is_root, policy, prompt_tokens, message_tokens(content)[0],
                                 cached, len(request.images))
            if request.images:
                self.received_images.extend(
                    (im.sha256, im.width, im.height, im.mime, im.detail) for im in request.images)
            self.stats._status(200)
            request_id = f"chatcmpl-scripted-{number}"
            headers = {**self._base_headers(), "x-request-id": request_id,
                       "x-scripted-policy": policy}
            if not request.stream:
                headers["content-type"] = "application/json"
                return Reply(200, headers, completion_body(
                    request_id=request_id, model=request.model, content=content,
                    finish_reason=finish, prompt_tokens=prompt_tokens, cached_tokens=cached))
            headers["content-type"] = "text/event-stream; charset=utf-8"
            headers["cache-control"] = "no-cache"
            chunks = sse_chunks(
                request_id=request_id, model=request.model, content=content, finish_reason=finish,
                prompt_tokens=prompt_tokens, cached_tokens=cached,
                include_usage=request.include_usage)
            streaming = True
            return Reply(200, headers, _StreamBody(chunks, self.stats._leave))
        except Exception as exc:  # a policy bug must surface as a readable 500, not a dead socket
            return self._error(500, f"The scripted model failed: {type(exc).__name__}: {exc}",
                               type="server_error", code="scripted_policy_error")
        finally:
            if not streaming:
                self.stats._leave()


class _StreamBody:
    """The SSE body of a streamed answer: an async iterator that releases the request's in-flight
    slot exactly once, when it is exhausted or closed, even if it was never iterated (an async
    generator's ``finally`` would not run in that case)."""

    def __init__(self, chunks: Iterator[bytes], on_done: Callable[[], None]) -> None:
        self._chunks = chunks
        self._on_done: Callable[[], None] | None = on_done

    def __aiter__(self) -> _StreamBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:
            await self.aclose()
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        done, self._on_done = self._on_done, None
        if done is not None:
            done()
