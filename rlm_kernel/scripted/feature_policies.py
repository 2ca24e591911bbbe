"""Scripted root policies that use a run's custom tools and its persistent session.

Why: the tests of custom tools and persistent sessions need a model that reads what the prompt
offers, as a real one would: a tool is used only if the system prompt lists it, and earlier runs
are known only from the ``<previous_runs>`` block of the first message.

- ``[use_tool=NAME]`` on a counting query: if the system prompt lists ``NAME(...)``, call
  ``NAME(text, term)`` in code and finish with its result; otherwise say the tool is not offered.
- ``What did the previous run answer?``: read ``<previous_runs>``, print an earlier variable
  (``total``) from the REPL, and finish with ``<previous answer> / total=<value>``; with no
  earlier runs, say so.
"""

from __future__ import annotations

import re

from .policies import (
    TEXT_OF_CONTEXT,
    RootView,
    parse_count_query,
    register_root_policy,
)

__all__ = ["PREVIOUS_QUERY"]

PREVIOUS_QUERY = "What did the previous run answer?"
_PREVIOUS_RE = re.compile(r"<previous_runs>\n(.*?)\n</previous_runs>", re.S)
_ANSWER_RE = re.compile(r"-> answer: '((?:[^'\\]|\\.)*)'\s*$")


def _repl(prose: str, code: str) -> str:
    return f"{prose}\n\n```repl\n{code.rstrip()}\n```"


def _system(view: RootView) -> str:
    return "\n".join(text for role, text in view.messages if role == "system")


def _tool_matches(view: RootView) -> bool:
    return "use_tool" in view.directives and parse_count_query(view.task) is not None


def _tool_reply(view: RootView) -> str:
    name = view.directives["use_tool"]
    term, _ = parse_count_query(view.task)  # type: ignore[misc]
    if f"`{name}(" not in _system(view):
        return _repl(f"The tool {name} is not offered to me.",
                     f"FINAL({f'the tool {name} is not offered in this run'!r})")
    code = TEXT_OF_CONTEXT + f"n = {name}(text, {term!r})\nFINAL(str(n))"
    return _repl(f"The custom tool {name} counts lines for me.", code)


def _previous_matches(view: RootView) -> bool:
    return view.task.strip() == PREVIOUS_QUERY


def _previous_reply(view: RootView) -> str:
    first = next((text for role, text in view.messages if role == "user"), "")
    found = _PREVIOUS_RE.search(first)
    if found is None:
        return _repl("No earlier run is known to me.", "FINAL('no previous run')")
    line = found.group(1).splitlines()[-1]
    m = _ANSWER_RE.search(line)
    previous = m.group(1) if m else "unknown"
    total = view.marker("PREVIOUS_TOTAL")
    if total is None:
        return _repl("I check what the earlier run left in the REPL.",
                     'print("PREVIOUS_TOTAL:", total)')
    return _repl("The earlier run's answer and its variable agree.",
                 f"FINAL({f'{previous} / total={total}'!r})")


register_root_policy("custom_tool", _tool_matches, _tool_reply)
register_root_policy("previous_run", _previous_matches, _previous_reply)
