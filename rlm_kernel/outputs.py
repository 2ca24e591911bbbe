"""Step outputs: nbformat output dicts, bounded capture, and the text the root model is shown.

A step may print 100 MB; nothing downstream (IOPub, the notebook, the model's history) should see
that. :class:`BoundedText` keeps only a head and a tail while counting what it dropped, and
:func:`truncate` applies the same head+tail rule to what the model reads.
"""

from __future__ import annotations

import io
import re
from typing import Any

__all__ = ["BoundedText", "truncate", "outputs_to_text", "stream_output", "error_output",
           "strip_ansi"]

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return _ANSI_RE.sub("", text)


def truncate(text: str, limit: int) -> str:
    """Keep the head and tail of ``text`` within ``limit`` chars and say how much was cut."""
    if limit <= 0 or len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    dropped = len(text) - head - tail
    return f"{text[:head]}\n[... {dropped:,} characters omitted ...]\n{text[-tail:]}"


class BoundedText(io.TextIOBase):
    """A write-only text stream that keeps at most ``head + tail`` characters."""

    def __init__(self, head: int = 200_000, tail: int = 100_000) -> None:
        self.head_limit, self.tail_limit = head, tail
        self._head: list[str] = []
        self._head_len = 0
        self._tail = ""
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        n = len(s)
        room = self.head_limit - self._head_len
        if room > 0:
            self._head.append(s[:room])
            self._head_len += min(room, n)
            s = s[room:]
        if s:
            tail = self._tail + s
            if len(tail) > self.tail_limit:
                self.dropped += len(tail) - self.tail_limit
                tail = tail[-self.tail_limit:]
            self._tail = tail
        return n

    def getvalue(self) -> str:
        head = "".join(self._head)
        if self.dropped:
            return f"{head}\n[... {self.dropped:,} characters omitted ...]\n{self._tail}"
        return head + self._tail


def stream_output(name: str, text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": name, "text": text}


def error_output(ename: str, evalue: str, traceback: list[str]) -> dict[str, Any]:
    return {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": traceback}


def outputs_to_text(outputs: list[dict[str, Any]]) -> str:
    """What the root model reads: streams, plain-text reprs and tracebacks, in order."""
    parts: list[str] = []
    for out in outputs:
        kind = out.get("output_type")
        if kind == "stream":
            text = out.get("text", "")
            parts.append("".join(text) if isinstance(text, list) else text)
        elif kind in ("execute_result", "display_data"):
            data = out.get("data", {})
            plain = data.get("text/plain")
            if plain is not None:
                plain = "".join(plain) if isinstance(plain, list) else plain
                parts.append(plain if plain.endswith("\n") else plain + "\n")
            elif data:
                parts.append(f"[{', '.join(sorted(data))} output]\n")
        elif kind == "error":
            tb = out.get("traceback") or [f"{out.get('ename')}: {out.get('evalue')}"]
            parts.append(strip_ansi("\n".join(tb)) + "\n")
    return "".join(parts)
