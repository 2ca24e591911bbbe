"""Scripted policies that play the OOLONG and OOLONG-Pairs eval families offline.

Why: the eval harness has to be tested end to end in CI without a network or an API key, and the
scripted model's scores in the eval table must come from really playing the task, not from reading
the gold. So the root policy only writes REPL code (the paper's partition + map + aggregate strategy),
and the labels come from sub-calls: the sub policy labels each question it is sent by looking the text
up in :func:`rlm_kernel.tasks.questions.label_of`, the question bank's label map. That map lives in
the package, never in the context, so a root that skipped the sub-calls could not answer, exactly as
with a real model (which would label from the question's meaning instead).

Root strategy (stateless; each reply is a pure function of the conversation, read through
:class:`~rlm_kernel.scripted.policies.RootView` and the ``NAME: value`` markers its code prints):

1. peek at the context (length, first lines);
2. parse the rows, split them into chunks of whole rows, ``llm_batch`` one labelling prompt per chunk,
   read one label per line back, count labels (overall and per user) in code; print
   ``OOLONG_COUNTS: {...}``;
3. OOLONG: compute the answer for the question type in code and call ``FINAL(answer)``;
   OOLONG-Pairs: compute the pairs in code into ``answer``, print ``PAIRS_COUNT: n``;
4. OOLONG-Pairs: ``FINAL_VAR(answer)`` in prose.

S-NIAH needs nothing here: the built-in needle policy in :mod:`policies` reads exactly the query the
S-NIAH generator writes. ``[chunks=N]`` in a query forces N labelling sub-calls, as for the built-ins.

Registration: importing this module registers the policies (``oolong``, ``oolong-pairs``,
``oolong-label``) with :mod:`policies`; :func:`register` does it again explicitly (idempotent, since
registering a name replaces the earlier policy of that name).
"""

from __future__ import annotations

import re
import textwrap

from ..tasks.oolong import parse_query
from ..tasks.oolong_pairs import Predicate, parse_pairs_query
from ..tasks.questions import LABELS, label_of
from .policies import RootView, register_root_policy, register_sub_policy

__all__ = [
    "register",
    "LABEL_PROMPT_HEAD",
    "ROWS_PER_CHUNK",
    "oolong_matches",
    "oolong_reply",
    "pairs_matches",
    "pairs_reply",
    "label_prompt_matches",
    "label_prompt_answer",
]

#: Rows per labelling sub-call: ~12K characters of questions, well inside a sub-model's window and
#: short enough that a real model can keep one answer line per question in order.
ROWS_PER_CHUNK = 250
MAX_ATTEMPTS = 3
UNKNOWN = "unknown"

LABEL_PROMPT_HEAD = (
    "Label each question below with exactly one of these labels: " + ", ".join(LABELS) + ". "
    "Answer with one label per line, in the same order as the questions, and nothing else.\n"
    "<questions>\n"
)
_QUESTION_LINE_RE = re.compile(r"^\s*\d+\.\s(.*)$")


def _repl(prose: str, code: str) -> str:
    return f"{prose}\n\n```repl\n{code.rstrip()}\n```"


def _peek(what: str) -> str:
    code = textwrap.dedent("""\
        text = context if isinstance(context, str) else str(context)
        lines = text.split("\\n")
        print("type:", type(context).__name__, "length:", len(text), "lines:", len(lines))
        print(text[:700])
        """)
    return _repl(f"I look at the shape of the context before I {what}.", code)


def _chunk_rows(view: RootView) -> str:
    """Python expression for rows per chunk (``[chunks=N]`` overrides the default)."""
    raw = view.directives.get("chunks")
    if raw and raw.isdigit() and int(raw) > 0:
        return f"max(1, -(-len(rows) // {int(raw)}))"
    return str(ROWS_PER_CHUNK)


def _label_step(view: RootView) -> str:
    """Partition the rows, label them by sub-calls, count in code."""
    code = textwrap.dedent(f"""\
        import re
        from collections import Counter
        LABELS = {list(LABELS)!r}
        text = context if isinstance(context, str) else str(context)
        row_re = re.compile(r"^Date: (.*?) \\|\\| User: (\\d+) \\|\\| Instance: (.*)$")
        rows = [m.groups() for m in map(row_re.match, text.split("\\n")) if m]
        per_chunk = {_chunk_rows(view)}
        chunks = [rows[i:i + per_chunk] for i in range(0, len(rows), per_chunk)]
        head = {LABEL_PROMPT_HEAD!r}
        prompts = [
            head + "\\n".join(f"{{j + 1}}. {{q.strip()}}" for j, (_, _, q) in enumerate(ch)) + "\\n</questions>"
            for ch in chunks
        ]
        answers = llm_batch(prompts)

        def to_label(line):
            t = re.sub(r"^\\s*\\d+\\s*[.):-]\\s*", "", line).strip().strip("*[]'\\"` .").lower()
            return t if t in LABELS else None

        row_labels = []
        for ch, ans in zip(chunks, answers):
            got = [to_label(x) for x in (ans or "").split("\\n") if x.strip()]
            row_labels.extend((got + [None] * len(ch))[:len(ch)])
        tally = Counter(lab for lab in row_labels if lab)
        counts = {{lab: tally.get(lab, 0) for lab in LABELS}}
        user_counts = {{}}
        for (_, user, _), lab in zip(rows, row_labels):
            user_counts.setdefault(int(user), Counter())[lab] += 1
        print("rows:", len(rows), "chunks:", len(chunks), "users:", len(user_counts))
        print("OOLONG_UNLABELLED:", sum(lab is None for lab in row_labels))
        print("OOLONG_COUNTS:", counts)
        """)
    return _repl(
        "Each row's label is not written down, so I split the rows into chunks, ask a sub-model to "
        "label every question, and count the labels in code.", code)


def _give_up(what: str) -> str:
    msg = (f"No answer: the scripted demonstration model (not an LLM) could not complete the {what} "
           f"step after {MAX_ATTEMPTS} attempts. See the step outputs for the errors.")
    return _repl(f"The {what} step failed {MAX_ATTEMPTS} times; I stop rather than guess.",
                 f"FINAL({msg!r})")


# --------------------------------------------------------------------------------------------------
# OOLONG


def oolong_matches(view: RootView) -> bool:
    return parse_query(view.task) is not None


def oolong_reply(view: RootView) -> str:
    qtype, a, b = parse_query(view.task)  # type: ignore[misc]
    if view.marker("OOLONG_COUNTS") is not None:
        if view.attempts("OOLONG_ANSWER") >= MAX_ATTEMPTS:
            return _give_up("answer")
        if qtype == "most_common":
            expr = '"Label: " + max(LABELS, key=lambda lab: counts[lab])'
        elif qtype == "least_common":
            expr = '"Label: " + min(LABELS, key=lambda lab: counts[lab])'
        elif qtype == "compare":
            expr = (f'"Answer: {a} is " + ("more common than" if counts[{a!r}] > counts[{b!r}] else '
                    f'"less common than" if counts[{a!r}] < counts[{b!r}] else "same frequency as") '
                    f'+ " {b}"')
        else:
            expr = f'"Answer: " + str(counts[{a!r}])'
        code = f"answer = {expr}\nprint(\"OOLONG_ANSWER:\", answer)\nFINAL(answer)"
        return _repl("The label counts are in `counts`; I compute the answer from them.", code)
    if view.step == 1:
        return _peek("label its rows")
    if view.attempts('print("OOLONG_COUNTS:"') >= MAX_ATTEMPTS:
        return _give_up("labelling")
    return _label_step(view)


# --------------------------------------------------------------------------------------------------
# OOLONG-Pairs


def pairs_matches(view: RootView) -> bool:
    return parse_pairs_query(view.task) is not None


def _pair_ok_code(p: Predicate) -> str:
    """The predicate as Python over two users' label Counters ``cu`` and ``cv``."""
    a, b, k = p.a, p.b, p.k
    if p.kind == "one_not_other":
        return f"(cu[{a!r}] >= 1) != (cv[{a!r}] >= 1)"
    one = {
        "any_of": f"c[{a!r}] + c[{b!r}] >= 1",
        "at_least": f"c[{a!r}] >= {k}",
        "exactly": f"c[{a!r}] == {k}",
        "none_of": f"c[{a!r}] == 0",
    }[p.kind]
    return f"({one.replace('c[', 'cu[')}) and ({one.replace('c[', 'cv[')})"


def pairs_reply(view: RootView) -> str:
    pred = parse_pairs_query(view.task)
    assert pred is not None
    if view.marker("PAIRS_COUNT") is not None:
        return (f"I found {view.marker('PAIRS_COUNT')} pairs where {pred.phrase()}; they are in the "
                "variable `answer`, one per line.\n\nFINAL_VAR(answer)")
    if view.marker("OOLONG_COUNTS") is not None:
        if view.attempts('print("PAIRS_COUNT:"') >= MAX_ATTEMPTS:
            return _give_up("pairing")
        code = textwrap.dedent(f"""\
            def pair_ok(cu, cv):
                return {_pair_ok_code(pred)}

            users = sorted(user_counts)
            pairs = [(u, v) for i, u in enumerate(users) for v in users[i + 1:]
                     if pair_ok(user_counts[u], user_counts[v])]
            answer = "\\n".join(f"({{u}}, {{v}})" for u, v in pairs)
            print(answer[:300])
            print("PAIRS_COUNT:", len(pairs))
            """)
        return _repl("With every row labelled, I check the predicate for every pair of users in code.",
                     code)
    if view.step == 1:
        return _peek("label its rows")
    if view.attempts('print("OOLONG_COUNTS:"') >= MAX_ATTEMPTS:
        return _give_up("labelling")
    return _label_step(view)


# --------------------------------------------------------------------------------------------------
# Sub policy: label the questions of one chunk


def label_prompt_matches(prompt: str) -> bool:
    return prompt.startswith(LABEL_PROMPT_HEAD)


def label_prompt_answer(prompt: str) -> str:
    """One label per numbered question, from the bank's label map (``unknown`` for texts it never
    made: the scripted model does not guess)."""
    body = prompt[len(LABEL_PROMPT_HEAD):]
    end = body.rfind("</questions>")
    body = body[:end] if end >= 0 else body
    out = []
    for line in body.split("\n"):
        m = _QUESTION_LINE_RE.match(line)
        if m:
            out.append(label_of(m.group(1)) or UNKNOWN)
    return "\n".join(out)


def register() -> None:
    """Register the eval policies with the scripted model (safe to call more than once)."""
    register_sub_policy("oolong-label", label_prompt_matches, label_prompt_answer)
    register_root_policy("oolong", oolong_matches, oolong_reply)
    register_root_policy("oolong-pairs", pairs_matches, pairs_reply)


register()
