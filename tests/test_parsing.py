"""Reading root-model replies: fences, several blocks, FINAL / FINAL_VAR in prose and their corners."""

from __future__ import annotations

import pytest

from rlm_kernel.parsing import parse_reply


@pytest.mark.parametrize("lang", ["repl", "python", "py", "python3", "REPL", "Python"])
def test_code_fences_are_runnable(lang: str) -> None:
    p = parse_reply(f"Let me look.\n```{lang}\nprint(len(context))\n```\nThen decide.")
    assert p.code == "print(len(context))"
    assert p.blocks == ["print(len(context))"]
    assert "print" not in p.prose
    assert "Let me look." in p.prose and "Then decide." in p.prose
    assert not p.has_final


@pytest.mark.parametrize("lang", ["text", "json", "bash", "output"])
def test_non_python_fences_are_not_code(lang: str) -> None:
    p = parse_reply(f"Example:\n```{lang}\nx = 1\nprint(x)\n```\n")
    assert p.code is None
    assert p.blocks == []
    assert "x = 1" not in p.prose  # a fenced block is never prose either


def test_several_blocks_run_in_order_as_one_step() -> None:
    reply = ("First:\n```repl\na = 1\n```\nsome words\n```python\nb = a + 1\n```\n"
             "```text\nnot code\n```\nand\n```repl\nprint(a, b)\n```\n")
    p = parse_reply(reply)
    assert p.blocks == ["a = 1", "b = a + 1", "print(a, b)"]
    assert p.code == "a = 1\n\nb = a + 1\n\nprint(a, b)"
    assert "some words" in p.prose and "and" in p.prose


def test_unclosed_fence_runs_to_end_of_reply() -> None:
    p = parse_reply("I count.\n```repl\nn = len(context)\nprint(n)\n")
    assert p.code == "n = len(context)\nprint(n)"
    assert p.prose.strip() == "I count."


def test_longer_fence_and_tilde_fence() -> None:
    p = parse_reply("````python\ns = '```'\nprint(s)\n````\n~~~repl\nx = 2\n~~~\n")
    assert p.blocks == ["s = '```'\nprint(s)", "x = 2"]


def test_unlabelled_fence_counts_only_when_it_is_python_code() -> None:
    assert parse_reply("```\nx = [1, 2]\nprint(x)\n```").blocks == ["x = [1, 2]\nprint(x)"]
    # A bare answer in an unlabelled fence is not a program.
    assert parse_reply("The answer is:\n```\n42\n```").code is None
    assert parse_reply("```\nthis is not python at all (\n```").code is None


def test_indented_fence_is_recognised() -> None:
    p = parse_reply("Steps:\n  ```repl\n  x = 1\n  ```\n")
    assert p.code is not None and "x = 1" in p.code


# --------------------------------------------------------------------------------------- FINAL


def test_final_in_prose_at_line_start() -> None:
    p = parse_reply("I have it.\nFINAL(42)\n")
    assert p.final == "42" and p.final_var is None and p.code is None and p.has_final


def test_final_inside_code_is_not_a_prose_final() -> None:
    p = parse_reply("```repl\nx = 6 * 7\nFINAL(x)\n```\n")
    assert p.final is None and p.final_var is None
    assert "FINAL(x)" in (p.code or "")


def test_code_and_prose_final_both_reported() -> None:
    p = parse_reply("```repl\nanswer = 'a'\n```\nFINAL_VAR(answer)\n")
    assert p.code == "answer = 'a'"
    assert p.final_var == "answer"


@pytest.mark.parametrize("text", [
    "I could call FINAL(42) but I have not looked yet.",
    "Note: `FINAL(42)` ends the run.",
    "The tool is named xFINAL(3)",
    "Then FINAL_VAR(answer) will do.",
])
def test_final_not_at_line_start_is_ignored(text: str) -> None:
    p = parse_reply(text)
    assert not p.has_final, (p.final, p.final_var)


def test_final_with_markdown_emphasis_or_quote_prefix() -> None:
    assert parse_reply("**FINAL(Paris)**").final == "Paris"
    assert parse_reply("> FINAL(Paris)").final == "Paris"
    assert parse_reply("   FINAL(Paris)").final == "Paris"


@pytest.mark.parametrize("reply, expected", [
    ("FINAL(f(x) = (a + b) * 2)", "f(x) = (a + b) * 2"),
    ("FINAL((1, 2))", "(1, 2)"),
    ("FINAL(The answer (after checking) is 7.) and some trailing words", "The answer (after checking) is 7."),
    ('FINAL("a ) in quotes")', "a ) in quotes"),
    ("FINAL('single (quoted) answer')", "single (quoted) answer"),
    ('FINAL("He said \\"hi\\" (twice)")', 'He said "hi" (twice)'),
    ("FINAL(it's 3)", "it's 3"),
    ("FINAL(the users' and the admin's counts are 3 and 4)", "the users' and the admin's counts are 3 and 4"),
    ('FINAL("""line one\nline (two)\nline three""")', "line one\nline (two)\nline three"),
    ("FINAL(first line\nsecond line)", "first line\nsecond line"),
    ("FINAL(  spaced  )", "spaced"),
    ("FINAL(42", "42"),  # unclosed: the rest of the reply
    ("FINAL()", ""),
])
def test_final_argument_corners(reply: str, expected: str) -> None:
    assert parse_reply(reply).final == expected


def test_final_quoted_with_stray_apostrophe_and_text_after() -> None:
    # A quoted answer whose quotes do not balance must not swallow the rest of the reply.
    p = parse_reply("FINAL('it's fine')\nThanks for reading.")
    assert p.final == "it's fine"


def test_final_var_in_prose() -> None:
    assert parse_reply("Done.\nFINAL_VAR(answer)").final_var == "answer"
    assert parse_reply("FINAL_VAR('answer')").final_var == "answer"
    assert parse_reply('FINAL_VAR("answer")').final_var == "answer"
    assert parse_reply("FINAL_VAR( answer )\nmore prose").final_var == "answer"
    p = parse_reply("FINAL_VAR(answer)")
    assert p.final is None and p.has_final


def test_first_prose_final_wins() -> None:
    p = parse_reply("FINAL(one)\nFINAL(two)")
    assert p.final == "one"


def test_final_inside_non_code_fence_is_ignored() -> None:
    p = parse_reply("Example of how to finish:\n```text\nFINAL(example)\n```\nNow I look.")
    assert not p.has_final and p.code is None


def test_final_lookalike_names_are_not_final() -> None:
    assert not parse_reply("FINAL_ANSWER(3)").has_final
    assert not parse_reply("FINALLY(3)").has_final


def test_empty_and_prose_only_replies() -> None:
    p = parse_reply("")
    assert p.code is None and not p.has_final and p.blocks == []
    p = parse_reply("I think the context is a log file.")
    assert p.code is None and not p.has_final
