"""The library API: ``RLM(...).run(query, context)`` with the scripted default and over HTTP."""

from __future__ import annotations

import asyncio

import pytest
from support import TEST_KEY, repl_block

from rlm_kernel import RLM, ConfigError, RLMConfig, RunResult
from rlm_kernel.scripted import SCRIPTED_BANNER


def test_scripted_default_answers_a_needle_in_a_million_characters(needle_haystack) -> None:
    hay = needle_haystack
    assert len(hay.text) > 1_000_000
    with RLM() as rlm:
        assert rlm.config.scripted and rlm.banner == SCRIPTED_BANNER
        assert "not an LLM" in rlm.banner
        res = rlm.run(hay.query, hay.text)
    assert isinstance(res, RunResult)
    assert res.ok and res.status == "final" and res.stop_reason is None
    assert res.answer == hay.value
    assert res.run.model == "scripted-root" and res.run.sub_model == "scripted-sub"
    assert len(res.steps) >= 2 and res.usage.requests == len(res.steps)
    assert res.usage_detail["total"]["requests"] == res.usage.requests
    assert res.run.context.length == len(hay.text)


def test_scripted_default_counts_with_llm_batch(log_context) -> None:
    with RLM(concurrency=8) as rlm:
        res = rlm.run(log_context.query, log_context.text)
        ledger = rlm.client.ledger
    assert res.answer == str(log_context.contains_error)
    assert res.subcalls >= 1 and set(ledger.by_depth) == {0, 1}
    assert res.usage.requests == ledger.total.requests  # the result's usage is the whole tree
    assert res.usage.prompt_tokens == ledger.total.prompt_tokens


def test_scripted_fallback_says_it_is_not_an_llm() -> None:
    with RLM() as rlm:
        res = rlm.run("Write a haiku about the sea.", "some context")
    assert res.ok and "not an LLM" in res.answer


def test_environment_selects_the_endpoint(scripted_server, monkeypatch) -> None:
    srv = scripted_server()
    monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    monkeypatch.setenv("RLM_MODEL", "scripted-root")
    monkeypatch.setenv("RLM_SUB_MODEL", "scripted-sub")
    with RLM() as rlm:
        assert not rlm.config.scripted and rlm.banner is None
        res = rlm.run("How many lines contain 'b'?", "a\nb\nbb\nc")
    assert res.answer == "2"
    assert srv.model.stats.root_requests == len(res.steps) and srv.model.stats.sub_requests >= 1


def test_run_works_inside_a_running_event_loop() -> None:
    async def main() -> RunResult:
        with RLM() as rlm:
            return rlm.run("How many lines contain 'x'?", "x\ny\nxx")

    assert asyncio.run(main()).answer == "2"


def test_arun() -> None:
    with RLM() as rlm:
        res = asyncio.run(rlm.arun("How many lines contain 'x'?", "x\ny\nxx"))
    assert res.answer == "2"


@pytest.mark.parametrize("context, summary", [
    (["alpha", "beta", "gamma"], "type list, 3 items, total length 14 characters"),
    ({"k1": "v1", "k2": "value2"}, "type dict, 2 items, total length 12 characters"),
    ("plain text", "type str, total length 10 characters"),
])
def test_context_type_and_size_reach_the_model_not_the_content(rlm_inproc, context,
                                                               summary) -> None:
    rlm = rlm_inproc([repl_block("FINAL(type(context).__name__)")])
    res = rlm.run("q", context)
    assert res.answer == type(context).__name__
    (root,) = rlm.transport.root_requests()
    assert summary in root[0]["content"] and summary in root[1]["content"]


def test_settings_are_keywords_and_validated() -> None:
    rlm = RLM(max_steps=7, max_depth=2, output_chars=1234, concurrency=3)
    assert (rlm.config.max_steps, rlm.config.max_depth, rlm.config.output_chars,
            rlm.config.concurrency) == (7, 2, 1234, 3)
    base = RLMConfig(max_steps=9, output_chars=99)
    derived = RLM(config=base, max_steps=4)
    assert derived.config.max_steps == 4 and derived.config.output_chars == 99
    assert base.max_steps == 9
    with pytest.raises(ConfigError, match="concurrency must be at least 1"):
        RLM(concurrency=0)
    with pytest.raises(ConfigError, match="max_steps must be at least 1, not 0"):
        RLM(max_steps=0)


def test_endpoint_without_a_model_name_is_a_config_error(scripted_server) -> None:
    srv = scripted_server()
    with RLM(base_url=srv.base_url, api_key=TEST_KEY) as rlm, \
            pytest.raises(ConfigError, match="no model named"):
        rlm.run("q", "ctx")
    assert srv.model.stats.requests == 0


def test_api_key_is_scrubbed_from_the_stop_reason(echo_key_server) -> None:
    with RLM(model="m", base_url=echo_key_server, api_key=TEST_KEY, max_retries=0) as rlm:
        res = rlm.run("q", "ctx")
    assert res.status == "error" and "HTTP 400" in res.stop_reason
    assert TEST_KEY not in res.stop_reason and TEST_KEY[:12] not in res.stop_reason
    assert TEST_KEY not in repr(res.run.to_dict())


def test_one_client_serves_every_run_of_an_rlm(scripted_server, rlm_http) -> None:
    srv = scripted_server()
    rlm = rlm_http(srv)
    first = rlm.run("How many lines contain 'b'?", "a\nb\nbb")
    requests = srv.model.stats.requests
    second = rlm.run("How many lines contain 'b'?", "a\nb\nbb")
    assert first.answer == second.answer == "2"
    assert srv.model.stats.requests == requests  # the same calls again: all from the cache
    assert first.run.run_id != second.run.run_id
