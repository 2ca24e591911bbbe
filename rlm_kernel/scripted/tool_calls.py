"""The scripted model in tool-calling mode: fenced replies become ``repl`` / ``final`` tool calls.

Why a translation and not separate policies: a tool-calling model does the same work as a fencing
one, only the envelope differs. When a root request offers the ``repl`` function tool (its
``code`` argument is run in the REPL) the scripted model sends each ```repl block of its reply as
one ``repl`` call and a ``FINAL(x)`` / ``FINAL_VAR(name)`` line as a ``final`` call
(``{"answer": x}`` / ``{"variable": name}``), with the prose left as ``content`` and no fence in
it. Reading goes the other way (:func:`render_tool_calls`): an assistant turn's tool calls read
as the fences and FINAL lines they stand for, so the policies see one conversation either way.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .message import AssistantMessage, ToolCall

__all__ = ["REPL_TOOL", "FINAL_TOOL", "to_tool_calls", "render_tool_calls", "offers_repl_tool"]

REPL_TOOL = "repl"
FINAL_TOOL = "final"

_BLOCK_RE = re.compile(r"^```repl[ \t]*\n(.*?)\n```[ \t]*$", re.S | re.M)
_FINAL_RE = re.compile(r"^[ \t]*(FINAL_VAR|FINAL)\((.*)\)[ \t]*$", re.S | re.M)


def offers_repl_tool(tools: tuple[str, ...]) -> bool:
    return REPL_TOOL in tools


def to_tool_calls(reply: str, tools: tuple[str, ...]) -> AssistantMessage:
    """A fenced reply as a tool-calling model would send it (``final`` only if it is offered)."""
    calls = [ToolCall(REPL_TOOL, {"code": m.group(1)}) for m in _BLOCK_RE.finditer(reply)]
    prose = _BLOCK_RE.sub("", reply)
    final = _FINAL_RE.search(prose)
    if final is not None:
        arg = final.group(2).strip()
        if FINAL_TOOL in tools:
            key = "variable" if final.group(1) == "FINAL_VAR" else "answer"
            calls.append(ToolCall(FINAL_TOOL, {key: _unquote(arg)}))
        else:  # no final tool: finish from code, as the REPL tool allows
            fn = "FINAL_VAR" if final.group(1) == "FINAL_VAR" else "FINAL"
            calls.append(ToolCall(REPL_TOOL, {"code": f"{fn}({_unquote(arg)!r})"}))
        prose = prose[:final.start()] + prose[final.end():]
    return AssistantMessage(re.sub(r"\n{3,}", "\n\n", prose).strip(), tool_calls=tuple(calls))


def _unquote(arg: str) -> str:
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "\"'":
        return arg[1:-1]
    return arg


def render_tool_calls(raw: Any) -> str:
    """An assistant turn's ``tool_calls`` as the text they stand for (never raises: a malformed
    call reads as what it is)."""
    parts: list[str] = []
    for call in raw if isinstance(raw, list) else []:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            continue
        name = fn.get("name")
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except (TypeError, ValueError):
            args = None
        if not isinstance(args, dict):
            parts.append(f"[tool call {name} with unreadable arguments]")
        elif name == REPL_TOOL:
            parts.append(f"```repl\n{args.get('code', '')}\n```")
        elif name == FINAL_TOOL and "variable" in args:
            parts.append(f"FINAL_VAR({args['variable']})")
        elif name == FINAL_TOOL:
            parts.append(f"FINAL({args.get('answer', '')})")
        else:
            parts.append(f"[tool call {name}({json.dumps(args, ensure_ascii=False)})]")
    return "".join("\n" + p for p in parts)
