"""Forks in the library: a branch re-executes its parent's steps from the record, then goes live."""

from __future__ import annotations

import pytest
from support import SCRIPTED_ROOT, SCRIPTED_SUB

from rlm_kernel.forking import ForkError
from rlm_kernel.scripted.stepwise_policy import STEPWISE_MODEL
from rlm_kernel.trajectory import ForkOf


@pytest.fixture
def stepwise_run(scripted_server, rlm_http, make_log):
    """A recorded 8-step run (peek, six one-chunk sub-calls, FINAL) over real HTTP."""
    log = make_log(3000)
    srv = scripted_server()
    res = rlm_http(srv, model=STEPWISE_MODEL).run(log.query + " [chunks=6]", log.text)
    assert res.ok and len(res.steps) == 8 and res.answer == str(log.contains_error)
    return res, srv, log


def test_a_fork_at_step_4_with_another_root_model_pays_only_for_what_comes_after(
        stepwise_run, rlm_http) -> None:
    parent, srv, log = stepwise_run
    srv.model.stats.reset()
    branch = rlm_http(srv, model=SCRIPTED_ROOT, sub_model="scripted-sub-b").fork(
        parent, 4, log.text)
    stats = srv.model.stats.snapshot()
    # After step 4 scripted-root sends one llm_batch of six chunks (step 5) and ends (step 6);
    # steps 1-4 and their three sub-calls (made with scripted-sub) come from the record.
    assert (stats["root_requests"], stats["sub_requests"]) == (2, 6)
    assert branch.ok and branch.answer == str(log.contains_error)
    assert [s.n for s in branch.steps] == [1, 2, 3, 4, 5, 6]
    for mine, theirs in zip(branch.steps[:4], parent.steps[:4], strict=True):
        assert (mine.reply, mine.code, mine.output_text, mine.outputs) == \
            (theirs.reply, theirs.code, theirs.output_text, theirs.outputs)
        assert mine.usage.total_tokens == 0  # served from the record
    assert "llm_batch" in (branch.steps[4].code or "")
    assert branch.run.fork_of == ForkOf(parent.run.run_id, 4, [
        {"to": 4, "model": STEPWISE_MODEL, "sub_model": SCRIPTED_SUB}])
    assert branch.run.branch == f"{SCRIPTED_ROOT}+sub=scripted-sub-b@4"
    assert (branch.run.model, branch.run.sub_model) == (SCRIPTED_ROOT, "scripted-sub-b")
    assert {c.model for c in branch.run.subcalls.values() if c.step <= 4} == {SCRIPTED_SUB}


def test_a_branch_asking_a_sub_call_its_parent_already_asked_reuses_the_recorded_answer(
        stepwise_run, rlm_http) -> None:
    parent, srv, log = stepwise_run
    srv.model.stats.reset()
    branch = rlm_http(srv, model=SCRIPTED_ROOT).fork(parent, 4, log.text)
    stats = srv.model.stats.snapshot()
    # The batch's six chunk prompts are the ones the parent asked one per step, to the same
    # sub-model: identical calls are served from the record, so only the root is paid.
    assert (stats["root_requests"], stats["sub_requests"]) == (2, 0)
    assert branch.ok and branch.answer == parent.answer


def test_a_fork_of_a_fork_replays_each_inherited_step_with_the_models_that_made_it(
        stepwise_run, rlm_http) -> None:
    parent, srv, log = stepwise_run
    # B: from step 3 on, scripted-root with another sub-model name (its calls are keyed by it).
    b = rlm_http(srv, model=SCRIPTED_ROOT, sub_model="scripted-sub-b").fork(parent, 3, log.text)
    assert b.ok and len(b.steps) == 5
    srv.model.stats.reset()
    # C forks B after B's batch step (4): steps 1-3 replay with A's models, 4 with B's.
    c = rlm_http(srv, model=STEPWISE_MODEL).fork(b, 4, log.text, label="back-to-stepwise")
    stats = srv.model.stats.snapshot()
    assert c.run.fork_of is not None and c.run.fork_of.models == [
        {"to": 3, "model": STEPWISE_MODEL, "sub_model": SCRIPTED_SUB},
        {"to": 4, "model": SCRIPTED_ROOT, "sub_model": "scripted-sub-b"}]
    assert c.ok and c.answer == str(log.contains_error)
    # After B's step 4 the stepwise model sees no STEPWISE lines of its own after step 3's
    # (chunk 2 done): it counts chunks 3..6 one per step, then ends.
    assert (stats["sub_requests"], stats["root_requests"]) == (4, 5)
    assert [s.code for s in c.steps[:4]] == [s.code for s in b.steps[:4]]


def test_a_fork_at_0_is_a_fresh_start_of_the_same_task_with_the_other_model(
        stepwise_run, rlm_http) -> None:
    parent, srv, log = stepwise_run
    branch = rlm_http(srv, model=SCRIPTED_ROOT).fork(parent, 0, log.text)
    assert branch.ok and len(branch.steps) == 3 and branch.run.fork_of.models == []  # type: ignore[union-attr]


def test_forking_where_no_fork_can_go_says_which_steps_can(stepwise_run, rlm_http) -> None:
    parent, srv, log = stepwise_run
    rlm = rlm_http(srv)
    with pytest.raises(ForkError, match=r"step 8 of r\w+ ended the run \(FINAL\); fork at an "
                                        r"earlier step \(at most 7\)"):
        rlm.fork(parent, 8, log.text)
    with pytest.raises(ForkError, match=r"cannot fork r\w+ at step 12; fork at 0 \(a fresh start\) "
                                        r"or a step of r\w+: 1-8"):
        rlm.fork(parent, 12, log.text)


def test_a_fork_whose_inherited_step_runs_differently_stops_instead_of_paying(
        stepwise_run, rlm_http) -> None:
    parent, srv, log = stepwise_run
    srv.model.stats.reset()
    # The same first 600 characters (step 1 peeks at 500), then other data: chunk 1's prompt
    # (step 2) is not in the record.
    other_data = log.text[:600] + log.text[600:].replace("ERROR", "error", 50)
    branch = rlm_http(srv, model=SCRIPTED_ROOT).fork(parent, 4, other_data)
    assert branch.status == "error"
    assert branch.stop_reason is not None and branch.stop_reason.startswith(
        "step 2 ran differently from its record")
    assert "fork at an earlier step (at most 1)" in branch.stop_reason
    assert srv.model.stats.snapshot()["requests"] == 0
    assert len(branch.steps) == 2 and "ReplayMissError" in (branch.steps[1].error or "")
