"""A second scripted root model, ``scripted-stepwise``: the same counting task, another strategy.

Why: a fork that changes the root model should visibly change what the run does, offline, so forks
and their comparison can be shown and tested without an LLM. The built-in counting policy (any
other ``scripted*`` name) partitions the context and sends every chunk in one ``llm_batch``;
this one counts one chunk per step with a single ``llm()`` call and carries the running sum in its
own printed output, so a run over N chunks takes N + 2 steps (peek, N chunks, FINAL). Forked from a
run of either policy at any step, it picks up from what the conversation shows: it reads only its
own ``STEPWISE_*`` lines, so after another policy's steps it starts counting from the first chunk.

The sub-prompts are the built-in counting policy's, so the scripted sub policy answers them exactly.
``[chunks=N]`` sets the number of chunks (default: one per 20,000 characters).
"""

from __future__ import annotations

import textwrap

from .policies import (
    MAX_ATTEMPTS,
    TEXT_OF_CONTEXT,
    RootView,
    parse_count_query,
    register_root_policy,
)

__all__ = ["STEPWISE_MODEL", "NAME"]

NAME = "stepwise_count"
STEPWISE_MODEL = "scripted-stepwise"
DEFAULT_CHUNK_CHARS = 20_000


def _matches(view: RootView) -> bool:
    return view.model.startswith(STEPWISE_MODEL) and parse_count_query(view.task) is not None


def _repl(prose: str, code: str) -> str:
    return f"{prose}\n\n```repl\n{code.rstrip()}\n```"


def _int_marker(view: RootView, name: str) -> int | None:
    raw = view.marker(name)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _reply(view: RootView) -> str:
    term, whole_word = parse_count_query(view.task)  # type: ignore[misc]
    done = _int_marker(view, "STEPWISE_DONE") or 0
    total = _int_marker(view, "STEPWISE_SUM") or 0
    n_chunks = _int_marker(view, "STEPWISE_OF")
    if n_chunks is not None and done >= n_chunks:
        return (f"All {n_chunks} chunks are counted, one per step: {total} lines contain "
                f"{term!r}.\n\nFINAL({total})")
    if view.step == 1:
        code = TEXT_OF_CONTEXT + textwrap.dedent("""\
            n_lines = text.count("\\n") + 1
            print("type:", type(context).__name__, "length:", len(text), "lines:", n_lines)
            print(text[:500])
            """)
        return _repl("I look at the shape of the context before counting it piece by piece.", code)
    if view.attempts(f"\nk = {done}\n") >= MAX_ATTEMPTS:
        message = (f"No answer: the scripted stepwise model could not count chunk {done + 1} "
                   f"after {MAX_ATTEMPTS} attempts; see the step outputs.")
        return _repl(f"Chunk {done + 1} failed {MAX_ATTEMPTS} times; I stop rather than guess.",
                     f"FINAL({message!r})")
    raw = view.directives.get("chunks", "")
    n_expr = str(max(1, int(raw))) if raw.isdigit() else \
        f"max(1, -(-len(text) // {DEFAULT_CHUNK_CHARS}))"
    mode = "word" if whole_word else "exact text"
    head = (f"Count the lines of the text below that contain the {mode} {term!r} "
            "(case-sensitive). Answer with a number only.\n<text>\n")
    code = "import re\n" + TEXT_OF_CONTEXT + textwrap.dedent(f"""\
        n_chunks = {n_expr}
        k = {done}
        # The same cuts every step: at line ends near equal character offsets.
        cuts = [0]
        for i in range(1, n_chunks):
            j = text.find("\\n", max(cuts[-1], i * len(text) // n_chunks))
            cuts.append(len(text) if j < 0 else j + 1)
        cuts.append(len(text))
        reply = llm({head!r} + text[cuts[k]:cuts[k + 1]].rstrip("\\n") + "\\n</text>")
        running = {total} + int(re.findall(r"-?\\d+", reply.replace(",", ""))[0])
        print(f"chunk {{k + 1}} of {{n_chunks}}:", reply.strip())
        print("STEPWISE_OF:", n_chunks)
        print("STEPWISE_DONE:", k + 1)
        print("STEPWISE_SUM:", running)
        """)
    prose = (f"I count the lines containing {term!r} in chunk {done + 1} with one sub-call and add "
             f"it to the running sum ({total} so far).")
    return _repl(prose, code)


register_root_policy(NAME, _matches, _reply)
