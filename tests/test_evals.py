"""Generators, scorers and the scripted eval policies (issue 8, items 1, 3 and 4).

The scripted play here runs the root policies' code blocks in a plain dict namespace with in-test
``llm`` / ``llm_batch`` / ``FINAL`` / ``FINAL_VAR`` that call the sub policies directly: no kernel,
no server, so it checks the policies and the generators against each other in well under a second.
"""

from __future__ import annotations

import io
import json
import math
import re
from contextlib import redirect_stdout
from typing import Any

import pytest

from rlm_kernel import evals
from rlm_kernel.evals.scoring import (
    parse_oolong_answer,
    parse_pairs,
    score,
    score_oolong,
    score_pairs,
    score_sniah,
)
from rlm_kernel.parsing import parse_reply
from rlm_kernel.prompts import first_user_message, step_feedback, system_prompt
from rlm_kernel.scripted import task_policies as eval_policies
from rlm_kernel.scripted.policies import root_reply, sub_answer
from rlm_kernel.tasks import oolong, oolong_pairs, questions, sniah
from rlm_kernel.trajectory import ContextInfo

ROW_RE = re.compile(r"^Date: [A-Z][a-z]{2} \d{2}, \d{4} \|\| User: \d{5} \|\| Instance: (.+)$")
FAMILIES = ("sniah", "oolong", "oolong-pairs")


def rows_of(task: evals.Task) -> list[str]:
    lines = task.context.split("\n")
    assert not ROW_RE.match(lines[0]), "the first line is the header"
    return lines[1:]


# --------------------------------------------------------------------------------------------------
# Generators


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_bytes_other_seed_differs(family: str) -> None:
    a = evals.generate(family, 7, 3, 3000)
    b = evals.generate(family, 7, 3, 3000)
    c = evals.generate(family, 8, 3, 3000)
    assert [t.context.encode() for t in a] == [t.context.encode() for t in b]
    assert [(t.query, t.gold, t.task_id) for t in a] == [(t.query, t.gold, t.task_id) for t in b]
    assert all(x.context != y.context for x, y in zip(a, c, strict=True))
    # Task i does not depend on n: a longer run starts with the same tasks.
    assert evals.generate(family, 7, 1, 3000)[0].context == a[0].context


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("length", [1000, 8000, 50_000])
def test_lengths_within_five_percent(family: str, length: int) -> None:
    for t in evals.generate(family, 3, 4, length):
        assert abs(len(t.context) / evals.CHARS_PER_TOKEN - length) <= 0.05 * length, t.task_id


@pytest.mark.parametrize("opts", [{"haystack": "noise"}, {"haystack": "prose"},
                                  {"value_type": "uuid"}, {"haystack": "prose", "value_type": "uuid"}])
def test_sniah_shape(opts: dict[str, Any]) -> None:
    for t in sniah.generate(11, 4, 2000, **opts):
        key = t.answer_key["key"]
        assert re.fullmatch(r"[a-z]+-[a-z]+", key)
        kind = "uuid" if opts.get("value_type") == "uuid" else "number"
        assert t.query == f"What is the special magic {kind} for {key} mentioned in the provided text?"
        assert t.context.count(f"One of the special magic {kind}s for {key} is: {t.gold}.") == 1
        if kind == "number":
            assert re.fullmatch(r"\d{7}", t.gold)
        else:
            assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                                t.gold)
        if opts.get("haystack", "noise") == "noise":  # nothing but RULER's filler around the needle
            rest = t.context.replace(t.answer_key["needle"], "")
            filler = {s.strip() for s in re.findall(r"[^.]+\.", sniah.NOISE)}
            assert {s.strip() for s in re.findall(r"[^.]+\.", rest)} == filler


def test_sniah_depth_option_places_needle() -> None:
    first = sniah.generate(1, 1, 4000, depth=0.0)[0]
    last = sniah.generate(1, 1, 4000, depth=1.0)[0]
    assert first.context.startswith("One of the special magic numbers")
    assert last.context.endswith(f"is: {last.gold}.")


def test_oolong_rows_header_and_hidden_labels() -> None:
    for t in oolong.generate(5, 4, 4000) + oolong_pairs.generate(5, 3, 4000):
        header = t.context.split("\n", 1)[0]
        assert all(label in header for label in questions.LABELS)  # the header names the labels
        rows = rows_of(t)
        assert rows and all(ROW_RE.match(r) for r in rows)
        body = "\n".join(rows).lower()
        for label in questions.LABELS:
            assert label not in body, label
        words = set(re.findall(r"[a-z]+", body))
        assert not words & questions.LABEL_WORDS
        # The answer key's per-row labels are the bank's labels of the row texts.
        texts = [ROW_RE.match(r).group(1) for r in rows]  # type: ignore[union-attr]
        assert [questions.label_of(q) for q in texts] == t.answer_key["row_labels"]


def test_question_bank_is_a_function_and_big_enough() -> None:
    bank = questions.bank()
    assert set(bank) == set(questions.LABELS)
    assert all(len(qs) >= 2000 for qs in bank.values())
    lm = questions.label_map()  # raises if two labels share a text
    assert len(lm) == sum(len(qs) for qs in bank.values()) > 30_000
    for q in lm:
        assert not set(re.findall(r"[a-z]+", q.lower())) & questions.LABEL_WORDS, q


def test_oolong_label_skew() -> None:
    orders = set()
    for t in oolong.generate(21, 8, 8000):
        counts = t.answer_key["counts"]
        c = sorted(counts.values(), reverse=True)
        assert c[0] > c[1] and c[-1] < c[-2], counts  # unique most and least common
        assert c[0] >= 2 * c[-1] and min(c) >= 1, counts
        assert sum(c) == t.metadata["n_rows"]
        orders.add(tuple(t.answer_key["label_order"]))
    assert len(orders) > 1  # which label is common is itself seeded


def test_oolong_question_types_and_gold() -> None:
    tasks = oolong.generate(2, 8, 3000)
    assert [t.metadata["question_type"] for t in tasks[:4]] == list(oolong.QUESTION_TYPES)
    for t in tasks:
        qtype, a, b = oolong.parse_query(t.query)  # type: ignore[misc]
        assert qtype == t.metadata["question_type"]
        counts = t.answer_key["counts"]
        assert t.gold == oolong.answer_for(qtype, counts, a, b)
        if qtype == "count":
            assert isinstance(t.gold, int)
        elif qtype == "compare":
            assert t.gold in oolong.COMPARISON_PHRASES


def test_oolong_pairs_predicates_and_gold() -> None:
    tasks = oolong_pairs.generate(4, 10, 4000)
    assert {t.metadata["predicate"] for t in tasks} >= {"exactly", "none_of", "one_not_other"}
    for t in tasks:
        pred = oolong_pairs.parse_pairs_query(t.query)
        assert pred is not None and pred.kind == t.metadata["predicate"]
        assert t.gold and t.gold == sorted(t.gold) and len(t.gold) <= 150
        assert all(lo < hi for lo, hi in t.gold)
        users = {int(u) for u in t.answer_key["user_label_counts"]}
        assert len(t.gold) < len(users) * (len(users) - 1) // 2  # never "all pairs"


def test_write_and_load_task(tmp_path) -> None:
    for t in evals.generate("oolong", 1, 1, 1000) + evals.generate("oolong-pairs", 1, 1, 1000):
        paths = evals.write_task(t, tmp_path)
        assert paths["context"].read_bytes() == t.context.encode("utf-8")
        public = json.loads(paths["task"].read_text())
        assert "gold" not in public and "answer_key" not in public
        assert public["query"] == t.query and public["family"] == t.family
        key = json.loads(paths["answer"].read_text())
        assert key["gold"] == t.gold and key["row_labels"] == t.answer_key["row_labels"]
        back = evals.load_task(tmp_path, t.task_id)
        assert (back.context, back.query, back.gold, back.family) == (t.context, t.query, t.gold,
                                                                       t.family)
        assert score(back, json.dumps(t.gold)) == score(t, json.dumps(t.gold))


# --------------------------------------------------------------------------------------------------
# Scorers, case by case from the published rules


def test_score_sniah() -> None:
    assert score_sniah("1234567", "The special magic number is 1234567.") == 1.0
    assert score_sniah("1234567", "123456") == 0.0
    uuid = "0f8b2c1e-1a2b-4c3d-8e9f-0123456789ab"
    assert score_sniah(uuid, f"It is {uuid.upper()}") == 1.0  # case-insensitive
    assert score_sniah("1234567", None) == 0.0


def test_parse_oolong_answer() -> None:
    assert parse_oolong_answer("Label: location") == "location"
    assert parse_oolong_answer("Thinking: a lot. Final: **Human Being**") == "human being"  # last ':'
    assert parse_oolong_answer("Label: [numeric value]") == "numeric value"
    assert parse_oolong_answer("  entity  ") == "entity"  # no colon: the whole text


def test_score_oolong_labels() -> None:
    assert score_oolong("location", "Label: location", "most_common") == 1.0
    assert score_oolong("location", "Label: **Location**", "most_common") == 1.0
    assert score_oolong("location", "Label: [location]", "least_common") == 1.0
    assert score_oolong("location", "Label: location.", "most_common") == 0.0  # exact match only
    assert score_oolong("location", "location is the most common", "most_common") == 0.0
    assert score_oolong("human being", "Label: entity", "most_common") == 0.0


def test_score_oolong_comparison() -> None:
    q = "compare"
    assert score_oolong("more common than", "Answer: entity is more common than location", q) == 1.0
    assert score_oolong("less common than", "Answer: entity is **less common than** location", q) == 1.0
    assert score_oolong("same frequency as", "Answer: entity is same frequency as location", q) == 1.0
    assert score_oolong("more common than", "Answer: entity is less common than location", q) == 0.0
    # Only the text after the last colon counts.
    assert score_oolong("more common than", "more common than? Answer: less common than", q) == 0.0


def test_score_oolong_numeric() -> None:
    q = "count"
    assert score_oolong(12, "Answer: 12", q) == 1.0
    assert score_oolong(12, "Answer: 13", q) == pytest.approx(0.75)
    assert score_oolong(12, "Answer: 9", q) == pytest.approx(0.75**3)
    assert score_oolong(1200, "Answer: **1,200**", q) == 1.0
    assert score_oolong(12, "Answer: twelve", q) == 0.0
    assert score_oolong(12, "Rows seen: 500. Answer: [12]", q) == 1.0
    # Without a question type the rule follows the gold.
    assert score_oolong(5, "Answer: 4") == pytest.approx(0.75)
    assert score_oolong("less common than", "Answer: a is less common than b") == 1.0


def test_score_pairs() -> None:
    gold = [[1, 2], [3, 4], [5, 6]]
    assert parse_pairs("(2, 1)\n(3,4)\n( 6 , 5 )") == {(1, 2), (3, 4), (5, 6)}
    assert score_pairs(gold, "(2, 1)\n(3, 4)\n(5, 6)") == 1.0  # order inside a pair is normalised
    assert score_pairs(gold, "(1, 2)\n(1, 2)\n(3, 4)\n(5, 6)") == 1.0  # duplicates count once
    assert score_pairs([], "") == 1.0  # both empty
    assert score_pairs([], "None of the users qualify.") == 1.0
    assert score_pairs(gold, "") == 0.0
    assert score_pairs([], "(1, 2)") == 0.0
    # Partial overlap: 2 of 3 predicted are right (P = 2/3), 2 of 3 gold found (R = 2/3).
    assert score_pairs(gold, "(1, 2)\n(3, 4)\n(7, 8)") == pytest.approx(2 / 3)
    # P = 1, R = 1/3 -> F1 = 0.5.
    assert score_pairs(gold, "(1, 2)") == pytest.approx(0.5)


def test_score_dispatch() -> None:
    t = sniah.generate(1, 1, 500)[0]
    assert score(t, f"The number is {t.gold}") == 1.0 and score(t, None) == 0.0
    with pytest.raises(ValueError):
        evals.generate("nope", 1, 1, 100)


# --------------------------------------------------------------------------------------------------
# Scripted play, without a server


def play(task: evals.Task, max_steps: int = 8, query: str | None = None) -> tuple[str | None, int]:
    """Run the scripted root policy on ``task`` as the engine would; return (answer, sub-calls)."""
    info = ContextInfo.describe(task.context)
    messages: list[tuple[str, str]] = [
        ("system", system_prompt(info)),
        ("user", first_user_message(query or task.query, info, max_steps)),
    ]
    final: dict[str, str] = {}
    sub_calls = 0

    def llm(prompt: str, *, model: str | None = None) -> str:
        nonlocal sub_calls
        sub_calls += 1
        return sub_answer(prompt)[1]

    def llm_batch(prompts: list[str], *, model: str | None = None) -> list[str]:
        return [llm(p) for p in prompts]

    ns: dict[str, Any] = {"context": task.context, "llm": llm, "llm_batch": llm_batch}
    ns["FINAL"] = lambda answer: final.setdefault("answer", str(answer))
    ns["FINAL_VAR"] = lambda name: final.setdefault("answer", str(ns[name]))
    for step in range(1, max_steps + 1):
        _, reply = root_reply(tuple(messages))
        parsed = parse_reply(reply)
        assert len(parsed.blocks) <= 1, reply
        messages.append(("assistant", reply))
        out = io.StringIO()
        if parsed.code:
            with redirect_stdout(out):
                exec(parsed.code, ns)
        if "answer" in final:
            return final["answer"], sub_calls
        if parsed.final_var is not None:
            return str(ns[parsed.final_var]), sub_calls
        if parsed.final is not None:
            return parsed.final, sub_calls
        messages.append(("user", step_feedback(step, out.getvalue(), steps_left=max_steps - step)))
    return None, sub_calls


def test_policies_are_registered() -> None:
    from rlm_kernel.scripted.policies import root_policies, sub_policies

    assert {"oolong", "oolong-pairs"} <= {p.name for p in root_policies()}
    assert "oolong-label" in {p.name for p in sub_policies()}
    eval_policies.register()  # idempotent
    assert [p.name for p in root_policies()].count("oolong") == 1


@pytest.mark.parametrize("qtype", oolong.QUESTION_TYPES)
def test_scripted_oolong(qtype: str) -> None:
    for t in oolong.generate(13, 2, 12_000, question_type=qtype):
        answer, sub_calls = play(t)
        assert answer is not None and score(t, answer) == 1.0, (t.query, answer, t.gold)
        assert sub_calls == math.ceil(t.metadata["n_rows"] / eval_policies.ROWS_PER_CHUNK) > 1


@pytest.mark.parametrize("kind", oolong_pairs.KINDS)
def test_scripted_oolong_pairs(kind: str) -> None:
    t = oolong_pairs.generate(17, 1, 4000, kind=kind)[0]
    answer, sub_calls = play(t)
    assert sub_calls >= 1 and answer is not None
    assert score(t, answer) == 1.0, (t.query, answer, t.gold)


def test_scripted_chunks_directive_and_sub_calls_are_needed() -> None:
    t = oolong.generate(3, 1, 3000, question_type="count")[0]
    answer, sub_calls = play(t, query=t.query + " [chunks=3]")
    assert sub_calls == 3 and score(t, answer) == 1.0
    # The labels come only from sub-calls: the sub policy knows the bank, nothing else, and says so.
    prompt = eval_policies.LABEL_PROMPT_HEAD + "1. What is the answer to everything?\n</questions>"
    assert eval_policies.label_prompt_answer(prompt) == eval_policies.UNKNOWN


@pytest.mark.parametrize("opts", [{}, {"haystack": "prose", "value_type": "uuid"}])
def test_scripted_sniah_uses_the_builtin_needle_policy(opts: dict[str, Any]) -> None:
    for t in sniah.generate(19, 2, 20_000, **opts):
        answer, _ = play(t)
        assert score(t, answer) == 1.0, (answer, t.gold)


def test_scripted_oolong_at_131k() -> None:
    t = oolong.generate(1, 1, 131_072, question_type="most_common")[0]
    assert abs(len(t.context) / 4 - 131_072) <= 0.05 * 131_072
    answer, sub_calls = play(t)
    assert score(t, answer) == 1.0 and sub_calls > 20
