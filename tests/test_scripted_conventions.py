"""The scripted model in other runtimes' conventions: reasoning models, tool calling, rlms.

Everything goes through the real openai client over HTTP on 127.0.0.1 (``ScriptedServer``) or
straight through the policies, as in ``test_scripted.py``. Policy code is run in a plain namespace
with tiny REPL functions, so the tests check that the code is valid and yields the exact answer.
"""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stdout
from typing import Any

import openai
import pytest

from rlm_kernel.prompts import first_user_message, step_feedback, system_prompt
from rlm_kernel.scripted import ScriptedModel, ScriptedServer, policies
from rlm_kernel.scripted.policies import count_lines
from rlm_kernel.scripted.reasoning import DECOY_ANSWER, DECOY_MARK
from rlm_kernel.scripted.tool_calls import FINAL_TOOL, REPL_TOOL
from rlm_kernel.trajectory import ContextInfo

LOG = "\n".join(f"2025-01-01T00:00:{i % 60:02d}Z {'ERROR' if i % 7 == 0 else 'INFO'} line {i}"
                for i in range(300))
TRUTH = count_lines(LOG, "ERROR", False)
COUNT_Q = "How many lines contain 'ERROR'? [chunks=3]"
NEEDLE_TEXT = ("Filler sentence number one. " * 40 + "One of the special magic numbers for "
               "quiet-river is: 4417093. " + "More filler text here. " * 40)
NEEDLE_Q = "What is the special magic number for quiet-river mentioned in the provided text?"

TOOLS = [
    {"type": "function", "function": {
        "name": REPL_TOOL, "description": "run code",
        "parameters": {"type": "object", "properties": {"code": {"type": "string"}},
                       "required": ["code"]}}},
    {"type": "function", "function": {
        "name": FINAL_TOOL, "description": "finish",
        "parameters": {"type": "object", "properties": {"answer": {"type": "string"},
                                                        "variable": {"type": "string"}}}}},
]


@pytest.fixture
def server():
    srv = ScriptedServer(ScriptedModel())
    srv.start()
    yield srv
    srv.stop()


def client(srv: ScriptedServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key="scripted", max_retries=0)


def ours(query: str, context: Any) -> list[dict[str, Any]]:
    info = ContextInfo.describe(context)
    return [{"role": "system", "content": system_prompt(info)},
            {"role": "user", "content": first_user_message(query, info, 10)}]


def run_code(code: str, ns: dict[str, Any]) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        exec(code, ns)  # noqa: S102 - the scripted policy's own code, as a REPL runs it
    return out.getvalue()


def sub(prompt: str) -> str:
    return policies.sub_answer(prompt)[1]


# ------------------------------------------------------------------------------ reasoning models


def test_reasoner_model_sends_reasoning_content_beside_the_reply(server: ScriptedServer):
    msgs = ours(COUNT_Q, LOG)
    plain = client(server).chat.completions.create(model="scripted-root", messages=msgs)
    reasoned = client(server).chat.completions.create(model="scripted-root-reasoner",
                                                      messages=msgs)
    message = reasoned.choices[0].message
    assert message.content == plain.choices[0].message.content  # the reply itself is unchanged
    reasoning = message.model_extra["reasoning_content"]
    assert DECOY_MARK in reasoning and f"FINAL({DECOY_ANSWER})" in reasoning
    assert reasoned.usage.completion_tokens_details.reasoning_tokens > 0


def test_reasoner_model_streams_reasoning_deltas_before_content(server: ScriptedServer):
    stream = client(server).chat.completions.create(
        model="scripted-sub-reasoner", stream=True,
        messages=[{"role": "user", "content": "Count the lines of the text below that contain "
                   "the exact text 'x' (case-sensitive). Answer with a number only.\n<text>\n"
                   "x\nx\ny\n</text>"}])
    kinds: list[str] = []
    reasoning, content = "", ""
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        extra = (delta.model_extra or {}).get("reasoning_content")
        if extra:
            kinds.append("reasoning")
            reasoning += extra
        if delta.content:
            kinds.append("content")
            content += delta.content
    assert content == "2"
    assert DECOY_MARK in reasoning
    assert kinds.index("content") > kinds.index("reasoning") and "reasoning" not in kinds[
        kinds.index("content"):]


def test_think_model_puts_a_think_block_with_decoys_before_the_reply(server: ScriptedServer):
    msgs = ours(COUNT_Q, LOG)
    text = client(server).chat.completions.create(model="scripted-root-think",
                                                  messages=msgs).choices[0].message.content
    think, _, rest = text.partition("</think>")
    assert think.startswith("<think>") and DECOY_MARK in think and "```repl" in think
    assert rest.strip().startswith("I look at")  # the plain reply follows


def test_o_series_model_refuses_temperature_like_openai(server: ScriptedServer):
    c = client(server)
    msgs = [{"role": "user", "content": "hello"}]
    with pytest.raises(openai.BadRequestError, match="Unsupported parameter: 'temperature'"):
        c.chat.completions.create(model="scripted-sub-o-series", messages=msgs, temperature=0.2)
    ok = c.chat.completions.create(model="scripted-sub-o-series", messages=msgs,
                                   reasoning_effort="high")
    assert ok.choices[0].message.content
    assert server.model.stats.snapshot()["params"] == {"temperature": 1, "reasoning_effort": 1}


# ------------------------------------------------------------------------------ tool calling


def test_tool_calling_mode_plays_a_whole_count_with_repl_and_final_tools(server: ScriptedServer):
    """The fenced strategy arrives as tool calls (no fence in any content); tool results feed
    back as ``tool`` messages, and the run ends with the ``final`` tool."""
    c = client(server)
    msgs = ours(COUNT_Q, LOG)
    ns: dict[str, Any] = {"context": LOG, "llm_batch": lambda ps: [sub(p) for p in ps]}
    for _ in range(6):
        res = c.chat.completions.create(model="scripted-root", messages=msgs, tools=TOOLS)
        choice = res.choices[0]
        assert "```" not in (choice.message.content or "")
        assert choice.finish_reason == "tool_calls"
        calls = choice.message.tool_calls
        msgs.append(choice.message.model_dump(exclude_none=True))
        for call in calls:
            args = json.loads(call.function.arguments)
            if call.function.name == FINAL_TOOL:
                answer = args.get("answer") or str(ns[args["variable"]])
                assert answer == str(TRUTH)
                return
            out = run_code(args["code"], ns)
            msgs.append({"role": "tool", "tool_call_id": call.id, "content": out})
    raise AssertionError("no final tool call")


def test_tool_calls_stream_as_openai_deltas(server: ScriptedServer):
    stream = client(server).chat.completions.create(
        model="scripted-root", messages=ours(COUNT_Q, LOG), tools=TOOLS, stream=True)
    name, args, finish = "", "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        for delta in chunk.choices[0].delta.tool_calls or []:
            name += delta.function.name or ""
            args += delta.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert name == REPL_TOOL and finish == "tool_calls"
    assert "print(" in json.loads(args)["code"]


def test_tool_choice_none_gets_fences_again(server: ScriptedServer):
    res = client(server).chat.completions.create(model="scripted-root", messages=ours(COUNT_Q, LOG),
                                                 tools=TOOLS, tool_choice="none")
    assert res.choices[0].message.tool_calls is None
    assert "```repl" in res.choices[0].message.content


# ------------------------------------------------------------------------------ rlms convention


def play_ours(query: str, context: Any, *, rlm_query: Any = None, max_steps: int = 8) -> str:
    """Our engine's prompts, rlms's REPL names: returns answer["content"] once ready."""
    msgs = [{"role": r["role"], "content": r["content"]} for r in ours(query, context)]
    answer = {"content": "", "ready": False}
    ns: dict[str, Any] = {"context": context, "answer": answer,
                          "llm_query": sub, "llm_query_batched": lambda ps: [sub(p) for p in ps],
                          "rlm_query": rlm_query,
                          "rlm_query_batched": lambda ps: [rlm_query(p) for p in ps]}
    for step in range(1, max_steps + 1):
        reply = policies.root_reply(tuple((m["role"], m["content"]) for m in msgs))[1]
        assert isinstance(reply, str)
        assert "FINAL" not in reply  # only the rlms convention
        msgs.append({"role": "assistant", "content": reply})
        code = re.search(r"```repl\n(.*?)\n```", reply, re.S)
        out = run_code(code.group(1), ns) if code else ""
        if ns["answer"]["ready"]:
            return str(ns["answer"]["content"])
        msgs.append({"role": "user", "content": step_feedback(step, out, steps_left=9)})
    raise AssertionError("the answer dict was never marked ready")


def test_rlms_speaker_counts_with_llm_query_batched_in_our_prompts():
    assert play_ours(COUNT_Q + " [convention=rlms]", LOG) == str(TRUTH)


def test_rlms_speaker_finds_a_needle_with_rlm_query_children():
    asked: list[str] = []

    def rlm_query(prompt: str) -> str:  # a child: here, the scripted sub policy's answer
        asked.append(prompt)
        return sub(prompt)

    q = NEEDLE_Q + " [convention=rlms] [strategy=rlm_query] [chunks=3]"
    assert play_ours(q, NEEDLE_TEXT, rlm_query=rlm_query) == "4417093"
    assert len(asked) == 3 and all(p.startswith("Find the special magic number") for p in asked)


RLMS_SYSTEM = ('Available in the REPL: `llm_query_batched(prompts)`; `answer`: set '
               'answer["content"] and answer["ready"] = True.')


def play_rlms(context: str, query: str | None, *, max_turns: int = 6,
              then_ask: bool = False) -> str:
    """rlms's conversation shape: metadata message, "Turn k/N", "REPL output:" feedback."""
    meta = f"Your context is a str of {len(context)} total characters."
    msgs = [{"role": "system", "content": RLMS_SYSTEM},
            {"role": "user", "content": f"Answer the following: {query}\n\n{meta}" if query
             else meta}]
    ns: dict[str, Any] = {"context": context, "answer": {"content": "", "ready": False},
                          "llm_query_batched": lambda ps: [sub(p) for p in ps]}
    for turn in range(1, max_turns + 1):
        msgs.append({"role": "user", "content": f"Turn {turn}/{max_turns}:"})
        reply = policies.root_reply(tuple((m["role"], m["content"]) for m in msgs))[1]
        assert isinstance(reply, str)
        msgs.append({"role": "assistant", "content": reply})
        code = re.search(r"```repl\n(.*?)\n```", reply, re.S)
        if code:
            out = run_code(code.group(1), ns)
            msgs.append({"role": "user", "content": f"REPL output:\n{out}"})
        if ns["answer"]["ready"]:
            return str(ns["answer"]["content"])
    assert then_ask, "the run did not finish"
    msgs.append({"role": "assistant", "content": "Please provide a final answer to the user's "
                                                 "question based on the information provided."})
    reply = policies.root_reply(tuple((m["role"], m["content"]) for m in msgs))[1]
    assert isinstance(reply, str) and "```" not in reply
    return reply


def test_rlms_child_reads_its_task_from_the_head_of_its_context():
    prompt = ("Find the special magic number for 'quiet-river' in the text below. Answer with the "
              "value only, or NONE if the text does not state it.\n<text>\n" + NEEDLE_TEXT +
              "\n</text>")
    assert play_rlms(prompt, None) == "4417093"
    count = ("Count the lines of the text below that contain the exact text 'ERROR' "
             "(case-sensitive). Answer with a number only.\n<text>\n" + LOG + "\n</text>")
    assert play_rlms(count, None) == str(TRUTH)


def test_rlms_stalled_count_gives_a_partial_best_effort_answer_when_asked():
    answer = play_rlms(LOG, "How many lines contain 'ERROR'? [stall=yes]", max_turns=3,
                       then_ask=True)
    half = count_lines("\n".join(LOG.split("\n")[:150]), "ERROR", False)
    assert answer.startswith(f"{half} (best effort: only 2 of 4 parts")
    assert play_rlms(LOG, "How many lines contain 'ERROR'? [stall=yes]") == str(TRUTH)
