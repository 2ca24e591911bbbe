"""A root policy that speaks the reference runtime's convention (``rlms``, the paper authors' package).

Why: the side-by-side benchmark (``bench/side_by_side.py``) runs ``rlms`` against the same scripted
server as this project, on the same task. ``rlms`` sends its own system prompt, reads code from
```repl blocks, feeds back ``REPL output:`` messages, offers ``llm_query_batched`` in the REPL and
ends a run only when code sets ``answer["ready"] = True`` (``answer["content"]`` is the answer);
``FINAL(...)`` means nothing to it. This policy recognises that system prompt and plays the same
strategy as the built-in counting policy (peek, then partition + one batch of sub-calls, sum in
code) in that convention. The sub-call prompts are the built-in counting policy's, so the scripted
sub policies answer them exactly as they answer ours. ``[chunks=N]`` forces N sub-calls.

Nothing of ``rlms`` is imported or copied: only the conversation's shape is read.
"""

from __future__ import annotations

import re
import textwrap

from .policies import (
    MAX_ATTEMPTS,
    ROOT_FALLBACK_ANSWER,
    TEXT_OF_CONTEXT,
    RootView,
    parse_count_query,
    parse_directives,
    register_root_policy,
    strip_directives,
)

__all__ = ["is_rlms_conversation", "rlms_query", "rlms_outputs", "NAME"]

NAME = "rlms_count"
DEFAULT_CHUNK_CHARS = 20_000

_ASK_RE = re.compile(r"\AAnswer the following: (.*?)(?:\n\nYour context is |\Z)", re.S)


def is_rlms_conversation(view: RootView) -> bool:
    """The reference runtime's system prompt: an ``answer`` dict with ``ready``, and
    ``llm_query_batched`` in the REPL."""
    return any(
        role == "system" and 'answer["ready"]' in text and "llm_query_batched" in text
        for role, text in view.messages
    )


def rlms_query(view: RootView) -> str:
    """The user's query: rlms sends it as ``Answer the following: <query>\\n\\nYour context ...``."""
    for role, text in view.messages:
        if role == "user":
            m = _ASK_RE.match(text)
            return (m.group(1) if m else text).strip()
    return ""


def rlms_outputs(view: RootView) -> list[str]:
    """The ``REPL output:`` messages fed back so far, oldest first."""
    return [text for role, text in view.messages
            if role == "user" and text.startswith("REPL output")]


def _repl(prose: str, code: str) -> str:
    return f"{prose}\n\n```repl\n{code.rstrip()}\n```"


def _submit(prose: str, answer: str) -> str:
    return _repl(prose, f'answer["content"] = {answer!r}\nanswer["ready"] = True')


def _matches(view: RootView) -> bool:
    return is_rlms_conversation(view)


def _reply(view: RootView) -> str:
    query = rlms_query(view)
    task = strip_directives(query)
    counted = parse_count_query(task)
    if counted is None:
        return _submit("I am a scripted demonstration model, not an LLM, and no rule of mine "
                       "covers this query.", ROOT_FALLBACK_ANSWER)
    term, whole_word = counted
    outputs = rlms_outputs(view)
    if not outputs:
        code = TEXT_OF_CONTEXT + textwrap.dedent("""\
            lines = text.split("\\n")
            print("type:", type(context).__name__, "length:", len(text), "lines:", len(lines))
            print(text[:500])
            """)
        return _repl("I look at the shape of the context (length, lines, first lines) first.", code)
    if sum('answer["ready"] = True' in r for r in view.replies) >= MAX_ATTEMPTS:
        return _submit(f"The chunked count failed {MAX_ATTEMPTS} times; I stop here rather "
                       "than guess.", "No answer: the scripted demonstration model (not an LLM) "
                       "could not complete the chunked count; see the REPL outputs.")
    raw = parse_directives(query).get("chunks")
    n = max(1, int(raw)) if raw and raw.isdigit() else None
    n_expr = str(n) if n else f"max(1, -(-len(text) // {DEFAULT_CHUNK_CHARS}))"
    mode = "word" if whole_word else "exact text"
    head = (f"Count the lines of the text below that contain the {mode} {term!r} "
            "(case-sensitive). Answer with a number only.\n<text>\n")
    code = "import re\n" + TEXT_OF_CONTEXT + textwrap.dedent(f"""\
        lines = text.split("\\n")
        n_chunks = {n_expr}
        bounds = [i * len(lines) // n_chunks for i in range(n_chunks + 1)]
        chunks = ["\\n".join(lines[bounds[i]:bounds[i + 1]]) for i in range(n_chunks)]
        prompts = [{head!r} + c + "\\n</text>" for c in chunks]
        counts = llm_query_batched(prompts)
        total = sum(int(re.findall(r"-?\\d+", str(a).replace(",", ""))[0]) for a in counts)
        print("chunks:", n_chunks, "COUNT_TOTAL:", total)
        answer["content"] = str(total)
        answer["ready"] = True
        """)
    return _repl(
        f"I split the lines into chunks, ask sub-models to count the lines containing {term!r} "
        "in each chunk concurrently, add the counts up and submit the total.", code)


register_root_policy(NAME, _matches, _reply)
