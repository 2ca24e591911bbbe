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
           "strip_ansi", "clean_text", "clean_outputs", "clean_json", "sanitize_outputs"]

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return _ANSI_RE.sub("", text)


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with lone surrogates (which no UTF-8 encoder takes: a JSON message holding one
    cannot be sent, a notebook holding one cannot be written) replaced by U+FFFD. Checked by
    encoding first, so clean text costs one pass in C."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE_RE.sub("\ufffd", text)
    return text


def clean_json(value: Any) -> Any:
    """Every string in a JSON-like value (dict keys too) cleaned by :func:`clean_text`."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k) if isinstance(k, str) else k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def clean_outputs(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outputs that can travel as JSON: a step may print anything (a lone surrogate included)."""
    try:
        for out in outputs:
            for key in ("text", "evalue"):
                if isinstance(out.get(key), str):
                    out[key].encode("utf-8")
            for value in (out.get("data") or {}).values():
                if isinstance(value, str):
                    value.encode("utf-8")
            for line in out.get("traceback") or ():
                line.encode("utf-8")
    except (UnicodeEncodeError, AttributeError):
        return [clean_json(o) for o in outputs]
    return outputs


_OMITTED_RE = re.compile(r"\n?\[\.\.\. ([\d,]+) characters omitted \.\.\.\]\n?")


def truncate(text: str, limit: int) -> str:
    """Keep the head and tail of ``text`` within ``limit`` chars and say how much was cut.

    ``text`` may already hold omission markers (a capture buffer that kept only its own head and
    tail); the count reported includes what those markers stood for, so the reader is told how
    much of the real output is missing, not how much of the marked-up text.
    """
    if limit <= 0 or len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    dropped = len(text) - head - tail
    for m in _OMITTED_RE.finditer(text, head, len(text) - tail):
        dropped += int(m.group(1).replace(",", "")) - len(m.group(0))
    return f"{text[:head]}\n[... {dropped:,} characters omitted ...]\n{text[-tail:]}"


class BoundedText(io.TextIOBase):
    """A write-only text stream that keeps at most ``head + tail`` characters.

    Cost per write is amortised O(len(s)): the tail is a list of chunks trimmed only once it holds
    twice its limit, so a loop of a million small prints stays as cheap as into a StringIO.
    """

    def __init__(self, head: int = 200_000, tail: int = 100_000) -> None:
        self.head_limit, self.tail_limit = head, tail
        self._head: list[str] = []
        self._head_len = 0
        self._tail: list[str] = []
        self._tail_len = 0
        self._dropped = 0

    def writable(self) -> bool:
        return True

    @property
    def dropped(self) -> int:
        """Characters written but not kept."""
        return self._dropped + max(0, self._tail_len - self.tail_limit)

    def write(self, s: str) -> int:
        n = len(s)
        room = self.head_limit - self._head_len
        if room > 0:
            self._head.append(s[:room])
            self._head_len += min(room, n)
            s = s[room:]
        if s:
            self._tail.append(s)
            self._tail_len += len(s)
            if self._tail_len > 2 * self.tail_limit:
                self._tail = [self._tail_text()]
                self._dropped += self._tail_len - len(self._tail[0])
                self._tail_len = len(self._tail[0])
        return n

    def _tail_text(self) -> str:
        joined = "".join(self._tail)
        if len(joined) <= self.tail_limit:
            return joined
        return joined[len(joined) - self.tail_limit:]

    def getvalue(self) -> str:
        head = "".join(self._head)
        tail = self._tail_text()
        if self.dropped:
            return f"{head}\n[... {self.dropped:,} characters omitted ...]\n{tail}"
        return head + tail


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


#: Output types that run code in a viewer: never recorded from model code.
_ACTIVE_MIMETYPES = ("application/javascript", "text/javascript",
                     "application/vnd.jupyter.widget-view+json")
_SVG_ACTIVE_RE = re.compile(r"<\s*script|\bon[a-z]+\s*=|javascript:", re.IGNORECASE)


def sanitize_outputs(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outputs of model-written code, safe for whoever opens the trajectory.

    Why: a shared notebook's outputs are shown by JupyterLab (trusted once the kernel re-sends
    them), GitHub and nbconvert's HTML, which keeps ``<script>`` and ``onerror=`` live. So HTML
    is cleaned (nh3: no scripts, no event handlers, no ``javascript:`` URLs; formatting and tables
    stay), JavaScript outputs are dropped (their ``text/plain`` stays), and an SVG that carries
    script is replaced by a note.
    """
    changed = False
    for out in outputs:
        data = out.get("data")
        if not isinstance(data, dict):
            continue
        for mime in _ACTIVE_MIMETYPES:
            if mime in data and not (mime.endswith("widget-view+json") and len(data) == 1):
                del data[mime]
                changed = True
        html = data.get("text/html")
        if html is not None:
            text = "".join(html) if isinstance(html, list) else str(html)
            data["text/html"] = _clean_html(text)
            changed = True
        svg = data.get("image/svg+xml")
        if svg is not None and _SVG_ACTIVE_RE.search("".join(svg) if isinstance(svg, list)
                                                     else str(svg)):
            del data["image/svg+xml"]
            data.setdefault("text/plain", "[an SVG image with script in it was removed]")
            changed = True
    return outputs if not changed else [o for o in outputs if o.get("data") != {}]


def _clean_html(html: str) -> str:
    import nh3

    attributes = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
    attributes.setdefault("*", set()).update({"class", "title"})
    for tag in ("table", "td", "th"):
        attributes.setdefault(tag, set()).update({"border", "align", "colspan", "rowspan"})
    return nh3.clean(html, attributes=attributes)
