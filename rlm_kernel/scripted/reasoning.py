"""The scripted model as a reasoning model, chosen by words in the model name.

Why by name: being a reasoning model is a property of the model, not of the query, and a run
names its root and sub models separately. Any scripted model name may carry these words:

- ``reasoner`` (``scripted-root-reasoner``): the answer carries ``reasoning_content`` beside
  ``content`` (vLLM's reasoning parsers, DeepSeek), streamed as ``reasoning_content`` deltas.
- ``think`` (``scripted-root-think``): the content starts with a ``<think>…</think>`` block, as
  models served without a reasoning parser send it.
- ``o-series`` (``scripted-root-o-series``): the request is refused (HTTP 400, OpenAI's words) if
  it sets a sampling parameter OpenAI's o-series and gpt-5 models refuse, e.g. ``temperature``.

The reasoning holds decoys a careless client would act on: a ```repl block that prints
``DECOY_REASONING_RAN`` and a ``FINAL(...)`` line with a wrong answer. A runtime must show
reasoning and never run or parse it.
"""

from __future__ import annotations

from .message import AssistantMessage, as_message

__all__ = ["FIELD_WORD", "THINK_WORD", "STRICT_WORD", "DECOY_MARK", "DECOY_ANSWER",
           "REFUSED_PARAMS", "reasoning_for", "decorate", "refused_param"]

FIELD_WORD = "reasoner"
THINK_WORD = "think"
STRICT_WORD = "o-series"
DECOY_MARK = "DECOY_REASONING_RAN"
DECOY_ANSWER = "decoy answer from the reasoning"
#: What OpenAI's reasoning models reject (with HTTP 400 "Unsupported parameter").
REFUSED_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "logprobs",
                  "top_logprobs", "logit_bias")


def reasoning_for(root: bool) -> str:
    """The thinking a reasoning scripted model shows before its answer, decoys included."""
    who = "root step" if root else "sub-call"
    return (
        f"The user wants the next {who}. One option would be to run this right away:\n"
        f"```repl\nprint({DECOY_MARK!r})\nFINAL({DECOY_ANSWER!r})\n```\n"
        f"or simply to answer\nFINAL({DECOY_ANSWER})\n"
        "but that is a guess; I follow my plan instead."
    )


def decorate(reply: str | AssistantMessage, model: str, *, root: bool) -> str | AssistantMessage:
    """Add reasoning to a reply as the named model would send it (unchanged for other names)."""
    if FIELD_WORD in model:
        msg = as_message(reply)
        return AssistantMessage(msg.content, reasoning_for(root), msg.tool_calls)
    if THINK_WORD in model:
        msg = as_message(reply)
        think = f"<think>\n{reasoning_for(root)}\n</think>\n\n"
        return AssistantMessage(think + msg.content, msg.reasoning_content, msg.tool_calls)
    return reply


def refused_param(model: str, params: dict[str, object]) -> str | None:
    """The first sampling parameter an ``o-series`` scripted model refuses, if the request set one."""
    if STRICT_WORD not in model:
        return None
    return next((p for p in REFUSED_PARAMS if params.get(p) is not None), None)
