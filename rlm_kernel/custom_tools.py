"""Custom tools: user functions the root model is told about and may call from its code.

Why: a user's RLM often needs their own helpers (a search index, a database query, a parser). A
tool is a Python callable (or a plain value) bound into the REPL under its name and described in
the system prompt by its name, signature and the first paragraph of its docstring, as the
reference runtime (``custom_tools``) and dspy (``tools=``) do. ``RLM(tools=...)`` and
``%rlm tool NAME`` declare them; sub-RLMs get the same tools.

Accepted forms: a list of callables (named by ``__name__``), or a dict ``{name: callable}``, or
``{name: {"tool": value, "description": "..."}}`` (the rlms form), or :class:`Tool` objects.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Tool", "make_tool", "tools_from", "tools_prompt_section", "ToolError"]


class ToolError(ValueError):
    """A tool that cannot be offered (bad name, or a name the REPL already uses)."""


@dataclass(frozen=True)
class Tool:
    name: str
    value: Any
    description: str

    @property
    def callable(self) -> bool:
        return callable(self.value)

    def line(self) -> str:
        """The system prompt's line for this tool."""
        if self.callable:
            return f"- `{self.name}{_signature(self.value)}`: {self.description}"
        return f"- `{self.name}` ({type(self.value).__name__}): {self.description}"


def _signature(fn: Callable[..., Any]) -> str:
    try:
        try:  # string annotations (``from __future__ import annotations``) read as written
            return str(inspect.signature(fn, eval_str=True))
        except (NameError, SyntaxError, TypeError):
            return str(inspect.signature(fn))
    except (TypeError, ValueError):  # some builtins have none
        return "(...)"


def _first_paragraph(doc: str | None) -> str:
    text = inspect.cleandoc(doc or "").split("\n\n", 1)[0]
    return " ".join(text.split())


def make_tool(value: Any, name: str | None = None, description: str | None = None) -> Tool:
    name = name or getattr(value, "__name__", None)
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise ToolError(f"a tool needs a Python identifier as its name (not {name!r}); "
                        "pass it as {name: value}")
    if description is None:
        description = (_first_paragraph(inspect.getdoc(value)) if callable(value) else "")
    description = description or ("a custom function (no docstring)" if callable(value)
                                  else "a custom value")
    return Tool(name, value, description)


def tools_from(spec: Any, reserved: Iterable[str] = ()) -> dict[str, Tool]:
    """Normalise any accepted form to ``{name: Tool}``; refuse names the REPL reserves."""
    tools: list[Tool] = []
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        for name, entry in spec.items():
            if isinstance(entry, Tool):
                tools.append(entry)
            elif isinstance(entry, Mapping) and "tool" in entry:
                tools.append(make_tool(entry["tool"], name, entry.get("description")))
            else:
                tools.append(make_tool(entry, name))
    elif isinstance(spec, (list, tuple)):
        tools = [t if isinstance(t, Tool) else make_tool(t) for t in spec]
    else:
        raise ToolError("tools must be a list of functions or a dict {name: function}")
    out: dict[str, Tool] = {}
    taken = set(reserved)
    for tool in tools:
        if tool.name in taken:
            raise ToolError(f"the tool name {tool.name!r} is taken by the REPL's own functions; "
                            "give the tool another name")
        if tool.name in out:
            raise ToolError(f"two tools are named {tool.name!r}")
        out[tool.name] = tool
    return out


def tools_prompt_section(tools: Mapping[str, Tool]) -> str:
    """The system prompt's list of custom tools ("" when there are none)."""
    if not tools:
        return ""
    lines = "\n".join(t.line() for t in tools.values())
    return f"\nCustom tools, already defined in the REPL (call them from your code):\n{lines}\n"
