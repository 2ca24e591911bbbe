"""The OpenAI chat-completions wire format, as the scripted model speaks it.

Why a module of its own: the HTTP server and the in-process httpx transport must produce byte-for-byte
the same bodies, so everything that turns a request body into a response body (parsing, token
counts, the simulated prefix cache, SSE framing, error shapes) lives here and knows nothing about
sockets or event loops.

Token counts are deterministic, ``ceil(chars / 4)`` per message content, so the prompt tokens of a
conversation are the sum over its messages and the tokens of any message prefix are a prefix sum:
that is what makes ``cached_tokens`` exact and reproducible.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .message import AssistantMessage, as_message
from .tool_calls import render_tool_calls
from .vision import ImagePartError, WireImage, split_images

__all__ = [
    "DEFAULT_MODELS",
    "SYSTEM_FINGERPRINT",
    "NOT_AN_LLM",
    "WireError",
    "ChatRequest",
    "PrefixCache",
    "count_tokens",
    "parse_request",
    "completion_body",
    "sse_chunks",
    "message_tokens",
    "error_body",
    "models_body",
    "encode_json",
]

#: Sent with every response so a trace or a log line says what produced the text.
SYSTEM_FINGERPRINT = "rlm-kernel-scripted-demo-not-an-llm"
NOT_AN_LLM = "rlm-kernel scripted demonstration model (deterministic rules, not an LLM)"
DEFAULT_MODELS = ("scripted-root", "scripted-sub")
#: Said wherever the scripted model answers in place of a real one (CLI, kernel, evals).
SCRIPTED_BANNER = (
    "rlm-kernel: no OPENAI_API_KEY and no OPENAI_BASE_URL, so the embedded scripted demonstration "
    "model answers. It is not an LLM: it plays fixed strategies for demo tasks (needle search, "
    "counting). Set OPENAI_API_KEY or OPENAI_BASE_URL (and --model) to use a real model."
)


_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


class WireError(Exception):
    """A request the server refuses; carries everything an OpenAI-shaped error body needs."""

    def __init__(
        self, status: int, message: str, *, type: str = "invalid_request_error",
        code: str | None = None, param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, code=self.code, param=self.param)


@dataclass(frozen=True)
class ChatRequest:
    """The parts of a chat-completions request the scripted model looks at."""

    model: str
    messages: tuple[tuple[str, str], ...]  # (role, text) with list-of-parts contents flattened
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    images: tuple[WireImage, ...] = ()  # image parts, checked and taken out of ``messages``
    #: Names of the function tools the model may call (empty with ``tool_choice="none"``).
    tools: tuple[str, ...] = field(default=(), compare=False, hash=False)

    @property
    def prompt_tokens(self) -> int:
        """Text tokens (see :func:`count_tokens`) plus each image's tokens by OpenAI's rule
        (:func:`rlm_kernel.media.image_tokens`)."""
        return (sum(count_tokens(text) for _, text in self.messages)
                + sum(im.tokens for im in self.images))


def count_tokens(text: str) -> int:
    """Deterministic stand-in for a tokenizer: one token per four characters, rounded up."""
    return math.ceil(len(text) / 4)


def _flatten_content(content: Any, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", "input_text"):
                parts.append(str(part.get("text", "")))
            else:
                raise WireError(
                    400, f"messages[{index}].content: the scripted model reads text and image_url "
                    "parts only",
                    param=f"messages[{index}].content", code="unsupported_content",
                )
        return "".join(parts)
    raise WireError(400, f"messages[{index}].content must be a string or a list of parts",
                    param=f"messages[{index}].content")


def parse_request(body: Any) -> ChatRequest:
    """Validate a decoded JSON body and keep what matters; raise :class:`WireError` (400) if bad."""
    if not isinstance(body, dict):
        raise WireError(400, "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise WireError(400, "you must provide a model parameter", param="model")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise WireError(400, "'messages' must be a non-empty array", param="messages")
    try:
        raw, images = split_images(raw)
    except ImagePartError as exc:
        raise WireError(exc.status, exc.message, type=exc.type, code=exc.code,
                        param=exc.param) from None
    messages = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict) or msg.get("role") not in _ROLES:
            raise WireError(400, f"messages[{i}] needs a 'role' among {sorted(_ROLES)}",
                            param=f"messages[{i}].role")
        text = _flatten_content(msg.get("content"), i)
        if msg["role"] == "assistant" and msg.get("tool_calls"):
            # Policies read a conversation as text: a tool call reads as the fence or FINAL line
            # it stands for, so they play the same strategy in either mode.
            text += render_tool_calls(msg["tool_calls"])
        messages.append((msg["role"], text))
    options = body.get("stream_options") or {}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise WireError(400, "max_tokens must be a positive integer", param="max_tokens")
    return ChatRequest(
        model=model,
        messages=tuple(messages),
        stream=bool(body.get("stream", False)),
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        max_tokens=max_tokens,
        extra={k: v for k, v in body.items() if k not in ("model", "messages")},
        images=tuple(images),
        tools=_offered_tools(body),
    )


def _offered_tools(body: dict[str, Any]) -> tuple[str, ...]:
    """The function names of ``tools``, unless ``tool_choice`` forbids calling any."""
    if body.get("tool_choice") == "none" or not isinstance(body.get("tools"), list):
        return ()
    names = []
    for tool in body["tools"]:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            names.append(fn["name"])
    return tuple(names)


class PrefixCache:
    """A bounded LRU of recent prompts, standing in for a provider's prompt-prefix cache.

    Why: the engine keeps the root history append-only precisely so that a real provider's prefix
    cache hits; the double must reward that (and show when it breaks) with honest
    ``cached_tokens``. A request's cached tokens are the prompt tokens of the longest remembered
    earlier request whose messages are an exact prefix of (or equal to) this request's messages.
    Keys are chained SHA-256 digests of the message prefixes, so memory stays small however long
    the prompts are.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _prefix_keys(messages: tuple[tuple[str, str], ...]) -> list[tuple[bytes, int]]:
        keys: list[tuple[bytes, int]] = []
        digest = b""
        tokens = 0
        for role, text in messages:
            h = hashlib.sha256(digest)
            h.update(role.encode() + b"\x00")
            h.update(text.encode("utf-8", "surrogatepass") + b"\x01")
            digest = h.digest()
            tokens += count_tokens(text)
            keys.append((digest, tokens))
        return keys

    def lookup_and_remember(self, messages: tuple[tuple[str, str], ...]) -> int:
        """Return this request's cached tokens, then remember it for later requests."""
        keys = self._prefix_keys(messages)
        with self._lock:
            cached = 0
            for digest, tokens in reversed(keys):
                if digest in self._entries:
                    self._entries.move_to_end(digest)
                    cached = tokens
                    break
            full, tokens = keys[-1]
            self._entries[full] = tokens
            self._entries.move_to_end(full)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return cached

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def message_tokens(message: AssistantMessage) -> tuple[int, int]:
    """``(completion tokens, of which reasoning)`` of an answer: content, reasoning and the
    JSON arguments of its tool calls all count, as providers bill them."""
    reasoning = count_tokens(message.reasoning_content or "")
    calls = sum(count_tokens(c.name + c.json()) for c in message.tool_calls)
    return count_tokens(message.content) + reasoning + calls, reasoning


def _usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int,
           reasoning_tokens: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


def completion_body(
    *, request_id: str, model: str, content: str | AssistantMessage, finish_reason: str,
    prompt_tokens: int, cached_tokens: int, created: int | None = None,
) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` object.

    ``reasoning_content`` goes beside ``content`` in the message (vLLM's and DeepSeek's field);
    tool calls go in ``tool_calls`` with ``finish_reason`` ``"tool_calls"``.
    """
    msg = as_message(content)
    message: dict[str, Any] = {"role": "assistant", "content": msg.content, "refusal": None}
    if msg.reasoning_content is not None:
        message["reasoning_content"] = msg.reasoning_content
    if msg.tool_calls:
        message["content"] = msg.content or None
        message["tool_calls"] = [
            {"id": c.call_id(request_id, i), "type": "function",
             "function": {"name": c.name, "arguments": c.json()}}
            for i, c in enumerate(msg.tool_calls)]
        finish_reason = "tool_calls" if finish_reason == "stop" else finish_reason
    completion, reasoning = message_tokens(msg)
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": finish_reason,
        }],
        "usage": _usage(prompt_tokens, completion, cached_tokens, reasoning),
        "service_tier": "default",
    }


def _split_for_stream(content: str, pieces: int = 8) -> list[str]:
    """A few content deltas, cut at line ends where possible: enough to exercise a client's
    reassembly without making a 20 kB answer cost hundreds of events."""
    if not content:
        return []
    size = max(1, math.ceil(len(content) / pieces))
    out, start = [], 0
    while start < len(content):
        end = min(len(content), start + size)
        newline = content.find("\n", end)
        if newline != -1 and newline - end < size:
            end = newline + 1
        out.append(content[start:end])
        start = end
    return out


def sse_chunks(
    *, request_id: str, model: str, content: str | AssistantMessage, finish_reason: str,
    prompt_tokens: int, cached_tokens: int, include_usage: bool, created: int | None = None,
) -> Iterator[bytes]:
    """The ``chat.completion.chunk`` events of a streamed answer, SSE-framed, ending in ``[DONE]``.

    As OpenAI does: a first delta with the role, content deltas, a last delta with the finish reason,
    and when ``stream_options.include_usage`` was set every chunk carries ``"usage": null`` and one
    extra chunk with empty ``choices`` carries the usage. Reasoning comes first, as
    ``reasoning_content`` deltas (vLLM, DeepSeek); each tool call as a delta naming it, then
    deltas of its JSON arguments (OpenAI's shape).
    """
    created = int(time.time()) if created is None else created
    msg = as_message(content)

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        obj: dict[str, Any] = {
            "id": request_id, "object": "chat.completion.chunk", "created": created,
            "model": model, "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            obj["usage"] = None
        return b"data: " + encode_json(obj) + b"\n\n"

    yield chunk({"role": "assistant", "content": "", "refusal": None}, None)
    for piece in _split_for_stream(msg.reasoning_content or ""):
        yield chunk({"reasoning_content": piece}, None)
    for piece in _split_for_stream(msg.content):
        yield chunk({"content": piece}, None)
    for i, call in enumerate(msg.tool_calls):
        yield chunk({"tool_calls": [{"index": i, "id": call.call_id(request_id, i),
                                     "type": "function",
                                     "function": {"name": call.name, "arguments": ""}}]}, None)
        for piece in _split_for_stream(call.json(), pieces=3):
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}, None)
    if msg.tool_calls and finish_reason == "stop":
        finish_reason = "tool_calls"
    yield chunk({}, finish_reason)
    if include_usage:
        completion, reasoning = message_tokens(msg)
        obj = {
            "id": request_id, "object": "chat.completion.chunk", "created": created,
            "model": model, "system_fingerprint": SYSTEM_FINGERPRINT, "choices": [],
            "usage": _usage(prompt_tokens, completion, cached_tokens, reasoning),
        }
        yield b"data: " + encode_json(obj) + b"\n\n"
    yield b"data: [DONE]\n\n"


def error_body(message: str, *, type: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape, which the openai client turns into the matching exception class."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def models_body(names: tuple[str, ...] = DEFAULT_MODELS) -> dict[str, Any]:
    """``GET /v1/models``: the default names, owned by a label that says what they are."""
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": 0, "owned_by": NOT_AN_LLM}
                 for name in names],
    }


def encode_json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
