"""Root replies the benchmark's server plays beyond the package's scripted policies.

Why here and not in ``rlm_kernel.scripted``: they exist only to drive peers and trivial runs in
benchmarks. They are consulted by ``bench/_server.py`` before the package's own policies:

- ``[steps=N]`` in a query, in any of the three conventions (ours, rlms 0.1.3, dspy.RLM 3.x):
  N trivial code steps (assign and print), then a step that ends the run from code. ``[steps=0]``
  is the trivial one-step run. Used for per-step overhead and start-up figures.
- dspy.RLM's convention for the counting task (``How many lines contain 'TERM'? [chunks=N]``):
  peek, then one ``llm_query_batched`` over N line-aligned chunks whose prompts are the package's
  counting sub-prompts (so the package's sub policy answers them), sum, ``SUBMIT``. dspy sends one
  system + one user message per step (its REPL history is inside the user message) and expects its
  ChatAdapter's ``[[ ## field ## ]]`` reply shape; nothing of dspy is imported or copied.

Each function is pure in the request's messages, like the package's policies.
"""

from __future__ import annotations

import re
import textwrap

from rlm_kernel.scripted import policies, rlms_policy

Messages = tuple[tuple[str, str], ...]

_DSPY_QUERY_RE = re.compile(r"Variable: `query`.*?Preview:\s*```[^\n]*\n(.*?)\n\s*```", re.S)
COUNT_HEAD = ("Count the lines of the text below that contain the {mode} {term!r} (case-sensitive). "
              "Answer with a number only.\n<text>\n")


def convention(messages: Messages) -> str | None:
    """Which runtime sent this root request: "dspy", "rlms", "ours", or None (a sub-call)."""
    system = "\n".join(text for role, text in messages if role in ("system", "developer"))
    if "llm_query_batched" in system and "SUBMIT(" in system and "[[ ## code ## ]]" in system:
        return "dspy"
    if not policies.is_root_request(messages):
        return None
    view = policies.parse_root(messages)
    return "rlms" if rlms_policy.is_rlms_conversation(view) else "ours"


def query_of(conv: str, messages: Messages) -> str:
    if conv == "dspy":
        user = next((text for role, text in messages if role == "user"), "")
        m = _DSPY_QUERY_RE.search(user)
        return "\n".join(ln.strip() for ln in m.group(1).splitlines()) if m else ""
    view = policies.parse_root(messages)
    return rlms_policy.rlms_query(view) if conv == "rlms" else view.query


def step_of(conv: str, messages: Messages) -> int:
    """The number of the reply being written (1 for the first)."""
    if conv == "dspy":
        user = next((text for role, text in messages if role == "user"), "")
        return user.count("=== Step ") + 1
    if conv == "rlms":
        return len(rlms_policy.rlms_outputs(policies.parse_root(messages))) + 1
    return policies.parse_root(messages).step


def _block(conv: str, prose: str, code: str) -> str:
    if conv == "dspy":
        return (f"[[ ## reasoning ## ]]\n{prose}\n\n[[ ## code ## ]]\n```python\n{code.rstrip()}\n"
                "```\n\n[[ ## completed ## ]]")
    return f"{prose}\n\n```repl\n{code.rstrip()}\n```"


def _finish_code(conv: str, answer_expr: str) -> str:
    if conv == "dspy":
        return f"SUBMIT({answer_expr})"
    if conv == "rlms":
        return f'answer["content"] = {answer_expr}\nanswer["ready"] = True'
    return f"FINAL({answer_expr})"


def steps_reply(conv: str, step: int, steps: int) -> str:
    if step <= steps:
        return _block(conv, f"Trivial step {step} of {steps}.", f"x{step} = {step}\nprint(x{step})")
    return _block(conv, "Done.", _finish_code(conv, "'done'"))


def dspy_count_reply(messages: Messages, query: str) -> str | None:
    counted = policies.parse_count_query(policies.strip_directives(query))
    if counted is None:
        return None
    term, whole_word = counted
    user = next((text for role, text in messages if role == "user"), "")
    if "=== Step " not in user:
        return _block("dspy", "I look at the shape of the context first.",
                      'print("length:", len(context), "lines:", context.count("\\n") + 1)\n'
                      "print(context[:500])")
    if user.count("COUNT_TOTAL") >= policies.MAX_ATTEMPTS:
        return _block("dspy", "The chunked count keeps failing; I stop.",
                      "SUBMIT('No answer: the chunked count failed')")
    raw = policies.parse_directives(query).get("chunks")
    n_expr = str(max(1, int(raw))) if raw and raw.isdigit() else \
        f"max(1, -(-len(text) // {policies.DEFAULT_CHUNK_CHARS}))"
    head = COUNT_HEAD.format(mode="word" if whole_word else "exact text", term=term)
    code = "import re\n" + textwrap.dedent(f"""\
        text = context if isinstance(context, str) else str(context)
        n_chunks = {n_expr}
        cuts = [0]
        for i in range(1, n_chunks):
            j = text.find("\\n", max(cuts[-1], i * len(text) // n_chunks))
            cuts.append(len(text) if j < 0 else j + 1)
        cuts.append(len(text))
        prompts = [{head!r} + text[a:b].rstrip("\\n") + "\\n</text>" for a, b in zip(cuts, cuts[1:])]
        counts = llm_query_batched(prompts)
        total = sum(int(re.findall(r"-?\\d+", str(a).replace(",", ""))[0]) for a in counts)
        print("chunks:", n_chunks, "COUNT_TOTAL:", total)
        SUBMIT(str(total))
        """)
    return _block("dspy", "I split the lines into chunks, count each with a sub-call, add up and "
                  "submit.", code)


def bench_reply(messages: Messages) -> tuple[str, str] | None:
    """``(policy name, reply)`` if a bench policy answers this root request, else None."""
    conv = convention(messages)
    if conv is None:
        return None
    query = query_of(conv, messages)
    raw = policies.parse_directives(query).get("steps")
    if raw is not None and raw.isdigit():
        return f"bench_steps_{conv}", steps_reply(conv, step_of(conv, messages), int(raw))
    if conv == "dspy":
        reply = dspy_count_reply(messages, query)
        if reply is not None:
            return "bench_dspy_count", reply
        return "bench_dspy_fallback", _block("dspy", "No rule of mine covers this query.",
                                             "SUBMIT('no rule')")
    return None
