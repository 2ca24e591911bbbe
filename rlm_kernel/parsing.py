"""Reading a root model's reply: code blocks, prose, and FINAL / FINAL_VAR in prose.

Rules (also stated in the README):
- Code is every ```repl or ```python fenced block (also ``py``, ``py3``, ``python3``, ``ipython``),
  run in order as one step. An unclosed fence runs to the end of the reply (models often stop
  mid-fence when they hit a stop sequence), except in a reply cut at the token bound
  (``cut=True``): there it is a fragment, and only complete blocks run. CRLF line ends are read
  as LF.
- ``FINAL(...)`` / ``FINAL_VAR(...)`` count in prose only at the start of a line, outside fences; the
  argument is read with balanced parentheses and quotes, so answers may hold ``)``, quotes or newlines.
- When a reply has both code and a prose FINAL, the code runs first; a FINAL called from that code is
  authoritative, otherwise the prose FINAL ends the run (so ``FINAL_VAR`` may name a variable the
  code just set).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

__all__ = ["ParsedReply", "parse_reply", "CODE_LANGS"]

CODE_LANGS = ("repl", "python", "py", "python3", "py3", "ipython", "ipython3")

_FENCE_RE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+-]*)[^\n]*$", re.MULTILINE)
_FINAL_RE = re.compile(r"^[ \t>*_]*(FINAL_VAR|FINAL)[ \t]*\(", re.MULTILINE)


@dataclass
class ParsedReply:
    code: str | None  # all runnable blocks joined, or None
    blocks: list[str]
    prose: str  # the reply with every fenced block removed
    final: str | None = None  # FINAL(...) in prose: the answer text
    final_var: str | None = None  # FINAL_VAR(...) in prose: the variable name
    dropped: str | None = None  # a cut reply's unfinished last block (not run)

    @property
    def has_final(self) -> bool:
        return self.final is not None or self.final_var is not None


def _split_fences(reply: str) -> tuple[list[str], str, bool]:
    """Return (runnable code blocks, prose without any fenced block, whether the last runnable
    block is unclosed)."""
    blocks: list[str] = []
    unclosed = False
    prose_parts: list[str] = []
    pos = 0
    while True:
        m = _FENCE_RE.search(reply, pos)
        if not m:
            prose_parts.append(reply[pos:])
            break
        prose_parts.append(reply[pos:m.start()])
        fence, lang = m.group(1), m.group(2).lower()
        body_start = m.end() + 1
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", re.MULTILINE)
        c = close.search(reply, body_start)
        body = reply[body_start:c.start()] if c else reply[body_start:]
        if lang in CODE_LANGS or (lang == "" and _looks_like_python(body)):
            blocks.append(body.rstrip("\n"))
            unclosed = c is None
        pos = c.end() if c else len(reply)
    return blocks, "".join(prose_parts), unclosed


def _looks_like_python(body: str) -> bool:
    """An unlabelled fence counts as code only if it parses as Python and is not a bare answer."""
    text = body.strip()
    if not text or "\n" not in text and not re.search(r"[=(\[]", text):
        return False
    try:
        ast.parse(text)
    except SyntaxError:
        return False
    return True


def _balanced_arg(text: str, start: int, honour_quotes: bool = True) -> tuple[str, bool]:
    """Read from just after an opening '(' to its matching ')', honouring quotes and nesting.

    Returns (argument, closed). Unclosed: everything to the end, trailing ')' trimmed.
    """
    depth = 1
    i = start
    quote: str | None = None
    # Prose like FINAL(it's 3) has stray apostrophes: honour quotes only for a quoted argument.
    quoted = honour_quotes and text[start:].lstrip()[:1] in ("'", '"')
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if text.startswith(quote, i):
                i += len(quote)
                quote = None
                continue
        elif quoted and text.startswith(('"""', "'''"), i):
            quote = text[i:i + 3]
            i += 3
            continue
        elif quoted and ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return text[start:i], True
        i += 1
    if quoted:
        # Quotes that never balance (FINAL('it's fine')) were prose apostrophes after all: read
        # the argument by parentheses alone rather than swallowing the rest of the reply.
        return _balanced_arg(text, start, honour_quotes=False)
    return text[start:].rstrip().removesuffix(")"), False


def _unquote(arg: str) -> str:
    """``FINAL("x")`` in prose means x; ``FINAL(x)`` means the text x."""
    stripped = arg.strip()
    if len(stripped) >= 2 and stripped[0] in "\"'" and stripped[-1] == stripped[0]:
        try:
            value = ast.literal_eval(stripped)
        except (ValueError, SyntaxError):
            return stripped[1:-1]
        return str(value)
    return stripped


def parse_reply(reply: str, *, cut: bool = False) -> ParsedReply:
    """``cut``: the reply was cut at the token bound (finish reason ``length``): an unclosed last
    block and an unclosed ``FINAL(`` are fragments, not code or an answer."""
    # Fences and FINAL are found line by line: CRLF (and lone CR) line ends must not hide a
    # closing fence, or the prose after it would run as code.
    reply = reply.replace("\r\n", "\n").replace("\r", "\n")
    blocks, prose, unclosed = _split_fences(reply)
    dropped = None
    if cut and unclosed:
        dropped = blocks.pop()
    parsed = ParsedReply(code="\n\n".join(blocks) if blocks else None, blocks=blocks, prose=prose,
                         dropped=dropped)
    m = _FINAL_RE.search(prose)
    if m:
        arg, closed = _balanced_arg(prose, m.end())
        if cut and not closed:
            return parsed
        if m.group(1) == "FINAL_VAR":
            parsed.final_var = _unquote(arg).strip()
        else:
            parsed.final = _unquote(arg)
    return parsed
