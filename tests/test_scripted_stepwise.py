"""scripted-stepwise: a second scripted root model whose strategy differs from the built-in one."""

from __future__ import annotations

from support import SCRIPTED_SUB

from rlm_kernel.scripted.stepwise_policy import STEPWISE_MODEL


def test_the_stepwise_model_counts_one_chunk_per_step_and_gets_the_count_right(
        scripted_server, rlm_http, make_log) -> None:
    log = make_log(3000)
    srv = scripted_server()
    res = rlm_http(srv, model=STEPWISE_MODEL, sub_model=SCRIPTED_SUB).run(
        log.query + " [chunks=6]", log.text)
    assert res.ok and res.answer == str(log.contains_error)
    assert len(res.steps) == 8  # peek, six chunks, FINAL
    assert [sum(c.step == s.n for c in res.run.subcalls.values()) for s in res.steps] == \
        [0, 1, 1, 1, 1, 1, 1, 0]
    stats = srv.model.stats.snapshot()
    assert stats["root_requests"] == 8 and stats["sub_requests"] == 6
    assert stats["by_policy"]["stepwise_count"] == 8


def test_the_model_name_decides_the_strategy_for_the_same_query(scripted_server, rlm_http,
                                                                 make_log) -> None:
    log = make_log(3000)
    srv = scripted_server()
    res = rlm_http(srv).run(log.query + " [chunks=6]", log.text)  # scripted-root
    assert res.ok and res.answer == str(log.contains_error)
    assert len(res.steps) == 3 and "llm_batch" in (res.steps[1].code or "")
    assert "stepwise_count" not in srv.model.stats.snapshot()["by_policy"]
