"""Tool-calling mode: the REPL offered as a function tool (code in, output back), FINAL as another.

Why: some models emit no code fences at all (they were tuned to call tools); offered ``repl`` and
``final`` function tools they run a normal RLM. Each tool call becomes a step exactly like a
fenced block: a ``repl`` call's ``code`` is a block; a ``final`` call is the code line
``FINAL(answer)`` / ``FINAL_VAR(variable)``.

One text per reply, whatever the mode: the client stores an answer as its content followed by its
tool calls in a ``<tool_calls>`` JSON trailer (:func:`encode`). That text is what the cache keeps
and the notebook records, so replay serves a tool-calling reply like any other. The history sent
back rebuilds the tool calls with ids made from the step number (:func:`history_messages`), so a
replayed or resumed run sends byte-identical messages (and hits the same cache keys).
"""

from __future__ import annotations

import json
from typing import Any

from .reasoning import split_reasoning

__all__ = ["TOOLS", "REPL_TOOL", "FINAL_TOOL", "encode", "decode", "as_fenced",
           "history_messages", "tools_offered", "reply_parts"]

REPL_TOOL = "repl"
FINAL_TOOL = "final"
_OPEN, _CLOSE = "\n<tool_calls>\n", "\n</tool_calls>"

TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": REPL_TOOL,
        "description": "Run Python code in the persistent REPL (where `context`, `llm`, "
                       "`llm_batch`, `rlm` and your variables live) and get its output back.",
        "parameters": {"type": "object", "properties": {
            "code": {"type": "string", "description": "Python code to run."}},
            "required": ["code"]}}},
    {"type": "function", "function": {
        "name": FINAL_TOOL,
        "description": "End the run with the final answer: give `answer` (the text), or "
                       "`variable` (the name of a REPL variable holding it).",
        "parameters": {"type": "object", "properties": {
            "answer": {"type": "string"}, "variable": {"type": "string"}}}}},
]


def tools_offered(mode: str) -> bool:
    return mode in ("tools", "auto")


def encode(content: str, tool_calls: list[dict[str, Any]]) -> str:
    """A reply as one text: content, then its tool calls (``[{"name", "arguments"}]``)."""
    if not tool_calls:
        return content
    calls = [{"name": c["name"], "arguments": c["arguments"]} for c in tool_calls]
    return f"{content}{_OPEN}{json.dumps(calls, ensure_ascii=False)}{_CLOSE}"


def decode(text: str) -> tuple[str, list[dict[str, Any]]]:
    """``(content, tool calls)`` of an :func:`encode` text (no trailer: no calls)."""
    at = text.rfind(_OPEN)
    if at == -1 or not text.endswith(_CLOSE):
        return text, []
    try:
        calls = json.loads(text[at + len(_OPEN):-len(_CLOSE)])
    except ValueError:
        return text, []
    if not isinstance(calls, list):
        return text, []
    return text[:at], [c for c in calls if isinstance(c, dict)]


def _arguments(call: dict[str, Any]) -> dict[str, Any]:
    raw = call.get("arguments")
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {"_unreadable": str(raw)}
    return value if isinstance(value, dict) else {"_unreadable": str(raw)}


def call_code(call: dict[str, Any]) -> str:
    """The code a tool call stands for (what its step cell shows and runs)."""
    name, args = call.get("name"), _arguments(call)
    if "_unreadable" in args:
        msg = f"the {name} tool call's arguments are not a JSON object: {args['_unreadable'][:200]}"
        return f"raise ValueError({msg!r})"
    if name == REPL_TOOL:
        return str(args.get("code", ""))
    if name == FINAL_TOOL:
        if args.get("variable"):
            return f"FINAL_VAR({str(args['variable'])!r})"
        return f"FINAL({str(args.get('answer', ''))!r})"
    msg = f"there is no tool {name!r}; call repl (with code) or final (with answer)"
    return f"raise NameError({msg!r})"


def as_fenced(content: str, tool_calls: list[dict[str, Any]]) -> str:
    """The reply as if it had been written with fences: what the parser reads."""
    blocks = "".join(f"\n```repl\n{call_code(c)}\n```" for c in tool_calls)
    return content + blocks


def history_messages(n: int, content: str, tool_calls: list[dict[str, Any]],
                     feedback: str) -> list[dict[str, Any]]:
    """The assistant turn of step ``n`` with its tool calls, then one ``tool`` result per call:
    the step's whole feedback with the last call (the calls ran as one step), a pointer to it
    with the others."""
    ids = [f"call_s{n}_{k}" for k in range(1, len(tool_calls) + 1)]
    assistant: dict[str, Any] = {
        "role": "assistant", "content": content or None,
        "tool_calls": [{"id": i, "type": "function",
                        "function": {"name": str(c.get("name")),
                                     "arguments": json.dumps(_arguments(c), ensure_ascii=False)}}
                       for i, c in zip(ids, tool_calls, strict=True)]}
    results = [{"role": "tool", "tool_call_id": i,
                "content": feedback if k == len(ids) else
                "(ran together with the other calls of this turn; the output is with the last)"}
               for k, i in enumerate(ids, 1)]
    return [assistant, *results]


def reply_parts(text: str) -> tuple[str, str, list[dict[str, Any]]]:
    """``(reasoning, the reply as fenced text for the parser, its tool calls)`` of a recorded
    reply: what the engine parses and runs (and what trust shows) is never the reasoning."""
    reasoning, visible = split_reasoning(text)
    content, calls = decode(visible)
    return reasoning, as_fenced(content, calls), calls
