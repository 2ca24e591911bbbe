"""Reasoning models: their thinking is shown, never run; the parameters they refuse are not sent.

Why: a reasoning model's thinking arrives either beside the answer (``reasoning_content``, as vLLM's
reasoning parsers and DeepSeek send it) or inside the answer as ``<think>…</think>`` (a model served
without a parser). Thinking routinely contains draft code and a tentative ``FINAL(...)``; running
or parsing it would act on a discarded draft. So the engine splits it off before parsing, keeps it
for the thought cell (collapsed) and never sends it back. OpenAI's o-series and gpt-5 models
refuse sampling parameters such as ``temperature`` (HTTP 400): those are dropped for them, and
``reasoning_effort`` passes through.
"""

from __future__ import annotations

import functools
import re
from typing import Any

__all__ = ["split_reasoning", "is_reasoning_model", "request_params", "REFUSED_PARAMS"]

_THINK_RE = re.compile(r"<think>(.*?)(?:</think>|\Z)", re.S | re.I)
_CLOSE = "</think>"
#: Names of OpenAI's reasoning families (optionally behind a provider prefix like ``openai/``):
#: o1, o3, o4-mini..., and gpt-5 except its ``-chat`` variants.
_REASONING_NAME_RE = re.compile(r"^(?:[\w.-]+/)*(?:o\d+(?:-[\w.-]+)?|gpt-5(?![\w.-]*-chat)[\w.-]*)$",
                                re.I)
#: What those models reject with "Unsupported parameter".
REFUSED_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "logprobs",
                  "top_logprobs", "logit_bias")


def split_reasoning(content: str, reasoning_content: str | None = None) -> tuple[str, str]:
    """``(reasoning, reply)``: the ``<think>`` blocks of ``content`` (and ``reasoning_content``)
    apart from the reply that is parsed and run.

    An unclosed ``<think>`` runs to the end (the model stopped while thinking: no reply). A
    ``</think>`` with no opening tag closes thinking that started at the very beginning (chat
    templates that put ``<think>`` in the prompt).
    """
    parts = [reasoning_content.strip()] if reasoning_content and reasoning_content.strip() else []
    text = content
    opened = text.lower().find("<think>")
    closed = text.lower().find(_CLOSE)
    if closed == -1 and opened == -1:
        return "\n\n".join(parts), content
    if closed != -1 and (opened == -1 or closed < opened):
        parts.append(text[:closed].strip())
        text = text[closed + len(_CLOSE):]
    parts += [m.group(1).strip() for m in _THINK_RE.finditer(text)]
    return "\n\n".join(p for p in parts if p), _THINK_RE.sub("", text).lstrip("\n")


def is_reasoning_model(model: str, setting: str = "auto") -> bool:
    """``setting``: "yes"/"no" say so; "auto" goes by the name (OpenAI's reasoning families)."""
    if setting in ("yes", "no"):
        return setting == "yes"
    return _named_reasoning(model)


@functools.lru_cache(maxsize=256)
def _named_reasoning(model: str) -> bool:  # asked once per call: a session has few model names
    return _REASONING_NAME_RE.match(model.strip()) is not None


def request_params(model: str, params: dict[str, Any], *, reasoning_model: str = "auto",
                   reasoning_effort: str = "") -> dict[str, Any]:
    """The request parameters to send: without those a reasoning model refuses, with
    ``max_completion_tokens`` for its ``max_tokens`` and ``reasoning_effort`` when set."""
    out = dict(params)
    if is_reasoning_model(model, reasoning_model):
        for name in REFUSED_PARAMS:
            out.pop(name, None)
        if "max_tokens" in out:
            out["max_completion_tokens"] = out.pop("max_tokens")
    if reasoning_effort:
        out["reasoning_effort"] = reasoning_effort
    return out
