"""Every text the engine sends to the root model, in one place.

The shapes here are a contract: the scripted model (``rlm_kernel.scripted``) reads the ``<query>``,
``<context_info>`` and ``<output step="n">`` blocks to play its policies, and the root history is
append-only so a provider's prefix cache hits on every turn.
"""

from __future__ import annotations

from .trajectory import ContextInfo

__all__ = [
    "SYSTEM_PROMPT",
    "SUBCALLS_DISABLED_NOTE",
    "IMAGES_NOTE",
    "SANDBOX_NOTE",
    "system_prompt",
    "first_user_message",
    "step_feedback",
    "nudge_message",
    "final_var_missing_message",
    "cut_reply_note",
    "elided_output",
    "instructions_as_user",
    "best_effort_message",
    "RLM_QUERY_TASK",
    "TOOL_MODE_NOTE",
    "QUERY_RE_TAG",
]

QUERY_RE_TAG = "query"

SYSTEM_PROMPT = """\
You are the root model of a Recursive Language Model (RLM). You answer a query about a context that \
is far too large to read at once. You never see the context directly: it is loaded in a persistent \
Python REPL as the variable `context`. You explore it by writing Python code, one ```repl block per \
reply; the REPL runs the block and shows you its output (long outputs are cut to their head and tail, \
so print what you need, not everything).

The REPL offers:
- `context`: the data ({context_summary}).
- `llm(prompt, *, model=None) -> str`: ask a sub-model (it sees only `prompt`; it can read about \
{sub_window:,} characters, so pass slices of the context, not all of it).
- `llm_batch(prompts, *, model=None) -> list[str]`: many `llm` calls at once, run in parallel, \
answers in the order of `prompts`. Prefer it to a loop of `llm` calls. `prompts` may be a generator: \
each prompt is then built only as its call starts (use one when the prompts add up to a huge size). \
If some calls fail it raises `LLMBatchError`; its `.results` holds the answers (None where a call failed).
- `rlm(query, context=None) -> str`: a recursive RLM on a sub-context (depth-limited).
- `rlm_batch(queries, contexts=None) -> list[str]`: several sub-RLMs at once, run in parallel \
(`contexts[i]` is the context of `queries[i]`; None: each gets `context`).
- The reference runtime's names work too: `llm_query`, `llm_query_batched`, `rlm_query(prompt)` and \
`rlm_query_batched(prompts)` (a sub-RLM whose context is the prompt), and the `answer` dict.
- `SHOW_VARS()`: list the variables you have made.
- `FINAL(answer)`: end the run with `answer`. `FINAL_VAR(name)`: end the run with the value of the \
REPL variable called `name` (a string). (Or set `answer["content"]` and `answer["ready"] = True`.)
{tools}Variables persist between blocks. Do not rebind `context`, `llm` or the other names above.

Work in small steps: look at the shape of the context (its start, its separators, its size), narrow \
down with code (slicing, `re`, splitting), hand semantic work on chunks to `llm_batch`, and aggregate \
the answers in code. When you know the answer, call `FINAL(...)` in code or write `FINAL(...)` or \
`FINAL_VAR(name)` at the start of a line outside code. Do not guess before you have looked.
"""


SUBCALLS_DISABLED_NOTE = (
    "\nIn this run sub-calls are switched off (the no-sub-call ablation): `llm`, `llm_batch` and "
    "`rlm` raise an error. Answer with code over `context` alone.\n"
)


IMAGES_NOTE = """
The context holds images (<context_info> says how many, where and how big). A sub-model sees an \
image only when you pass it: `llm(prompt, images=[img, ...])` sends the images with the prompt \
({image_size}). In `llm_batch`, a prompt with images is a `(prompt, [img, ...])` pair or a \
`{{"prompt": ..., "images": [...]}}` dict, so each call gets its own images. An image has `.width`, \
`.height` and `.to_pil()` (a PIL image you may crop, rotate or enlarge and pass on); printing one \
shows its size and hash, never its pixels: look at images through sub-calls.
"""

TOOL_MODE_NOTE = (
    "\nIn this run you run code by calling the `repl` tool (its `code` argument) instead of "
    "writing ```repl blocks, and you finish by calling the `final` tool (`answer`, or `variable`: "
    "the name of a REPL variable holding the answer).\n"
)

#: The query of a sub-RLM started by ``rlm_query(prompt)``: as in the reference runtime, the
#: prompt is the child's context, and the child reads its task there.
RLM_QUERY_TASK = ("The task and its data are both in `context`: a prompt handed down by the "
                  "parent RLM. Read its start to learn the task, then do it.")


SANDBOX_NOTE = (
    "\nThe REPL runs in a sandbox, and so does every program your code starts. Your code can read "
    "only the Python environment, `context` and its source files, and the working folder; it can "
    "write only the working folder and the temporary folder; it cannot open network connections "
    "(`llm`, `llm_batch` and `rlm` are the only way to reach a model); the environment holds no "
    "keys or secrets. Anything else fails with PermissionError: do not spend steps trying.\n"
)


def system_prompt(context: ContextInfo, sub_window: int = 100_000,
                  subcalls_enabled: bool = True, image_max_edge: int = 0,
                  sandboxed: bool = False, *, tools: str = "", mode: str = "fences") -> str:
    """The system prompt for one run: it names the context's type and size, never its content;
    ``tools``: the custom tools' section; ``mode``: how code is written (fences or tools).

    Only a context that holds images adds :data:`IMAGES_NOTE`, only tool mode
    :data:`TOOL_MODE_NOTE`, and only a run of the sandboxed kernel :data:`SANDBOX_NOTE` (a
    recorded setting, so a replay anywhere rebuilds it): any other prompt stays byte-identical,
    so recorded runs replay and a provider's prefix cache keeps hitting.
    """
    text = SYSTEM_PROMPT.format(context_summary=context.summary(), sub_window=sub_window,
                                tools=tools.lstrip("\n"))
    if context.images and subcalls_enabled:
        size = (f"each sized down to at most {image_max_edge} pixels a side first"
                if image_max_edge > 0 else "as they are, not sized down")
        text += IMAGES_NOTE.format(image_size=size)
    if mode in ("tools", "auto"):
        text += TOOL_MODE_NOTE
    if not subcalls_enabled:
        text += SUBCALLS_DISABLED_NOTE
    return text + SANDBOX_NOTE if sandboxed else text


def first_user_message(query: str, context: ContextInfo, max_steps: int,
                       previous: list[tuple[str, str, str | None]] | None = None) -> str:
    """``previous``: (run id, query, answer) of the earlier runs a persistent query builds on."""
    info = context.summary() + (f"\n{context.images}" if context.images else "")
    earlier = ""
    if previous:
        lines = "\n".join(f"- run {rid}: {q!r} -> answer: {a!r}" for rid, q, a in previous)
        earlier = (f"<previous_runs>\n{lines}\n</previous_runs>\n"
                   "This query builds on those runs: their variables are still in the REPL "
                   "(SHOW_VARS() lists them).\n")
    return (
        f"<context_info>\n{info}\n</context_info>\n"
        f"{earlier}<query>\n{query}\n</query>\n"
        f"You have at most {max_steps} steps. Start by looking at the context with a ```repl block."
    )


def best_effort_message(reason: str) -> str:
    """Sent once when a budget ended the run without an answer: answer now, from what you have."""
    return (
        f"<best_effort>The run's budget is spent ({reason}); no more code will run. Give your "
        "best answer to the query now from what you have found so far, as FINAL(answer) on a "
        "line of its own; if you are unsure, say so in the answer.</best_effort>"
    )


def step_feedback(step: int, output_text: str, *, steps_left: int) -> str:
    """The user turn after step ``step`` ran: its (already truncated) output."""
    body = output_text if output_text.strip() else "(no output)"
    return (
        f'<output step="{step}">\n{body}\n</output>\n'
        f"{_left(steps_left)}. Continue with one ```repl block, or finish with FINAL(...)."
    )


def nudge_message(steps_left: int) -> str:
    """Sent when a reply had neither a code block nor FINAL: the loop goes on."""
    return (
        "<nudge>Your reply had no ```repl block and no FINAL(...). Write one ```repl block to run, "
        f"or FINAL(answer) / FINAL_VAR(name) at the start of a line.</nudge>\n{_left(steps_left)}."
    )


def final_var_missing_message(name: str, available: list[str]) -> str:
    shown = ", ".join(available[:30]) or "(none)"
    return (
        f"FINAL_VAR({name!r}) failed: there is no REPL variable named {name!r}. "
        f"Variables you made: {shown}. Assign the answer to a variable first, or use FINAL(answer)."
    )


def _left(steps: int) -> str:
    return f"{steps} step left" if steps == 1 else f"{steps} steps left"


def cut_reply_note(bound: int, blocks_run: int, dropped: bool) -> str:
    """Told to the model after a reply cut at the token bound (it cannot see that it was cut)."""
    what = ("its unfinished last code block was not run" if dropped
            else "it ended mid-sentence")
    ran = f"its {blocks_run} complete code block{'s' if blocks_run != 1 else ''} ran" \
        if blocks_run else "no code ran"
    return (f"[note: your reply was cut at the limit of {bound} tokens: {what}; {ran}. "
            "Keep replies short: one ```repl block, and no long prose.]")


def elided_output(step: int, chars: int) -> str:
    """A step's output as the model sees it once compacted out of its window."""
    return (f'<output step="{step}">[elided to fit your context window: {chars:,} characters; '
            "the variables it made are still in the REPL]</output>")


def instructions_as_user(system: str, first_user: str) -> str:
    """The first user message for servers whose chat template drops system messages."""
    return f"<instructions>\n{system}</instructions>\n{first_user}"
