"""The reference runtime's way to finish: ``answer["content"] = ...; answer["ready"] = True``.

Why: models trained or prompted for rlms (the paper authors' runtime) end a run by setting the
REPL's ``answer`` dict, never by ``FINAL``. Each run binds a fresh :class:`AnswerDict` as
``answer`` and puts back what the name held before when the run ends, unless the model rebound
it (a human's own ``answer`` variable in the kernel survives the run). After each step
:func:`submitted` reads it: the content counts once ``ready`` is truthy, as it stands at the end
of the step. A model that rebinds ``answer`` to a plain dict with ``ready`` set is understood too;
rebinding it to anything else is just a variable of that name.

Precedence when one step finishes in several ways: ``FINAL``/``FINAL_VAR`` called from code, then
the ``answer`` dict, then a ``FINAL``/``FINAL_VAR`` line in prose (or the ``final`` tool call).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["AnswerDict", "bind_answer", "release_answer", "submitted", "NAME"]

NAME = "answer"
_NOTHING = object()


class AnswerDict(dict[str, Any]):
    """``{"content": "", "ready": False}``, owned by one run (so it can tell it apart from a
    variable of the same name); ``previous`` is what the name held before the run."""

    def __init__(self, previous: Any = _NOTHING) -> None:
        super().__init__(content="", ready=False)
        self.previous = previous


def bind_answer(namespace: dict[str, Any]) -> AnswerDict:
    """Give a run a fresh ``answer`` dict, keeping what the name held to put it back later."""
    current = namespace.get(NAME, _NOTHING)
    if isinstance(current, AnswerDict):
        current = current.previous
    fresh = AnswerDict(current)
    namespace[NAME] = fresh
    return fresh


def release_answer(namespace: dict[str, Any], owned: AnswerDict | None) -> None:
    """The run ended: if ``answer`` is still its dict, the name gets its old value back."""
    if owned is None:
        return
    previous = owned.previous
    if namespace.get(NAME) is not owned:
        return
    if previous is _NOTHING:
        namespace.pop(NAME, None)
    else:
        namespace[NAME] = previous


def submitted(namespace: Mapping[str, Any], owned: AnswerDict | None) -> str | None:
    """The submitted answer after a step, if ``answer["ready"]`` is truthy (the run's own dict,
    or a plain dict the model bound to the name)."""
    if owned is None:
        return None
    value = namespace.get(NAME)
    if not isinstance(value, Mapping) or not value.get("ready"):
        return None
    content = value.get("content", "")
    return content if isinstance(content, str) else str(content)
