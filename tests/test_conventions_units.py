"""The pure pieces of other runtimes' conventions: reasoning split and parameters, the ``answer``
dict, custom tool descriptions."""

from __future__ import annotations

import pytest

from rlm_kernel.answer_dict import AnswerDict, bind_answer, release_answer, submitted
from rlm_kernel.custom_tools import ToolError, make_tool, tools_from, tools_prompt_section
from rlm_kernel.reasoning import is_reasoning_model, request_params, split_reasoning
from rlm_kernel.scripted.reasoning import DECOY_MARK, reasoning_for

# ------------------------------------------------------------------------------ reasoning


def test_think_blocks_are_split_off_with_their_decoy_code_and_final():
    think = reasoning_for(root=True)
    reasoning, reply = split_reasoning(f"<think>\n{think}\n</think>\n\nPlan.\n```repl\nx = 1\n```")
    assert DECOY_MARK in reasoning and "FINAL(" in reasoning
    assert reply == "Plan.\n```repl\nx = 1\n```"


def test_reasoning_content_joins_think_blocks_and_plain_content_is_untouched():
    assert split_reasoning("  text stays as is\n", "why") == ("why", "  text stays as is\n")
    assert split_reasoning("<think>a</think>b<think>c</think>d", "f") == ("f\n\na\n\nc", "bd")


def test_unclosed_think_is_all_reasoning_and_a_bare_close_ends_leading_thinking():
    assert split_reasoning("<think>cut off ```repl\nx") == ("cut off ```repl\nx", "")
    assert split_reasoning("thinking first</think>\nanswer") == ("thinking first", "answer")


@pytest.mark.parametrize("name", ["o1", "o3-mini", "o4-mini-2025-04-16", "gpt-5", "gpt-5-nano",
                                  "openai/o3", "azure/gpt-5.1"])
def test_openai_reasoning_families_are_recognised_by_name(name: str):
    assert is_reasoning_model(name)


@pytest.mark.parametrize("name", ["gpt-4o", "gpt-5-chat-latest", "scripted-root", "llama-3-8b",
                                  "deepseek-r1", "o-series"])
def test_other_models_are_not_treated_as_refusing_sampling(name: str):
    assert not is_reasoning_model(name)
    assert is_reasoning_model(name, "yes") and not is_reasoning_model("o3", "no")


def test_refused_parameters_are_dropped_and_reasoning_effort_passes():
    params = {"temperature": 0.2, "top_p": 0.9, "max_tokens": 64}
    assert request_params("o3", params, reasoning_effort="low") == {
        "max_completion_tokens": 64, "reasoning_effort": "low"}
    assert request_params("gpt-4o", params) == params
    assert request_params("my-model", params, reasoning_model="yes") == {
        "max_completion_tokens": 64}


# ------------------------------------------------------------------------------ answer dict


def test_the_answer_dict_counts_once_ready_with_its_content_at_the_end_of_the_step():
    ns: dict = {}
    owned = bind_answer(ns)
    assert isinstance(ns["answer"], AnswerDict) and submitted(ns, owned) is None
    ns["answer"]["ready"] = True
    ns["answer"]["content"] = 42  # set after ready: still counts, as it stands at the end
    assert submitted(ns, owned) == "42"


def test_a_plain_dict_bound_by_the_model_counts_and_other_values_do_not():
    ns: dict = {}
    owned = bind_answer(ns)
    ns["answer"] = {"content": "x", "ready": True}
    assert submitted(ns, owned) == "x"
    ns["answer"] = "the model's own variable"
    assert submitted(ns, owned) is None


def test_a_humans_own_answer_variable_is_back_after_the_run_unless_the_model_rebound_it():
    ns: dict = {"answer": "mine"}
    owned = bind_answer(ns)
    assert isinstance(ns["answer"], AnswerDict)
    release_answer(ns, owned)
    assert ns["answer"] == "mine"
    owned = bind_answer(ns)
    ns["answer"] = "the model's"
    release_answer(ns, owned)
    assert ns["answer"] == "the model's"
    empty: dict = {}
    release_answer(empty, bind_answer(empty))
    assert "answer" not in empty


# ------------------------------------------------------------------------------ custom tools


def lookup(key: str, *, limit: int = 3) -> list[str]:
    """Look ``key`` up in the index.

    Longer text that the prompt leaves out.
    """
    return [key] * limit


def test_tools_are_described_by_name_signature_and_first_docstring_paragraph():
    tools = tools_from([lookup])
    section = tools_prompt_section(tools)
    assert "- `lookup(key: str, *, limit: int = 3) -> list[str]`: Look ``key`` up in the index." in section
    assert "Longer text" not in section


def test_rlms_and_dict_forms_and_values_are_accepted():
    tools = tools_from({"find": lookup, "LIMIT": {"tool": 10, "description": "max rows"}})
    assert set(tools) == {"find", "LIMIT"} and tools["find"].value is lookup
    assert tools["LIMIT"].line() == "- `LIMIT` (int): max rows"
    assert make_tool(lambda x: x, "f").description == "a custom function (no docstring)"


def test_tool_names_the_repl_reserves_or_that_are_not_identifiers_are_refused():
    with pytest.raises(ToolError, match="taken by the REPL"):
        tools_from({"llm": lookup}, reserved=("llm", "context"))
    with pytest.raises(ToolError, match="Python identifier"):
        tools_from({"not a name": lookup})
    with pytest.raises(ToolError, match="two tools"):
        tools_from([lookup, make_tool(len, "lookup")])
