"""Root policies that speak the reference runtime's convention (``rlms``, the paper authors' package).

Why: users bring models trained or prompted for ``rlms``, whose runs end when code sets
``answer["ready"] = True`` (``answer["content"]`` is the answer) and whose REPL offers
``llm_query``, ``llm_query_batched``, ``rlm_query`` and ``rlm_query_batched``; ``FINAL(...)`` means
nothing to such a model. The scripted model plays that convention in two settings:

- **in rlms's own prompts** (policy ``rlms_count``): it recognises rlms's system prompt, reads the
  query from the ``Answer the following: ...`` message and the ``REPL output:`` feedback. This is
  how ``bench/side_by_side.py`` runs rlms against the same server as this project, and how the
  rlms log fixtures of the importer tests are generated (``tests/data/rlms_logs``).
- **in this project's prompts** (policy ``rlms_speaker``): a query carrying ``[convention=rlms]``
  gets replies written only as rlms's prompts elicit, never ``FINAL``; it checks that a model
  trained on rlms finishes runs here.

Strategies (stateless; each reply is a pure function of the conversation, read through the
``NAME: value`` markers its code prints):

- counting (``How many lines contain 'X'?``): peek, then one ``llm_query_batched`` over chunks of
  whole lines, sum in code, submit through the ``answer`` dict. The sub-prompts are the built-in
  counting policy's, so the scripted sub policies answer them exactly.
- needle with ``[strategy=rlm_query]`` / ``[strategy=rlm_query_batched]``: peek, then one child
  RLM per chunk (its prompt is the built-in needle sub-prompt plus the chunk), submit the first
  value found. At the depth limit rlms turns ``rlm_query`` into ``llm_query`` and the scripted sub
  policy answers the same prompt.
- a child (rlms hands ``rlm_query``'s prompt to the child as its context, with no query): print
  the head of ``context`` (``TASK_HEAD:``), read the task from it, solve it in code, submit.
- ``[stall=yes]`` on a count: count a quarter of the lines per step in code (``PARTIAL_COUNT:``),
  so a small iteration budget runs out first; asked for a best answer (rlms's out-of-iterations
  turn ends with an assistant message ``Please provide a final answer ...``), reply in prose
  with the partial count.

``[chunks=N]`` sets the number of chunks. Nothing of ``rlms`` is imported or copied: only the
conversation's shape is read.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass

from ..prompts import RLM_QUERY_TASK
from .policies import (
    MAX_ATTEMPTS,
    ROOT_FALLBACK_ANSWER,
    TEXT_OF_CONTEXT,
    RootView,
    parse_count_query,
    parse_directives,
    parse_needle_query,
    register_root_policy,
    strip_directives,
)

__all__ = ["is_rlms_conversation", "rlms_query", "rlms_outputs", "NAME", "SPEAKER_NAME",
           "CONVENTION_DIRECTIVE", "rlms_reply"]

NAME = "rlms_count"
SPEAKER_NAME = "rlms_speaker"
CONVENTION_DIRECTIVE = "convention"
DEFAULT_CHUNK_CHARS = 20_000
STALL_PARTS = 4

_ASK_RE = re.compile(r"\AAnswer the following: (.*?)(?:\n\nYour context is |\Z)", re.S)
_DEFAULT_ANSWER_ASK = "Please provide a final answer"
_CONTEXTS_NOTE_RE = re.compile(r"You have (\d+) contexts available")
_NEEDLE_HEAD_RE = re.compile(
    r"Find the special magic (?P<kind>\w+) for (?P<key>'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\")")
_COUNT_HEAD_RE = re.compile(
    r"Count the lines of the text below that contain the (?P<mode>exact text|word) "
    r"(?P<term>'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\")")


# --------------------------------------------------------------------------------------------------
# Reading a conversation in either runtime's prompts


@dataclass(frozen=True)
class Convo:
    """What the strategies need: the query (None for an rlms child, whose task is in its
    context), the REPL outputs so far (oldest first), the replies so far, and whether the last
    turn asks for a best answer now."""

    query: str | None
    outputs: tuple[str, ...]
    replies: tuple[str, ...]
    wants_answer_now: bool = False
    context_var: str = "context"  # rlms persistent sessions: the newest is context_<n-1>

    def marker(self, name: str) -> str | None:
        pattern = re.compile(rf"^{re.escape(name)}:[ \t]*(.*)$", re.M)
        for text in reversed(self.outputs):
            found = pattern.findall(text)
            if found:
                return str(found[-1]).strip()
        return None

    def attempts(self, snippet: str) -> int:
        return sum(snippet in reply for reply in self.replies)


def is_rlms_conversation(view: RootView) -> bool:
    """The reference runtime's system prompt (an ``answer`` dict with ``ready``, and
    ``llm_query_batched`` in the REPL), and not this project's first message (whose prompt
    names those too, as accepted alternatives)."""
    return any(
        role == "system" and 'answer["ready"]' in text and "llm_query_batched" in text
        for role, text in view.messages
    ) and not any(role == "user" and text.startswith("<context_info>")
                  for role, text in view.messages)


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


def _rlms_convo(view: RootView) -> Convo:
    first = next((text for role, text in view.messages if role == "user"), "")
    m = _ASK_RE.match(first)
    last_role, last_text = view.messages[-1] if view.messages else ("", "")
    asks = last_role == "assistant" and last_text.startswith(_DEFAULT_ANSWER_ASK)
    replies = view.replies[:-1] if asks else view.replies
    notes = [int(n) for role, text in view.messages if role == "user"
             for n in _CONTEXTS_NOTE_RE.findall(text)]
    var = f"context_{notes[-1] - 1}" if notes else "context"
    return Convo(m.group(1).strip() if m else None, tuple(rlms_outputs(view)), replies, asks, var)


def _our_convo(view: RootView, query: str | None = "") -> Convo:
    outputs = tuple(view.outputs[k] for k in sorted(view.outputs))
    last_role, last_text = view.messages[-1] if view.messages else ("", "")
    asks = last_role == "user" and "<best_effort>" in last_text
    return Convo(view.query if query == "" else query, outputs, view.replies, asks)


# --------------------------------------------------------------------------------------------------
# Writing replies


def _repl(prose: str, code: str) -> str:
    return f"{prose}\n\n```repl\n{code.rstrip()}\n```"


def _text_of(convo: Convo) -> str:
    """Code binding ``text`` to the context as a string (the newest one in a persistent rlms
    session, where ``context`` stays the first)."""
    if convo.context_var == "context":
        return TEXT_OF_CONTEXT
    return f"context_now = {convo.context_var}\n" + TEXT_OF_CONTEXT.replace("context", "context_now")


def _submit_code(answer_expr: str) -> str:
    return f'answer["content"] = {answer_expr}\nanswer["ready"] = True'


def _submit(prose: str, answer: str) -> str:
    return _repl(prose, _submit_code(repr(answer)))


def _peek_reply(convo: Convo, what: str) -> str:
    code = _text_of(convo) + textwrap.dedent("""\
        lines = text.split("\\n")
        print("type:", type(text).__name__, "length:", len(text), "lines:", len(lines))
        print(text[:500])
        """)
    return _repl(f"I look at the shape of the context (length, lines, first lines) before {what}.",
                 code)


def _n_chunks(query: str) -> str:
    raw = parse_directives(query).get("chunks")
    n = max(1, int(raw)) if raw and raw.isdigit() else None
    return str(n) if n else f"max(1, -(-len(text) // {DEFAULT_CHUNK_CHARS}))"


def _count_head(term: str, whole_word: bool) -> str:
    mode = "word" if whole_word else "exact text"
    return (f"Count the lines of the text below that contain the {mode} {term!r} "
            "(case-sensitive). Answer with a number only.\n<text>\n")


def _count_batched(convo: Convo, query: str, term: str, whole_word: bool) -> str:
    if convo.attempts('answer["ready"] = True') >= MAX_ATTEMPTS:
        return _submit(f"The chunked count failed {MAX_ATTEMPTS} times; I stop here rather "
                       "than guess.", "No answer: the scripted demonstration model (not an LLM) "
                       "could not complete the chunked count; see the REPL outputs.")
    code = "import re\n" + _text_of(convo) + textwrap.dedent(f"""\
        lines = text.split("\\n")
        n_chunks = {_n_chunks(query)}
        bounds = [i * len(lines) // n_chunks for i in range(n_chunks + 1)]
        chunks = ["\\n".join(lines[bounds[i]:bounds[i + 1]]) for i in range(n_chunks)]
        prompts = [{_count_head(term, whole_word)!r} + c + "\\n</text>" for c in chunks]
        counts = llm_query_batched(prompts)
        total = sum(int(re.findall(r"-?\\d+", str(a).replace(",", ""))[0]) for a in counts)
        print("chunks:", n_chunks, "COUNT_TOTAL:", total)
        """) + _submit_code("str(total)")
    return _repl(
        f"I split the lines into chunks, ask sub-models to count the lines containing {term!r} "
        "in each chunk concurrently, add the counts up and submit the total.", code)


def _count_stalled(convo: Convo, term: str, whole_word: bool) -> str:
    """A quarter of the lines per step, counted in code: slow on purpose (best-effort tests)."""
    done = convo.marker("PARTIAL_PARTS")
    parts = int(done) if done and done.isdigit() else 0
    if parts >= STALL_PARTS:
        total = convo.marker("PARTIAL_COUNT") or "0"
        return _submit(f"All {STALL_PARTS} parts are counted: {total}.", total)
    test = (f"re.search(r'(?<!\\w)' + re.escape({term!r}) + r'(?!\\w)', line)" if whole_word
            else f"{term!r} in line")
    code = "import re\n" + _text_of(convo) + textwrap.dedent(f"""\
        lines = text.split("\\n")
        part = {parts}
        a, b = part * len(lines) // {STALL_PARTS}, (part + 1) * len(lines) // {STALL_PARTS}
        partial = {int(convo.marker("PARTIAL_COUNT") or 0)} + sum(1 for line in lines[a:b] if {test})
        print("PARTIAL_PARTS:", part + 1)
        print("PARTIAL_COUNT:", partial)
        """)
    return _repl(f"I count part {parts + 1} of {STALL_PARTS} of the lines in code.", code)


def _best_effort(convo: Convo) -> str:
    """Asked to answer now: the best the outputs support, in prose (no code)."""
    total = convo.marker("COUNT_TOTAL")
    if total is not None:
        return total
    partial = convo.marker("PARTIAL_COUNT")
    if partial is not None:
        parts = convo.marker("PARTIAL_PARTS") or "?"
        return (f"{partial} (best effort: only {parts} of {STALL_PARTS} parts of the lines were "
                "counted before the budget ran out, so the true count is at least this)")
    found = convo.marker("RLM_FOUND")
    if found is not None:
        return found
    for name in ("NEEDLE_MATCHES", "NEEDLE_CHUNK_ANSWERS"):  # the built-in needle policy's
        raw = convo.marker(name)
        try:
            values = ast.literal_eval(raw) if raw is not None else None
        except (ValueError, SyntaxError):
            values = None
        if isinstance(values, list) and values:
            return str(values[0])
    return ("No answer: the scripted demonstration model (not an LLM) had not found one when it "
            "was asked to stop.")


def _needle_by_children(convo: Convo, query: str, kind: str, key: str, batched: bool) -> str:
    found = convo.marker("RLM_FOUND")
    if found is not None:
        if found.upper() != "NONE":
            return _submit(f"A child RLM found the {kind} for {key}: {found}.", found)
        return _submit(f"No child RLM found a special magic {kind} for {key}.",
                       f"Not found: no chunk states a special magic {kind} for {key}.")
    if convo.attempts("RLM_FOUND") >= MAX_ATTEMPTS:
        return _submit("The child RLMs failed repeatedly; I stop here rather than guess.",
                       "No answer: the scripted demonstration model (not an LLM) could not "
                       "complete the search.")
    head = (f"Find the special magic {kind} for {key!r} in the text below. Answer with the "
            "value only, or NONE if the text does not state it.\n<text>\n")
    call = ("answers = rlm_query_batched(prompts)" if batched
            else "answers = [rlm_query(p) for p in prompts]")
    code = _text_of(convo) + textwrap.dedent(f"""\
        n_chunks = {_n_chunks(query)}
        size = -(-max(len(text), 1) // n_chunks)
        chunks = [text[s:s + size + 200] for s in range(0, max(len(text), 1), size)]
        prompts = [{head!r} + c + "\\n</text>" for c in chunks]
        {call}
        print("RLM_ANSWERS:", answers)
        values = [str(a).strip() for a in answers]
        values = [v for v in values if v and v.upper() != "NONE" and not v.startswith("Error")]
        print("RLM_FOUND:", values[0] if values else "NONE")
        """)
    return _repl(f"I split the context into chunks and hand each to a child RLM that looks for "
                 f"the {kind} for {key}.", code)


def _context_task(convo: Convo) -> str:
    """A child whose task is the head of its context (rlms's rlm_query prompt)."""
    head_raw = convo.marker("TASK_HEAD")
    if head_raw is None:
        code = TEXT_OF_CONTEXT + textwrap.dedent("""\
            cut = text.find("<text>")
            print("TASK_HEAD:", repr(text[:cut + 6] if cut >= 0 else text[:400]))
            print("length:", len(text))
            """)
        return _repl("My task is in my context; I read its head first.", code)
    try:
        head = str(ast.literal_eval(head_raw))
    except (ValueError, SyntaxError):
        head = head_raw
    body = TEXT_OF_CONTEXT + textwrap.dedent("""\
        start = text.find("<text>\\n")
        body = text[start + 7:] if start >= 0 else text
        body = body[:body.rfind("\\n</text>")] if "\\n</text>" in body else body
        """)
    needle = _NEEDLE_HEAD_RE.search(head)
    if needle:
        key = ast.literal_eval(needle.group("key"))
        code = "import re\n" + body + textwrap.dedent(f"""\
            m = re.search(r"special magic \\w+ for " + re.escape({key!r}) +
                          r" is:?\\s*([0-9A-Za-z][0-9A-Za-z-]*)", body)
            value = m.group(1) if m else "NONE"
            print("CHILD_ANSWER:", value)
            """) + _submit_code("value")
        return _repl(f"The task is to find the {needle.group('kind')} for {key}; a regex over "
                     "the text does it.", code)
    count = _COUNT_HEAD_RE.search(head)
    if count:
        term = ast.literal_eval(count.group("term"))
        test = (f"re.search(r'(?<!\\w)' + re.escape({term!r}) + r'(?!\\w)', line)"
                if count.group("mode") == "word" else f"{term!r} in line")
        code = "import re\n" + body + textwrap.dedent(f"""\
            n = sum(1 for line in body.split("\\n") if {test})
            print("CHILD_ANSWER:", n)
            """) + _submit_code("str(n)")
        return _repl(f"The task is to count the lines containing {term!r}; I count in code.", code)
    return _submit("I am a scripted demonstration model, not an LLM, and no rule of mine covers "
                   "the task in my context.", ROOT_FALLBACK_ANSWER)


def rlms_reply(convo: Convo) -> str:
    """The next reply in the rlms convention, whichever runtime's prompts carried ``convo``."""
    if convo.wants_answer_now:
        return _best_effort(convo)
    if convo.query is None:
        return _context_task(convo)
    query = convo.query
    task = strip_directives(query)
    directives = parse_directives(query)
    strategy = directives.get("strategy", "").lower()
    needle = parse_needle_query(task)
    counted = parse_count_query(task)
    if needle is None and counted is None:
        return _submit("I am a scripted demonstration model, not an LLM, and no rule of mine "
                       "covers this query.", ROOT_FALLBACK_ANSWER)
    if not convo.outputs:
        return _peek_reply(convo, "I work on it")
    if needle is not None:
        kind, key, _ = needle
        return _needle_by_children(convo, query, kind, key, strategy == "rlm_query_batched")
    assert counted is not None
    term, whole_word = counted
    if directives.get("stall", "").lower() in ("yes", "true", "1"):
        return _count_stalled(convo, term, whole_word)
    return _count_batched(convo, query, term, whole_word)


# --------------------------------------------------------------------------------------------------
# Registration


def _rlms_matches(view: RootView) -> bool:
    return is_rlms_conversation(view)


def _speaker_matches(view: RootView) -> bool:
    return (not is_rlms_conversation(view)
            and view.directives.get(CONVENTION_DIRECTIVE, "").lower() == "rlms")


def _child_matches(view: RootView) -> bool:
    """A sub-RLM of this project's ``rlm_query``: its task is in its context."""
    return not is_rlms_conversation(view) and view.query.startswith(RLM_QUERY_TASK)


def _best_effort_matches(view: RootView) -> bool:
    """This project's one best-effort request after a budget ran out (any policy's run)."""
    last_role, last_text = view.messages[-1] if view.messages else ("", "")
    return (not is_rlms_conversation(view) and last_role == "user"
            and "<best_effort>" in last_text)


def _best_effort_reply(view: RootView) -> str:
    answer = _best_effort(_our_convo(view))
    if view.directives.get(CONVENTION_DIRECTIVE, "").lower() == "rlms":
        return answer  # an rlms model answers in prose
    return f"Asked for my best answer now, from what the REPL showed:\n\nFINAL({answer})"


register_root_policy(NAME, _rlms_matches, lambda view: rlms_reply(_rlms_convo(view)))
register_root_policy(SPEAKER_NAME, _speaker_matches, lambda view: rlms_reply(_our_convo(view)))
register_root_policy("rlm_query_child", _child_matches,
                     lambda view: rlms_reply(_our_convo(view, query=None)))
register_root_policy("best_effort", _best_effort_matches, _best_effort_reply)
