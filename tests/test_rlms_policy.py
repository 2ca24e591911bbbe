"""The scripted root speaks the reference runtime's (rlms) convention when it sees rlms's prompt.

No rlms needed: the conversation below has rlms's shape (its system prompt's markers, the
"Answer the following: ..." metadata message, "Turn k/N" prompts, "REPL output:" feedback).
"""

from __future__ import annotations

import re

from rlm_kernel.scripted import ScriptedModel
from rlm_kernel.scripted.policies import count_lines, sub_answer
from rlm_kernel.scripted.wire import parse_request

SYSTEM = (
    "You are a Recursive Language Model (RLM): a language model with a prompt, and a very "
    "important context stored in a Python REPL related to that prompt.\n"
    "- `llm_query_batched(prompts: list[str], model=None) -> list[str]`: concurrently call ...\n"
    '- `answer`: dict initialized to `{"content": "", "ready": False}`. To submit, set '
    '`answer["content"]` to the final answer and `answer["ready"] = True` inside a ```repl``` block.'
)


def _ask(messages: list[dict[str, str]]) -> tuple[str, str]:
    model = ScriptedModel()
    req = parse_request({"model": "scripted-root", "messages": messages})
    is_root, policy, content = model.answer(req)
    assert is_root
    return policy, content


def _code(reply: str) -> str:
    m = re.search(r"```repl\n(.*?)\n```", reply, re.S)
    assert m, reply
    return m.group(1)


def _start(query: str, n_chars: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Answer the following: {query}\n\nYour context is a str of "
                                    f"{n_chars} total characters. Each sub-LLM call can handle "
                                    "roughly ~100k tokens at once."},
        {"role": "user", "content": "You have not interacted with the REPL environment or seen "
                                    "your prompt / context yet. Look at the context first; do "
                                    "not provide a final answer yet.\n\nTurn 1/30:"},
    ]


def test_rlms_conversation_peeks_then_batches_and_submits_via_answer_dict() -> None:
    context = "\n".join(f"line {i} {'ERROR' if i % 7 == 0 else 'INFO'}" for i in range(500))
    messages = _start("How many lines contain 'ERROR'? [chunks=5]", len(context))
    policy, first = _ask(messages)
    assert policy == "rlms_count"
    assert "FINAL" not in first and "answer[" not in first  # turn 1 only looks
    ns: dict = {"context": context}
    exec(_code(first), ns)  # noqa: S102 - the policy's own code, as rlms's REPL would run it
    messages += [{"role": "assistant", "content": first},
                 {"role": "user", "content": "REPL output:\ntype: str length: ..."},
                 {"role": "user", "content": "Turn 2/30:"}]
    policy, second = _ask(messages)
    assert policy == "rlms_count"
    code = _code(second)
    assert "llm_query_batched(" in code and 'answer["ready"] = True' in code
    assert "FINAL" not in second

    sent: list[list[str]] = []

    def llm_query_batched(prompts: list[str], model: str | None = None) -> list[str]:
        sent.append(list(prompts))
        return [sub_answer(p)[1] for p in prompts]  # the scripted sub policies answer them

    ns = {"context": context, "llm_query_batched": llm_query_batched,
          "answer": {"content": "", "ready": False}}
    exec(code, ns)  # noqa: S102
    assert len(sent) == 1 and len(sent[0]) == 5  # [chunks=5]: exactly five sub-calls
    assert ns["answer"]["ready"] is True
    assert ns["answer"]["content"] == str(count_lines(context, "ERROR", False))


def test_our_own_prompt_still_gets_the_builtin_count_policy() -> None:
    messages = [
        {"role": "system", "content": "You are the root model of a Recursive Language Model ..."},
        {"role": "user", "content": "<query>\nHow many lines contain 'ERROR'?\n</query>"},
    ]
    policy, _ = _ask(messages)
    assert policy == "count"


def test_unknown_query_in_rlms_convention_submits_the_fallback() -> None:
    policy, reply = _ask(_start("Summarise the plot of the novel.", 100))
    assert policy == "rlms_count"
    code = _code(reply)
    assert 'answer["ready"] = True' in code and "not an LLM" in code
