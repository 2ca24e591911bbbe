"""An assistant message richer than a string: reasoning beside the content, and tool calls.

Why: reasoning models (vLLM's and DeepSeek's ``reasoning_content``) and tool-calling models
(``tool_calls`` instead of code fences) put part of their answer outside ``content``. A policy may
return an :class:`AssistantMessage` instead of a plain string; the wire module turns it into the
``message`` of a chat completion (or the deltas of a stream) exactly as such servers do.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

__all__ = ["AssistantMessage", "ToolCall", "as_message"]


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asks for; ``arguments`` are sent JSON-encoded."""

    name: str
    arguments: dict[str, Any]

    def call_id(self, salt: str, index: int) -> str:
        """A deterministic ``call_...`` id (replayed conversations get the same ids)."""
        digest = hashlib.sha256(f"{salt}\x00{index}\x00{self.name}\x00{self.json()}".encode())
        return "call_" + digest.hexdigest()[:24]

    def json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass(frozen=True)
class AssistantMessage:
    """``content`` plus, optionally, ``reasoning_content`` and ``tool_calls``."""

    content: str
    reasoning_content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


def as_message(reply: str | AssistantMessage) -> AssistantMessage:
    return reply if isinstance(reply, AssistantMessage) else AssistantMessage(reply)
