"""``RunWidget``: trait state, the text fallback, throttling and Stop, without a kernel (ipywidgets
keeps trait state with no front-end); then a real ``rlm`` kernel: the widget updates live during a
``%%rlm`` run and its Stop button stops the run, even while a step blocks in ``llm_batch``."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from rlm_kernel.kernel.run_widget import (
    MAX_BATCH_ROWS,
    WIDGET_VIEW,
    RunWidget,
    batches_of,
    status_line,
    widget_enabled,
)
from rlm_kernel.states import CallState, RunState, StepState
from rlm_kernel.trajectory import Run, Step, SubCall, Usage


def _status(**kw: Any) -> dict[str, Any]:
    base = {"state": "running", "step": 3, "max_steps": 30,
            "subcalls": {"done": 12, "inflight": 4, "failed": 0},
            "tokens": 5432, "cost_usd": 0.0, "elapsed_s": 4.2}
    base.update(kw)
    return base


def _add_batch(run: Run, bid: str, step: int, statuses: list[str]) -> None:
    for i, st in enumerate(statuses):
        cid = f"{bid}-{i}"
        run.subcalls[cid] = SubCall(call_id=cid, model="m", step=step, batch_id=bid,
                                    batch_index=i, status=st)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def run() -> Run:
    return Run(run_id="r123", query="How many?", settings={"max_steps": 30})


# -- text fallback -----------------------------------------------------------------------------
def test_status_line_reads_like_the_spec() -> None:
    assert status_line("r123", _status()) == (
        "RLM run r123: step 3/30 · sub-calls 12 done, 4 in flight, 0 failed · 5,432 tokens · "
        "$0.0000 · 4.2 s")
    assert status_line("r1", _status(state="final")).endswith("4.2 s · final")


def test_bundle_has_widget_view_and_meaningful_text(run: Run) -> None:
    p = RunWidget(run, None, lambda: None)
    p.update(_status())
    bundle = p._repr_mimebundle_()
    assert bundle[WIDGET_VIEW]["model_id"] == p.widget.model_id
    assert bundle[WIDGET_VIEW]["version_major"] == 2
    assert bundle["text/plain"].startswith("RLM run r123: step 3/30 · sub-calls 12 done")
    assert "VBox" not in bundle["text/plain"]  # not ipywidgets' own repr
    assert repr(p) == bundle["text/plain"]


# -- trait state -------------------------------------------------------------------------------
def test_update_sets_step_meters_and_state(run: Run) -> None:
    p = RunWidget(run, None, interval=0)
    p.update(_status(step=7, tokens=123_456, cost_usd=0.0123, elapsed_s=9.87))
    assert (p.steps.value, p.steps.max, p.steps_text.value) == (7, 30, "7 of 30")
    assert p.meters.value == ("sub-calls 12 done, 4 in flight, 0 failed · 123,456 tokens · "
                              "$0.0123 · 9.9 s")
    assert "running" in p.state.value and "r123" in p.title.value
    assert not p.stop_button.disabled


def test_update_accepts_a_whole_status_message(run: Run) -> None:
    p = RunWidget(run, None, interval=0)
    p.update({"v": 1, "type": "status", "run": "r123", "status": _status(step=5)})
    assert p.steps.value == 5


def test_one_progress_bar_per_batch(run: Run) -> None:
    _add_batch(run, "b1", 2, ["ok", "ok", "ok"])
    _add_batch(run, "b2", 3, ["ok", "inflight", "inflight", "error"])
    run.subcalls["single"] = SubCall(call_id="single", model="m", step=3, status="ok")
    assert [(b.batch_id, b.total, b.done, b.inflight, b.failed) for b in batches_of(run)] == [
        ("b1", 3, 3, 0, 0), ("b2", 4, 1, 2, 1)]
    p = RunWidget(run, None, interval=0)
    rows = p.batch_box.children
    assert len(rows) == 2
    bar1, label1 = rows[0].children
    bar2, label2 = rows[1].children
    assert (bar1.value, bar1.max, bar1.bar_style) == (3, 3, "success")
    assert (bar2.value, bar2.max, bar2.bar_style) == (2, 4, "danger")
    assert label2.value == "step 3 · 1 done, 2 in flight, 1 failed of 4"
    # Progress arrives: the same row widgets are updated, not recreated.
    run.subcalls["b2-1"].move(CallState.OK)
    p.update(_status())
    assert p.batch_box.children[1] is rows[1] and bar2.value == 3


def test_many_batches_keep_the_panel_small(run: Run) -> None:
    for i in range(MAX_BATCH_ROWS + 4):
        _add_batch(run, f"b{i}", i + 1, ["ok"])
    p = RunWidget(run, None, interval=0)
    assert len(p.batch_box.children) == MAX_BATCH_ROWS
    assert p.batch_box.children[-1].children[0].description == f"batch {MAX_BATCH_ROWS + 4}"
    assert p.batches_more.value == "… 4 earlier batches"
    assert p.batches_more.layout.display == ""


# -- throttling --------------------------------------------------------------------------------
def test_updates_are_throttled_with_a_trailing_render(run: Run) -> None:
    clock = FakeClock()
    p = RunWidget(run, None, interval=0.25, clock=clock)
    first = p.renders
    for k in range(200):  # a burst of sub-call events within one interval
        p.update(_status(step=1, tokens=k))
    assert p.renders == first  # stored, not rendered
    deadline = time.monotonic() + 2
    while p.renders == first and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.renders == first + 1  # exactly one trailing render ...
    assert p.meters.value.split(" · ")[1] == "199 tokens"  # ... with the latest counts
    clock.now += 1.0  # past the interval: the next update renders at once
    p.update(_status(step=2))
    assert p.renders == first + 2 and p.steps.value == 2


def test_update_is_safe_from_several_threads(run: Run) -> None:
    p = RunWidget(run, None, interval=0)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(200):
                cid = f"t{n}-{i}"
                run.subcalls[cid] = SubCall(call_id=cid, model="m", batch_id=f"b{n}", status="ok")
                p.update(_status(step=i % 30))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    p.update(_status())
    assert sum(b.total for b in batches_of(run)) == 800


# -- Stop --------------------------------------------------------------------------------------
def test_stop_button_calls_back_once_and_says_stopping(run: Run) -> None:
    calls: list[int] = []
    p = RunWidget(run, None, lambda: calls.append(1), interval=0)
    p.stop_button.click()
    p.stop_button.click()
    assert calls == [1]
    assert p.stop_button.disabled and p.stop_button.description == "Stopping…"
    assert "stopping…" in p.state.value
    p.update(_status())  # a tick while the run winds down keeps saying so
    assert "stopping…" in p.state.value and p.text().endswith("· stopping…")


def test_a_failing_stop_callback_is_shown_not_raised(run: Run) -> None:
    def boom() -> None:
        raise RuntimeError("no run")

    p = RunWidget(run, None, boom)
    p.stop_button.click()
    assert "stop failed: no run" in p.state.value


# -- finish ------------------------------------------------------------------------------------
def test_finish_shows_final_state_and_answer_and_disables_stop(run: Run) -> None:
    _add_batch(run, "b1", 2, ["ok", "ok"])
    p = RunWidget(run, None, lambda: None, interval=0)
    p.update(_status(step=1, tokens=10))
    run.steps = [Step(n=1, status=StepState.DONE), Step(n=2, status=StepState.DONE)]
    run.status, run.answer, run.ended = RunState.FINAL, "42", run.started + 1.5
    run.usage = Usage(prompt_tokens=900, completion_tokens=99)
    updated: list[Any] = []

    class Handle:
        def update(self, obj: Any) -> None:
            updated.append(obj._repr_mimebundle_())

    p._display_id = Handle()
    p.finish(run)
    assert p.stop_button.disabled and p.stop_button.description == "Done"
    assert p.steps.value == 2 and p.steps.bar_style == "success"
    assert "answer: 42" in p.answer.value and p.answer.layout.display == ""
    text = p.text()
    assert text.splitlines()[0].endswith("· final") and text.splitlines()[1] == "answer: 42"
    assert "0 in flight" in text
    assert updated and updated[0]["text/plain"] == text  # the fallback is refreshed in place
    p.update(_status(step=9))  # a late tick changes nothing
    assert p.steps.value == 2


def test_finish_of_a_paused_run_says_how_to_go_on(run: Run) -> None:
    p = RunWidget(run, None, lambda: None)
    run.status, run.stop_reason = RunState.PAUSED, "step mode: step 1 is proposed, not run"
    p.finish(run)
    assert p.stop_button.description == "Paused" and "%rlm continue" in p.stop_button.tooltip
    assert p.text().splitlines()[1] == "paused: step mode: step 1 is proposed, not run"


def test_display_uses_a_display_id(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, dict[str, Any]]] = []

    def fake_display(obj: Any, **kw: Any) -> str:
        seen.append((obj, kw))
        return "handle"

    import IPython.display

    monkeypatch.setattr(IPython.display, "display", fake_display)
    p = RunWidget(run)
    p.display()
    assert seen == [(p, {"display_id": True})] and p._display_id == "handle"


def test_widget_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    from rlm_kernel.config import RLMConfig

    assert widget_enabled() is True
    assert widget_enabled(RLMConfig()) is True
    assert widget_enabled(RLMConfig(panel=False)) is False
    monkeypatch.setenv("RLM_PANEL", "0")  # the setting's environment variable
    assert widget_enabled(RLMConfig()) is False


# -- a real kernel -----------------------------------------------------------------------------
_LOG = (
    "import random\n"
    "rng = random.Random(5)\n"
    "context = '\\n'.join(f'{i} {rng.choice([\"INFO\"] * 9 + [\"ERROR\"])} x' for i in range(4000))\n"
    "expected = sum(' ERROR ' in l for l in context.split('\\n'))\n"
    "print('EXPECTED', expected)"
)


@pytest.fixture
def kernel() -> Any:
    from kernel_driver import KernelDriver

    k = KernelDriver()
    yield k
    k.close()


def _widgets(msgs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """comm id -> initial widget state, for every widget the kernel opened."""
    return {m["content"]["comm_id"]: m["content"]["data"]["state"] for m in msgs
            if m["msg_type"] == "comm_open" and m["content"].get("target_name") == "jupyter.widget"}


def _panel_text(msgs: list[dict[str, Any]], kind: str) -> list[str]:
    return [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == kind
            and WIDGET_VIEW in m["content"].get("data", {})]


def test_kernel_widget_updates_live_and_ends_with_the_answer(kernel: Any) -> None:
    # Each model call takes 0.5 s, twice the panel's render interval, so every step renders
    # however loaded the machine is.
    kernel.run("%rlm config scripted_latency=0.5")
    expected = kernel.run(_LOG).outputs_text.split()[1]
    ran = kernel.run("%%rlm --max-steps 6\nHow many log lines have level ERROR? [chunks=4]")
    reply, msgs = ran.reply, ran.iopub
    assert reply["status"] == "ok", reply
    shown = _panel_text(msgs, "display_data")
    assert len(shown) == 1 and shown[0].startswith("RLM run r") and "step 0/6" in shown[0]
    widgets = _widgets(msgs)
    step_bar = next(c for c, s in widgets.items() if s.get("description") == "step")
    assert any(s.get("description") == "batch 1" for s in widgets.values())
    assert any(s.get("_model_name") == "ButtonModel" for s in widgets.values())
    # Live: the step bar moved while the cell was still executing, before its reply.
    live = [m["content"]["data"]["state"]["value"] for m in msgs[: ran.received]
            if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == step_bar
            and "value" in m["content"]["data"].get("state", {})]
    assert len(set(live)) >= 2, live
    final = _panel_text(msgs, "update_display_data")
    assert final and final[-1].splitlines()[0].endswith("· final")
    assert final[-1].splitlines()[1] == f"answer: {expected}"


def test_kernel_widget_stop_button_stops_the_run(kernel: Any) -> None:
    kernel.run("%rlm config scripted_latency=1.0")
    kernel.run(_LOG)
    clicked: list[str] = []

    def on_msg(m: dict[str, Any]) -> None:
        c = m["content"]
        if (not clicked and m["msg_type"] == "comm_open"
                and c.get("data", {}).get("state", {}).get("_model_name") == "ButtonModel"):
            clicked.append(c["comm_id"])
            kernel.click(c["comm_id"])  # while the first root-model call is awaited

    started = time.monotonic()
    ran = kernel.run("%%rlm --max-steps 6\nHow many log lines have level ERROR?", on_iopub=on_msg)
    reply, msgs = ran.reply, ran.iopub
    assert clicked
    assert reply["status"] == "error" and reply["ename"] == "RLMRunStopped", reply
    assert time.monotonic() - started < 6  # not the whole run (3 steps of 1 s plus sub-calls)
    states = [m["content"]["data"]["state"] for m in msgs if m["msg_type"] == "comm_msg"
              and m["content"]["comm_id"] == clicked[0]]
    assert any(s.get("description") == "Stopping…" for s in states)
    final = _panel_text(msgs, "update_display_data")
    assert final and "· stopped" in final[-1].splitlines()[0]



# -- a streaming root reply ----------------------------------------------------------------------
def test_the_panel_shows_a_root_reply_as_it_streams_then_hides_it(run: Run) -> None:
    p = RunWidget(run, None, interval=0)
    assert p.wants_stream and p.writing.layout.display == "none"
    p.step_streaming(run, 1, "Let me look at <the> context first")
    assert p.writing.layout.display == ""
    assert "step 1 writing" in p.writing.value and "&lt;the&gt; context" in p.writing.value
    p.step_streaming(run, 1, "x" * 5000, ended="stopped")
    assert "stopped while writing" in p.writing.value and "x" * 5000 not in p.writing.value
    p.step_proposed(run, Step(n=1, reply="done"))
    assert p.writing.layout.display == "none"
