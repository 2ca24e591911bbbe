"""A human's hands on a run keep the trajectory consistent: an edited step makes everything after
it stale (steps, their sub-calls, the final answer), numbering and status agree, paused time is not
counted; Pause acts at the next step even mid-batch; a step run from a copy updates the step."""

from __future__ import annotations

import time

import pytest
from support import scripted_env

from rlm_kernel.notebook import MARKER_RE

COUNT = "How many log lines have level ERROR? [chunks=4]"


def _rlm(cell: dict) -> dict:
    return cell.get("metadata", {}).get("rlm", {})


@pytest.fixture
def loaded(kernel_factory, scripted_server, tmp_path, log_context):
    def make(**server_kw):
        srv = scripted_server(**server_kw)
        k = kernel_factory(scripted_env(srv.base_url))
        path = tmp_path / "app.log"
        path.write_text(log_context.text)
        assert k.run(f"%rlm load {path}").reply["status"] == "ok"
        k.open_comm()
        return k, srv
    return make


def test_an_edit_then_continue_leaves_one_live_answer_and_everything_after_it_stale(
        loaded, log_context) -> None:
    k, srv = loaded()
    ran = k.run(f"%%rlm\n{COUNT}", cell_id="q")
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["outcome"] == "final"
    rid = finish["run"]
    steps = [c for c in k.mirror.cells if _rlm(c).get("kind") == "step"]
    assert len(steps) >= 2
    first = steps[0]
    edited = first["source"] + "\nprint('a human was here')"
    started_pause = time.monotonic()
    ran = k.run(edited, cell_id=first["id"])
    assert ran.reply["status"] == "ok", ran.outputs_text
    time.sleep(1.5)  # the human reads and thinks: not the run's time
    ran = k.run("%rlm continue")
    assert ran.reply["status"] == "ok", ran.outputs_text
    wall = time.monotonic() - started_pause
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["outcome"] == "final" and finish["answer"].strip() == str(log_context.level_error)

    cells_ = [c for c in k.mirror.cells if _rlm(c).get("run") == rid]
    finals = [c for c in cells_ if _rlm(c).get("kind") == "final"]
    assert len([c for c in finals if not _rlm(c).get("stale")]) == 1, "one live final answer"
    assert len([c for c in finals if _rlm(c).get("stale")]) == 1 and "stale" in finals[0]["source"]
    numbers = [int(MARKER_RE.match(c["source"]).group("step")) for c in cells_
               if _rlm(c).get("kind") == "step"]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)  # never reused
    thoughts = [_rlm(c)["step"] for c in cells_ if _rlm(c).get("kind") == "thought"]
    assert thoughts == sorted(thoughts) and len(set(thoughts)) == len(thoughts)
    numbers = sorted(set(numbers) | set(thoughts))
    later = [c for c in cells_ if _rlm(c).get("kind") == "step" and _rlm(c)["step"] > 1
             and _rlm(c)["step"] <= len(steps)]
    assert later and all(_rlm(c)["status"] == "stale" for c in later)
    old_calls = [c for c in cells_ if _rlm(c).get("kind") == "llm"
                 and _rlm(c)["step"] <= len(steps)]
    assert old_calls and all(_rlm(c).get("stale") for c in old_calls)
    status = [m for m in ran.comm if m["type"] == "status"][-1]["status"]
    assert status["step"] == max(numbers)  # the bar and the numbering agree
    assert status["elapsed_s"] < wall - 1.0  # the human's pause is not counted

    # A stale step is history: unchanged it shows its record, edited it refuses and says how.
    stale = next(c for c in cells_ if _rlm(c).get("kind") == "step" and _rlm(c)["status"] == "stale")
    calls = srv.model.stats.root_requests
    again = k.run(stale["source"], cell_id=stale["id"])
    recorded = "".join(o.get("text", "") for o in stale["outputs"] if o["output_type"] == "stream")
    assert again.reply["status"] == "ok" and recorded.strip()
    assert recorded.strip() in again.outputs_text
    edited = k.run(stale["source"] + "\nprint(1)", cell_id=stale["id"])
    assert edited.reply["status"] == "error" and edited.reply["ename"] == "StaleStep"
    assert "%rlm fork --at" in edited.reply["evalue"]
    assert srv.model.stats.root_requests == calls


def test_pause_requested_mid_batch_takes_effect_at_the_next_step(loaded) -> None:
    k, srv = loaded(latency=1.0)
    sent = {}

    def on(m: dict) -> None:
        if m["type"] == "insert" and m["kind"] == "llm" and not sent:
            sent["at"] = srv.model.stats.root_requests
            k.send_control("pause")  # while the step blocks in llm_batch

    ran = k.collect(k.submit(f"%%rlm\n{COUNT}", cell_id="q"), timeout=120, on_msg=on)
    assert sent, "the step never made its sub-calls"
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["outcome"] == "paused" and "paused by the user" in finish["reason"], finish
    assert srv.model.stats.root_requests == sent["at"]  # no root call after the batch's step


def test_a_proposed_step_run_from_a_copy_updates_the_step_and_the_run_state(loaded) -> None:
    k, _srv = loaded()
    ran = k.run(f"%%rlm --step\n{COUNT}", cell_id="q")
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["outcome"] == "paused" and "proposed" in finish["reason"]
    rid = finish["run"]
    step = k.mirror.cell(f"{rid}-s1")
    copy = step["source"] + "\nprint('from a copy')"
    ran = k.run(copy, cell_id="a-copy-of-step-1")
    assert ran.reply["status"] == "ok"
    step = k.mirror.cell(f"{rid}-s1")
    assert step["source"] == copy and "from a copy" in str(step["outputs"])
    assert step["execution_count"] is not None
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["outcome"] == "paused" and "proposed" not in finish["reason"], finish
    assert "ran" in finish["reason"]
