"""What the scripted model says: root policies (which write REPL code) and sub policies (which answer
the prompts that code sends), plus the registry other modules extend.

Why rules and not an LLM: tests and benchmarks need a model that is free, offline and exactly
reproducible, and that still behaves like the paper's RLMs (peek at the context, grep it, partition
it and map sub-calls over the parts, aggregate in code, recurse). Every policy is a pure function of
the request's messages, with no state between requests, so a replayed conversation gets the same
replies.

Registry contract (keep it this simple):

- ``register_root_policy(name, matches, reply)`` with ``matches(view: RootView) -> bool`` and
  ``reply(view: RootView) -> str``. ``view`` is the parsed root conversation (query, directives,
  step number, earlier outputs, the model name asked for); ``reply`` returns the whole assistant
  message: prose plus one ```repl block, or a ``FINAL(...)`` / ``FINAL_VAR(name)`` line outside
  code (or an :class:`~rlm_kernel.scripted.message.AssistantMessage` with reasoning or tool
  calls).
- ``register_sub_policy(name, matches, answer)`` with ``matches(prompt: str) -> bool`` and
  ``answer(prompt: str) -> str``; ``prompt`` is the text of the sub-call's user message.
- Order tried: policies registered by other modules, most recent first; then the built-ins
  (recursion, counting, needle); then the fallback, which always answers. Registering a name again
  replaces the earlier policy of that name.

Directives: ``[name=value]`` anywhere in the query steer the built-ins and are stripped from the task
text they parse: ``[chunks=N]`` forces exactly N sub-calls, ``[strategy=recurse]`` makes a counting
query split the context in two and call ``rlm`` on each half.

Task families the built-ins recognise (case-insensitive phrasing, case-sensitive term):

- needle: ``What is the special magic number for {key} mentioned in the provided text?`` (also
  ``uuid``, and ``What are all the special magic numbers for ...``); the haystack sentence is
  ``One of the special magic numbers for {key} is: {value}.``
- counting: ``How many lines contain 'TERM'?`` (any of ' " ` quotes; "the word 'TERM'" counts whole
  words), ``How many log lines have level ERROR?`` (whole word). Also "Count the lines containing
  ...", and "entries"/"records"/"rows" for "lines".
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

from .message import AssistantMessage

__all__ = [
    "RootView",
    "RootPolicy",
    "SubPolicy",
    "register_root_policy",
    "register_sub_policy",
    "unregister_policy",
    "root_policies",
    "sub_policies",
    "is_root_request",
    "parse_root",
    "root_reply",
    "root_reply_for",
    "sub_prompt",
    "sub_answer",
    "parse_directives",
    "strip_directives",
    "parse_needle_query",
    "parse_count_query",
    "count_lines",
    "ROOT_FALLBACK_ANSWER",
    "SUB_FALLBACK_ANSWER",
]

ROOT_MARKER = "Recursive Language Model"
DEFAULT_CHUNK_CHARS = 20_000
MAX_ATTEMPTS = 3

ROOT_FALLBACK_ANSWER = (
    "This is the rlm-kernel scripted demonstration model, not an LLM: it follows fixed rules and "
    "cannot answer this query. What it can do: find 'the special magic number (or uuid) for KEY' in "
    "the context (peek, regex, then chunked sub-calls), count the lines that contain a quoted term "
    "('How many lines contain \"ERROR\"?', 'How many log lines have level ERROR?') by partitioning "
    "the context over llm_batch, split such a count recursively with [strategy=recurse], and "
    "add up the numbers on page images it generated itself ('What is the sum of the numbers on "
    "the pages?' over number cards); [chunks=N] sets the number of sub-calls. To use a real "
    "model, set OPENAI_API_KEY (and OPENAI_BASE_URL for another OpenAI-compatible server) and "
    "choose it with --model / RLM_MODEL."
)
SUB_FALLBACK_ANSWER = (
    "I am the rlm-kernel scripted demonstration model, not an LLM, so I cannot answer this prompt: "
    "I only answer the sub-prompts the scripted root policies write (a special-magic-number lookup "
    "or a line count over a chunk of text). Set OPENAI_API_KEY (and OPENAI_BASE_URL) and choose a "
    "model with --sub-model / RLM_SUB_MODEL to use a real LLM."
)


# --------------------------------------------------------------------------------------------------
# The parsed root conversation

_QUERY_RE = re.compile(r"<query>\n(.*)\n</query>", re.S)
_CONTEXT_INFO_RE = re.compile(r"<context_info>\n(.*?)\n</context_info>", re.S)
_OUTPUT_RE = re.compile(r'\A<output step="(\d+)">\n(.*)\n</output>', re.S)
_DIRECTIVE_RE = re.compile(r"\[(\w+)=([^\]\s]+)\]")


def parse_directives(query: str) -> dict[str, str]:
    """``[name=value]`` tokens of the query, lower-cased names."""
    return {k.lower(): v for k, v in _DIRECTIVE_RE.findall(query)}


def strip_directives(query: str, only: str | None = None) -> str:
    """The query without its directives (or without the one named ``only``), spaces tidied."""
    def drop(m: re.Match[str]) -> str:
        return "" if only is None or m.group(1).lower() == only else m.group(0)
    return re.sub(r"[ \t]{2,}", " ", _DIRECTIVE_RE.sub(drop, query)).strip()


@dataclass(frozen=True)
class RootView:
    """A root conversation as the policies see it.

    ``step`` is the number of the reply being written (assistant messages so far + 1);
    ``outputs`` maps a step number to the (possibly truncated) output the engine fed back;
    ``model`` is the model name the request asked for (a policy may answer only for its own name).
    """

    messages: tuple[tuple[str, str], ...]
    query: str
    task: str
    directives: dict[str, str]
    context_info: str
    step: int
    outputs: dict[int, str] = field(default_factory=dict)
    replies: tuple[str, ...] = ()
    model: str = ""

    def marker(self, name: str) -> str | None:
        """The text after ``NAME:`` on the latest output line that starts with it, if any.

        Why markers: the policies' code prints ``NAME: value`` lines, and the next reply reads them
        back, exactly as a model reads its own prints; no state is kept on the server.
        """
        pattern = re.compile(rf"^{re.escape(name)}:[ \t]*(.*)$", re.M)
        for step in sorted(self.outputs, reverse=True):
            found = pattern.findall(self.outputs[step])
            if found:
                return found[-1].strip()
        return None

    def marker_literal(self, name: str) -> object | None:
        """Like :meth:`marker`, parsed as a Python literal (None if absent or unparsable)."""
        raw = self.marker(name)
        if raw is None:
            return None
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return None

    def attempts(self, snippet: str) -> int:
        """How many earlier replies contained ``snippet`` (to stop retrying a step that fails)."""
        return sum(snippet in reply for reply in self.replies)


def is_root_request(messages: tuple[tuple[str, str], ...]) -> bool:
    """Root calls carry the engine's system prompt (or, with ``system_role = user``, its
    instructions at the head of the first user message); sub-calls are a lone user message."""
    if messages and messages[0][0] == "user" and messages[0][1].startswith("<instructions>"):
        return ROOT_MARKER in messages[0][1]
    return any(role in ("system", "developer") and ROOT_MARKER in text for role, text in messages)


def parse_root(messages: tuple[tuple[str, str], ...], model: str = "") -> RootView:
    """Read query, context summary, step number and earlier outputs out of a root conversation.

    Outputs come back as ``<output step="n">`` user turns, or (tool-calling mode) as ``tool``
    messages, which belong to the step of the assistant turn before them.
    """
    users = [text for role, text in messages if role == "user"]
    replies = tuple(text for role, text in messages if role == "assistant")
    first = users[0] if users else ""
    q = _QUERY_RE.search(first)
    query = q.group(1).strip() if q else first.strip()
    info = _CONTEXT_INFO_RE.search(first)
    outputs: dict[int, str] = {}
    step = 0
    for role, text in messages:
        if role == "assistant":
            step += 1
            continue
        m = _OUTPUT_RE.match(text) if role in ("user", "tool") else None
        if m and (role == "user" or step):
            outputs[int(m.group(1))] = m.group(2)
        elif role == "tool" and step:
            outputs[step] = (outputs[step] + "\n" + text) if step in outputs else text
    return RootView(
        messages=messages, query=query, task=strip_directives(query),
        directives=parse_directives(query), context_info=info.group(1).strip() if info else "",
        step=len(replies) + 1, outputs=outputs, replies=replies, model=model,
    )


def sub_prompt(messages: tuple[tuple[str, str], ...]) -> str:
    """The text a sub policy reads: the user messages of the request, joined."""
    return "\n".join(text for role, text in messages if role == "user")


# --------------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class RootPolicy:
    name: str
    matches: Callable[[RootView], bool]
    reply: Callable[[RootView], str | AssistantMessage]


@dataclass(frozen=True)
class SubPolicy:
    name: str
    matches: Callable[[str], bool]
    answer: Callable[[str], str]


_root_extra: list[RootPolicy] = []
_root_builtin: list[RootPolicy] = []
_sub_extra: list[SubPolicy] = []
_sub_builtin: list[SubPolicy] = []


def register_root_policy(
    name: str, matches: Callable[[RootView], bool],
    reply: Callable[[RootView], str | AssistantMessage],
) -> None:
    """Add a root policy, tried before every policy registered earlier and before the built-ins."""
    for lst in (_root_extra, _root_builtin):
        lst[:] = [p for p in lst if p.name != name]
    _root_extra.insert(0, RootPolicy(name, matches, reply))


def register_sub_policy(
    name: str, matches: Callable[[str], bool], answer: Callable[[str], str]
) -> None:
    """Add a sub policy, tried before every policy registered earlier and before the built-ins."""
    for lst in (_sub_extra, _sub_builtin):
        lst[:] = [p for p in lst if p.name != name]
    _sub_extra.insert(0, SubPolicy(name, matches, answer))


def root_policies() -> list[RootPolicy]:
    """The root policies in the order they are tried (the fallback is not listed: it is last)."""
    return [*_root_extra, *_root_builtin]


def sub_policies() -> list[SubPolicy]:
    return [*_sub_extra, *_sub_builtin]


def root_reply(messages: tuple[tuple[str, str], ...], model: str = ""
               ) -> tuple[str, str | AssistantMessage]:
    """``(policy name, assistant reply)`` for a root conversation sent to ``model``."""
    return root_reply_for(parse_root(messages, model))


def root_reply_for(view: RootView, after: str | None = None
                   ) -> tuple[str, str | AssistantMessage]:
    """The first policy matching ``view``, or only those tried after the one named ``after``
    (so a policy can wrap whatever would have answered without it)."""
    candidates = root_policies()
    if after is not None:
        names = [p.name for p in candidates]
        candidates = candidates[names.index(after) + 1:] if after in names else candidates
    for policy in candidates:
        if policy.matches(view):
            return policy.name, policy.reply(view)
    return "fallback", fallback_root_reply(view)


def sub_answer(prompt: str) -> tuple[str, str]:
    """``(policy name, answer)`` for a sub-call prompt."""
    for policy in sub_policies():
        if policy.matches(prompt):
            return policy.name, policy.answer(prompt)
    return "fallback", SUB_FALLBACK_ANSWER


# --------------------------------------------------------------------------------------------------
# Code fragments shared by the built-in root policies

TEXT_OF_CONTEXT = """\
if isinstance(context, str):
    text = context
elif isinstance(context, dict):
    text = "\\n".join(f"{k}: {v}" for k, v in context.items())
elif isinstance(context, (list, tuple)):
    text = "\\n".join(map(str, context))
else:
    text = str(context)
"""

_NUMBER_OF = """\
def number_of(answer):
    found = re.findall(r"-?\\d+", str(answer).replace(",", ""))
    if not found:
        raise ValueError(f"expected a number, got {answer!r}")
    return int(found[0])
"""


def _repl(prose: str, code: str) -> str:
    return f"{prose}\n\n```repl\n{code.rstrip()}\n```"


def _final_code(prose: str, answer: str) -> str:
    """Finish from code: safe for answers with parentheses, quotes or newlines."""
    return _repl(prose, f"FINAL({answer!r})")


def _chunks_directive(view: RootView) -> int | None:
    raw = view.directives.get("chunks")
    if raw is None:
        return None
    try:
        return max(1, int(raw))
    except ValueError:
        return None


def _give_up(view: RootView, what: str) -> str:
    return _final_code(
        f"The {what} step failed {MAX_ATTEMPTS} times; I stop here rather than guess.",
        f"No answer: the scripted demonstration model (not an LLM) could not complete the {what} "
        f"step for this query after {MAX_ATTEMPTS} attempts. See the step outputs for the errors.",
    )


def _peek(view: RootView, prose: str) -> str:
    code = TEXT_OF_CONTEXT + textwrap.dedent("""\
        n_lines = text.count("\\n") + 1  # counted, not split: no copy of a huge context
        print("type:", type(context).__name__, "length:", len(text), "lines:", n_lines)
        print(text[:500])
        """)
    return _repl(prose, code)


# --------------------------------------------------------------------------------------------------
# Needle: peek -> regex -> FINAL, or chunked llm_batch when the regex finds nothing

_NEEDLE_QUERY_RE = re.compile(
    r"special magic (?P<kind>\w+?)s? for (?P<key>.+?) (?:mentioned in|in) the provided (?:text|context)",
    re.I | re.S,
)
_NEEDLE_SUB_RE = re.compile(
    r"\AFind the special magic (?P<kind>\w+) for (?P<key>'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\")"
    r" in the text below\. Answer with the value only, or NONE if the text does not state it\.\n"
    r"<text>\n",
)
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


def parse_needle_query(task: str) -> tuple[str, str, bool] | None:
    """``(kind, key, wants_all)`` of a needle query, e.g. ``("number", "curious-guava", False)``."""
    m = _NEEDLE_QUERY_RE.search(task)
    if not m:
        return None
    kind = m.group("kind").lower()
    wants_all = bool(re.search(r"\ball\b", task[: m.start()], re.I))
    return kind, m.group("key").strip().strip("'\"`"), wants_all


def _needle_matches(view: RootView) -> bool:
    return parse_needle_query(view.task) is not None


def _needle_reply(view: RootView) -> str:
    kind, key, wants_all = parse_needle_query(view.task)  # type: ignore[misc]
    chunk_answers = view.marker_literal("NEEDLE_CHUNK_ANSWERS")
    if isinstance(chunk_answers, list):
        if chunk_answers:
            answer = ", ".join(map(str, chunk_answers)) if wants_all else str(chunk_answers[0])
            return _final_code(f"The chunk search found the {kind} for {key}.", answer)
        return _final_code(
            f"Neither the regex nor the chunk search found a special magic {kind} for {key}.",
            f"Not found: the context does not state a special magic {kind} for {key} "
            "(checked with a regex over the whole text and a chunked search by sub-calls).",
        )
    matches = view.marker_literal("NEEDLE_MATCHES")
    if isinstance(matches, list) and matches:
        unique = list(dict.fromkeys(map(str, matches)))
        answer = ", ".join(unique) if wants_all else unique[0]
        return f"The regex found the sentence for {key}: the {kind} is {answer}.\n\nFINAL({answer})"
    if isinstance(matches, list):
        if view.attempts('print("NEEDLE_CHUNK_ANSWERS:"') >= MAX_ATTEMPTS:
            return _give_up(view, "chunk search")
        n = _chunks_directive(view)
        size = (f"-(-max(len(text), 1) // {n})" if n else str(DEFAULT_CHUNK_CHARS))
        head = (f"Find the special magic {kind} for {key!r} in the text below. Answer with the "
                "value only, or NONE if the text does not state it.\n<text>\n")
        code = TEXT_OF_CONTEXT + textwrap.dedent(f"""\
            chunk_chars = {size}
            overlap = 200
            chunks = [text[s:s + chunk_chars + overlap] for s in range(0, max(len(text), 1), chunk_chars)]
            prompts = [{head!r} + c + "\\n</text>" for c in chunks]
            answers = llm_batch(prompts)
            found = []
            for a in answers:
                a = (a or "").strip()
                if a and a.upper() != "NONE" and a not in found:
                    found.append(a)
            print("chunks:", len(chunks))
            print("NEEDLE_CHUNK_ANSWERS:", found)
            """)
        return _repl(
            f"The regex found no sentence for {key}; I split the context into chunks and ask a "
            "sub-model to look in each one.", code)
    if view.step == 1:
        return _peek(view, f"I look at the start of the context before searching for {key}.")
    if view.attempts('print("NEEDLE_MATCHES:"') >= MAX_ATTEMPTS:
        return _give_up(view, "regex search")
    code = "import re\n" + TEXT_OF_CONTEXT + textwrap.dedent(f"""\
        key = {key!r}
        pattern = r"special magic \\w+ for " + re.escape(key) + r" is:?\\s*([0-9A-Za-z][0-9A-Za-z-]*)"
        matches = re.findall(pattern, text)
        print("NEEDLE_MATCHES:", matches)
        """)
    return _repl(f"I search the whole context for the sentence that states the {kind} for {key}.",
                 code)


def _needle_sub_matches(prompt: str) -> bool:
    return _NEEDLE_SUB_RE.match(prompt) is not None


def _body_of(prompt: str, start: int) -> str:
    end = prompt.rfind("\n</text>")
    return prompt[start:end] if end >= start else prompt[start:]


def _needle_sub_answer(prompt: str) -> str:
    m = _NEEDLE_SUB_RE.match(prompt)
    assert m is not None
    key = ast.literal_eval(m.group("key"))
    text = _body_of(prompt, m.end())
    strict = re.search(
        r"special magic \w+ for " + re.escape(key) + r" is:?\s*([0-9A-Za-z][0-9A-Za-z-]*)", text)
    if strict:
        return strict.group(1)
    # Looser reading, as a model would: the first id-like value shortly after the key.
    for hit in re.finditer(re.escape(key), text):
        near = re.search(rf"({_UUID}|\b\d{{4,}}\b)", text[hit.end(): hit.end() + 300])
        if near:
            return near.group(1)
    return "NONE"


# --------------------------------------------------------------------------------------------------
# Counting: peek -> partition into whole-line chunks -> llm_batch -> sum -> FINAL_VAR

_COUNT_CONTAIN_RE = re.compile(
    r"\b(?:how many|count(?: the)?(?: number of)?)\s+(?:log\s+)?(?:lines|entries|records|rows)\b"
    r"[^?'\"`]*?\b(?:contain|contains|containing|mention|mentions|mentioning|include|includes|"
    r"including|with)\s+(?:the\s+(?P<what>word|text|string|term|substring)\s+)?"
    r"(?P<q>['\"`])(?P<term>.+?)(?P=q)",
    re.I | re.S,
)
_COUNT_LEVEL_RE = re.compile(
    r"\b(?:how many|count(?: the)?(?: number of)?)\s+(?:log\s+)?(?:lines|entries|records|rows)\s+"
    r"(?:have|has|with|are at|at)\s+(?:the\s+)?(?:log\s+)?level\s+['\"`]?(?P<term>[A-Za-z]+)['\"`]?",
    re.I,
)
_COUNT_SUB_RE = re.compile(
    r"\ACount the lines of the text below that contain the (?P<mode>exact text|word) "
    r"(?P<term>'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\") \(case-sensitive\)\. "
    r"Answer with a number only\.\n<text>\n",
)


def parse_count_query(task: str) -> tuple[str, bool] | None:
    """``(term, whole_word)`` of a counting query, or None if the phrasing is not recognised."""
    m = _COUNT_LEVEL_RE.search(task)
    if m:
        return m.group("term"), True
    m = _COUNT_CONTAIN_RE.search(task)
    if m:
        return m.group("term"), (m.group("what") or "").lower() == "word"
    return None


def count_lines(text: str, term: str, whole_word: bool) -> int:
    """The ground truth both the sub policy and tests use: lines of ``text`` (split on "\\n")
    containing ``term``, as a substring or as a whole word, case-sensitive."""
    if whole_word:
        pattern = re.compile(r"(?<!\w)" + re.escape(term) + r"(?!\w)")
        return sum(1 for line in text.split("\n") if pattern.search(line))
    return sum(1 for line in text.split("\n") if term in line)


def _count_matches(view: RootView) -> bool:
    return parse_count_query(view.task) is not None


def _count_reply(view: RootView) -> str:
    term, whole_word = parse_count_query(view.task)  # type: ignore[misc]
    total = view.marker("COUNT_TOTAL")
    if total is not None:
        return (f"The per-chunk counts add up to {total} lines containing {term!r}; the answer is "
                f"in the variable `answer`.\n\nFINAL_VAR(answer)")
    if view.step == 1:
        return _peek(view, "I look at the shape of the context (length, lines, first lines) first.")
    if view.attempts('print("COUNT_TOTAL:"') >= MAX_ATTEMPTS:
        return _give_up(view, "chunked count")
    n = _chunks_directive(view)
    n_expr = str(n) if n else f"max(1, -(-len(text) // {DEFAULT_CHUNK_CHARS}))"
    mode = "word" if whole_word else "exact text"
    head = (f"Count the lines of the text below that contain the {mode} {term!r} "
            "(case-sensitive). Answer with a number only.\n<text>\n")
    code = "import re\n" + TEXT_OF_CONTEXT + _NUMBER_OF + textwrap.dedent(f"""\
        n_chunks = {n_expr}
        # Cut at line ends near equal character offsets; each prompt is built from its slice by a
        # generator as its call starts, so only the prompts in flight exist beside the context.
        cuts = [0]
        for i in range(1, n_chunks):
            j = text.find("\\n", max(cuts[-1], i * len(text) // n_chunks))
            cuts.append(len(text) if j < 0 else j + 1)
        cuts.append(len(text))
        prompts = ({head!r} + text[a:b].rstrip("\\n") + "\\n</text>"
                   for a, b in zip(cuts, cuts[1:]))
        answers = llm_batch(prompts)
        total = sum(number_of(a) for a in answers)
        answer = str(total)
        print("chunks:", n_chunks, "answers:", answers[:20], "..." if n_chunks > 20 else "")
        print("COUNT_TOTAL:", total)
        """)
    return _repl(
        f"I split the lines into chunks, ask a sub-model to count the lines containing {term!r} "
        "in each chunk, and add the counts up in code.", code)


def _count_sub_matches(prompt: str) -> bool:
    return _COUNT_SUB_RE.match(prompt) is not None


def _count_sub_answer(prompt: str) -> str:
    m = _COUNT_SUB_RE.match(prompt)
    assert m is not None
    term = ast.literal_eval(m.group("term"))
    return str(count_lines(_body_of(prompt, m.end()), term, m.group("mode") == "word"))


# --------------------------------------------------------------------------------------------------
# Recursion: [strategy=recurse] on a counting query -> rlm() on each half -> sum -> FINAL


def _recurse_matches(view: RootView) -> bool:
    return (view.directives.get("strategy", "").lower() in ("recurse", "rlm_batch")
            and parse_count_query(view.task) is not None)


def _recurse_reply(view: RootView) -> str:
    """Split the lines into ``[parts=N]`` parts (2 by default) and count each with a sub-RLM:
    one after the other with ``rlm()`` (``[strategy=recurse]``), or all at once with
    ``rlm_batch()`` (``[strategy=rlm_batch]``)."""
    term, _ = parse_count_query(view.task)  # type: ignore[misc]
    batch = view.directives.get("strategy", "").lower() == "rlm_batch"
    total = view.marker("COUNT_TOTAL")
    if total is not None:
        return (f"The sub-RLMs' counts add up to {total} lines containing {term!r}.\n\n"
                f"FINAL_VAR(answer)")
    if view.step == 1:
        return _peek(view, "I look at the shape of the context before splitting it.")
    if view.attempts('print("COUNT_TOTAL:"') >= MAX_ATTEMPTS:
        return _give_up(view, "recursive count")
    raw = view.directives.get("parts", "2")
    n = max(1, int(raw)) if raw.isdigit() else 2
    child_query = strip_directives(strip_directives(view.query, only="strategy"), only="parts")
    call = ("results = rlm_batch([sub_query] * len(parts), parts)" if batch
            else "results = [rlm(sub_query, context=p) for p in parts]")
    code = "import re\n" + TEXT_OF_CONTEXT + _NUMBER_OF + textwrap.dedent(f"""\
        lines = text.split("\\n")
        bounds = [i * len(lines) // {n} for i in range({n} + 1)]
        parts = ["\\n".join(lines[bounds[i]:bounds[i + 1]]) for i in range({n})]
        sub_query = {child_query!r}
        {call}
        print("RLM_RESULTS:", results)
        total = sum(number_of(r) for r in results)
        answer = str(total)
        print("COUNT_TOTAL:", total)
        """)
    how = "all at once with rlm_batch" if batch else "one after the other"
    return _repl(f"I split the context into {n} parts of whole lines and run a sub-RLM on each "
                 f"({how}), then add their counts.", code)


# --------------------------------------------------------------------------------------------------
# Fallback


def fallback_root_reply(view: RootView) -> str:
    """The answer to anything the rules do not cover: say so, and how to get a real model."""
    return _final_code(
        "I am a scripted demonstration model, not an LLM, and no rule of mine covers this query.",
        ROOT_FALLBACK_ANSWER,
    )


# Built-ins, in the order they are tried (most specific first).
_root_builtin.extend([
    RootPolicy("recurse", _recurse_matches, _recurse_reply),
    RootPolicy("count", _count_matches, _count_reply),
    RootPolicy("needle", _needle_matches, _needle_reply),
])
_sub_builtin.extend([
    SubPolicy("count", _count_sub_matches, _count_sub_answer),
    SubPolicy("needle", _needle_sub_matches, _needle_sub_answer),
])


def unregister_policy(name: str) -> None:
    """Remove the root and sub policies called ``name`` (built-ins included); for tests and
    plug-ins that need to undo a registration."""
    for roots in (_root_extra, _root_builtin):
        roots[:] = [p for p in roots if p.name != name]
    for subs in (_sub_extra, _sub_builtin):
        subs[:] = [p for p in subs if p.name != name]
