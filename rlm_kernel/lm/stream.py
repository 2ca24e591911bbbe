"""Reading a streamed chat completion (server-sent events) as it arrives.

Why streaming at all: a server that generates for a client that went away keeps generating (a
llama.cpp server serves one request at a time, so every later call waits behind it); closing a
stream is what tells it to stop. And a root model's prose can be shown while it is written.

What servers send differs, and this reader takes each as it comes: events separated by a blank
line (``\\n\\n``, ``\\r\\n\\r\\n``) or by single newlines, comment lines (``: ping``), usage in a last
chunk only when the server honours ``stream_options.include_usage`` (llama-cpp-python never sends
it), an error object as an event (vLLM). A stream is *complete* only when a choice carried a
``finish_reason``: llama-cpp-python ends a stream it interrupts for a waiting request with
``[DONE]`` and no finish reason, and a server that fails inside a stream closes it with no event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StreamReader", "StreamResult"]


@dataclass
class StreamResult:
    text: str
    finish_reason: str | None
    usage: dict[str, Any] | None  # the usage object, when the server sent one
    done: bool  # the server sent [DONE]
    events: int  # data events read
    error: str | None = None  # an error event's message
    reasoning: str = ""  # reasoning sent beside the content (reasoning_content / reasoning)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "arguments"}]


@dataclass
class StreamReader:
    """Feed it the body's bytes as they come; ``feed`` returns the new content text."""

    _buf: bytes = b""
    _data: list[bytes] = field(default_factory=list)
    _parts: list[str] = field(default_factory=list)
    _reasoning: list[str] = field(default_factory=list)
    _calls: dict[int, dict[str, str]] = field(default_factory=dict)  # by the delta's index
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    done: bool = False
    events: int = 0
    error: str | None = None

    def feed(self, chunk: bytes) -> str:
        self._buf += chunk
        new: list[str] = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                break
            line = self._buf[:end].rstrip(b"\r")
            self._buf = self._buf[end + 1:]
            if not line:
                self._dispatch(new)
            elif line.startswith(b"data:"):
                # A new "data:" line after a complete JSON payload is a new event even without
                # the blank line between them (servers that separate events by one newline).
                if self._data and self._complete_json():
                    self._dispatch(new)
                self._data.append(line[5:].removeprefix(b" "))
            # comments (": ping"), "event:", "id:", "retry:" carry nothing we use
        return "".join(new)

    def close(self) -> StreamResult:
        """The body ended: what it said (a last event without its blank line counts)."""
        if self._buf.strip():
            self.feed(b"\n")
        self._dispatch([])
        calls = [{"name": c["name"], "arguments": c["arguments"]}
                 for _, c in sorted(self._calls.items())]
        return StreamResult("".join(self._parts), self.finish_reason, self.usage, self.done,
                            self.events, self.error, "".join(self._reasoning), calls)

    def _complete_json(self) -> bool:
        try:
            json.loads(b"\n".join(self._data))
        except ValueError:
            return False
        return True

    def _dispatch(self, new: list[str]) -> None:
        if not self._data:
            return
        payload = b"\n".join(self._data)
        self._data = []
        if payload.strip() == b"[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(payload)
        except ValueError:
            return  # not JSON: not ours to read (a proxy's keep-alive, a comment)
        if not isinstance(chunk, dict):
            return
        self.events += 1
        err = chunk.get("error")
        if err and not chunk.get("choices"):
            self.error = str(err.get("message") if isinstance(err, dict) else err)[:500]
            return
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                delta = {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                self._parts.append(text)
                new.append(text)
            thought = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(thought, str):
                self._reasoning.append(thought)
            for call in delta.get("tool_calls") or ():
                self._call_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])

    def _call_delta(self, call: Any) -> None:
        """A piece of a tool call: the first names it, later ones add to its arguments."""
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            return
        index = call.get("index", len(self._calls))
        slot = self._calls.setdefault(index if isinstance(index, int) else len(self._calls),
                                      {"name": "", "arguments": ""})
        fn = call["function"]
        if isinstance(fn.get("name"), str):
            slot["name"] += fn["name"]
        if isinstance(fn.get("arguments"), str):
            slot["arguments"] += fn["arguments"]
