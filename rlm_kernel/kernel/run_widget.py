"""``RunWidget``: the live progress widget that ``%%rlm`` shows in its query cell.

(An ipywidget in the kernel; not to be confused with the JupyterLab extension in ``widgets/``,
whose run bar shows the same counters when it mirrors the run.)

Why a widget and not more output: kernel-to-front-end widget updates render live while the query
cell is still executing (see docs/architecture.md, "Jupyter facts"), and a click on its Stop button reaches the kernel as a comm
message that ipykernel >= 7.4 handles while the run awaits a model call. Printing progress instead
would pile up outputs, and an ``update_display`` every quarter second would re-render the whole
output in JupyterLab.

Why a text fallback: nbclient, papermill, ``jupyter console`` and nbconvert without widget state
render only ``text/plain``. The panel is displayed as one bundle holding both the widget view and a
meaningful text line; front-ends pick what they can render. The kernel cannot know which it is
talking to (nbclient sends no hint), so it always sends both, and the text line is refreshed once,
at the end of the run, through the display id (``update_display_data``): cheap and never flickers.

It is a :class:`~rlm_kernel.observer.RunObserver` of the run it shows. Threads: sub-call events
arrive on the model client's loop thread. Widget trait changes from any thread go out on IOPub, so
:meth:`RunWidget.update` may be called from anywhere; it is throttled (a render at most every
``interval`` seconds, with a trailing render so the last counts are never lost), reads the counters
from the run tree once per render, and only sends traits whose value changed.
"""

from __future__ import annotations

import contextlib
import html
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import cells
from ..observer import RunObserver
from ..states import CallState, RunState
from ..trajectory import Run, Step, SubCall

__all__ = ["RunWidget", "BatchProgress", "widget_enabled", "status_line", "batches_of"]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
MAX_BATCH_ROWS = 6  # the newest batches; a run with hundreds of steps must not grow the panel
_DONE_STATES = {RunState.FINAL: "success", RunState.PAUSED: "warning",
                RunState.STOPPED: "warning", RunState.ERROR: "danger"}


def widget_enabled(config: Any = None) -> bool:
    """Whether ``%%rlm`` should show a :class:`RunWidget`.

    The kernel cannot tell whether its front-end renders widgets (JupyterLab and VS Code do;
    nbclient and ``jupyter console`` do not, and neither says so), so this does not try: the widget
    always travels as a bundle with a text fallback. It is off only when ipywidgets is missing, or
    when the user turned it off (the ``panel`` setting, env ``RLM_PANEL=0``) -- e.g. to keep saved
    notebooks free of widget state.
    """
    if config is not None and getattr(config, "panel", True) is False:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class BatchProgress:
    """One ``llm_batch`` of a run as the panel shows it."""

    batch_id: str
    step: int | None
    total: int
    done: int
    inflight: int  # queued or on the wire
    failed: int
    cancelled: int = 0

    @property
    def text(self) -> str:
        where = f"step {self.step} · " if self.step is not None else ""
        cancelled = f", {self.cancelled} cancelled" if self.cancelled else ""
        return (f"{where}{self.done} done, {self.inflight} in flight, {self.failed} failed"
                f"{cancelled} of {self.total}")


def batches_of(run: Run) -> list[BatchProgress]:
    """The run's ``llm_batch`` calls grouped by ``SubCall.batch_id``, oldest first.

    ``run.subcalls`` is filled on the model client's thread while we read it here, so the snapshot
    is retried if the dict changes size mid-copy (a plain ``list()`` of a dict being written to can
    raise); a handful of retries always succeeds in practice because writes are a few per call.
    """
    calls = cells._snapshot(run)
    groups: dict[str, list[Any]] = {}
    for call in calls:
        if call.batch_id is not None:
            groups.setdefault(call.batch_id, []).append(call)
    out = []
    for bid, members in groups.items():  # dicts keep insertion order: the batches' start order
        out.append(BatchProgress(
            batch_id=bid, step=members[0].step, total=len(members),
            done=sum(c.status == CallState.OK for c in members),
            inflight=sum(not c.status.settled for c in members),
            failed=sum(c.status == CallState.ERROR for c in members),
            cancelled=sum(c.status == CallState.CANCELLED for c in members),
        ))
    return out


def status_line(run_id: str, status: Mapping[str, Any], state: str | None = None) -> str:
    """The one-line text form, e.g. ``RLM run r123: step 3/30 · sub-calls 12 done, 4 in flight,
    0 failed · 5,432 tokens · $0.0000 · 4.2 s``; a state other than running is appended."""
    line = (f"RLM run {run_id}: step {status.get('step', 0)}/{status.get('max_steps', 0)} · "
            f"sub-calls {subcalls_text(status.get('subcalls') or {})} · "
            f"{int(status.get('tokens', 0)):,} tokens · "
            f"${float(status.get('cost_usd', 0.0)):.4f} · {float(status.get('elapsed_s', 0.0)):.1f} s")
    state = state or str(status.get("state") or "")
    if state and state != "running":
        line += f" · {state}"
    return line


def subcalls_text(sc: Mapping[str, Any]) -> str:
    """``12 done, 4 in flight, 28 queued, 0 failed`` (cancelled and queued only when there are)."""
    parts = [f"{sc.get('done', 0)} done", f"{sc.get('inflight', 0)} in flight"]
    if sc.get("queued"):
        parts.append(f"{sc['queued']} queued")
    parts.append(f"{sc.get('failed', 0)} failed")
    if sc.get("cancelled"):
        parts.append(f"{sc['cancelled']} cancelled")
    return ", ".join(parts)


class RunWidget(RunObserver):
    """Progress of one run: step k of max, the root reply as it streams, a bar per
    ``llm_batch``, tokens, cost, time, Stop.

    A little over 250 lines: an ipywidgets view has a widget tree, a text fallback (nbclient and
    consoles show it) and a throttled render, each for the same counters; kept as one observer.

    ``stop`` is called when the user clicks Stop (the kernel routes the click's comm message to it
    even while a step blocks the main thread). ``runs`` is the session's run map, for the counters
    of the run tree. ``interval`` is the least time between two renders; ``clock`` is injectable
    for tests.
    """

    def __init__(self, run: Run, runs: dict[str, Run] | None = None,
                 stop: Callable[[], None] | None = None, *, interval: float = 0.25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        import ipywidgets as w

        self.run = run
        self.runs = runs if runs is not None else {run.run_id: run}
        self.max_steps = int(run.settings.get("max_steps") or 0)
        self._stop_cb = stop
        self.interval = interval
        self._clock = clock
        self._lock = threading.RLock()
        self._status: dict[str, Any] = cells.run_status(run, self.runs)
        self._given: dict[str, Any] | None = None
        self._last_render = float("-inf")
        self._timer: threading.Timer | None = None
        self.stopping = False
        self.finished = False
        self.renders = 0  # how many times the widgets were refreshed (tests read it)
        self._display_id: Any = None
        self._live: tuple[int, str, str | None] | None = None  # (step, text so far, ended)

        self.title = w.HTML()
        self.state = w.HTML()
        self.steps = w.IntProgress(value=0, min=0, max=max(self.max_steps, 1), description="step",
                                   bar_style="info", layout=w.Layout(width="260px"))
        self.steps_text = w.Label()
        self.meters = w.Label()
        self.batch_box = w.VBox()
        self.batches_more = w.Label(layout=w.Layout(display="none"))
        self.answer = w.HTML(layout=w.Layout(display="none"))
        self.writing = w.HTML(layout=w.Layout(display="none"))
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="danger",
                                    tooltip="Stop this run: cancels in-flight model calls")
        self.stop_button.on_click(self._on_stop_click)
        _click_early(self.stop_button, self.stop)
        self._batch_rows: dict[str, tuple[Any, Any, Any]] = {}
        self.widget = w.VBox([
            w.HBox([self.title, self.state, self.stop_button],
                   layout=w.Layout(align_items="center", grid_gap="12px")),
            w.HBox([self.steps, self.steps_text], layout=w.Layout(align_items="center")),
            self.meters, self.writing, self.batches_more, self.batch_box, self.answer,
        ], layout=w.Layout(border="1px solid var(--jp-border-color2, #ccc)", padding="4px 8px"))
        self._render()

    # -- public API ----------------------------------------------------------------------------
    def display(self) -> None:
        """Show the panel in the current cell (the query cell) with a display id, so
        :meth:`finish` can refresh its text fallback in place."""
        from IPython.display import display

        self._display_id = display(self, display_id=True)

    def update(self, status: Mapping[str, Any] | None = None) -> None:
        """Render when due: with ``status`` (a ``status_payload`` dict or a ``status`` message)
        as given, else with the counters read from the run tree at render time.

        Thread-safe and cheap: within ``interval`` of the last render nothing is computed and
        one trailing render is scheduled, so bursts of sub-call events cost one refresh.
        """
        if status is not None and status.get("type") == "status" and \
                isinstance(status.get("status"), Mapping):
            status = status["status"]
        with self._lock:
            if self.finished:
                return
            self._given = dict(status) if status is not None else None
            if self._given is not None:
                self._status = self._given
            wait = self._last_render + self.interval - self._clock()
            if wait <= 0:
                self._render()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self._trailing)
                self._timer.daemon = True
                self._timer.start()

    def finish(self, run: Run | None = None) -> None:
        """The run ended (or paused): final counts, state and answer; Stop disabled; the text
        fallback of the displayed bundle refreshed so nbclient and consoles keep the summary."""
        run = run or self.run
        with self._lock:
            self.run = run
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._given = None
            self.finished = True
            self.stopping = False
            self._render()
            self.stop_button.disabled = True
            self.stop_button.description = {RunState.PAUSED: "Paused",
                                            RunState.STOPPED: "Stopped"}.get(run.status, "Done")
            if run.status == RunState.PAUSED:
                self.stop_button.tooltip = "Paused: `%rlm continue` resumes, `%rlm stop` ends it"
            self.answer.value = html.escape(self.answer_line(), quote=False)
            self.answer.layout.display = "" if self.answer.value else "none"
        if self._display_id is not None:
            # A closed front-end must not fail the run's end.
            with contextlib.suppress(Exception):
                self._display_id.update(self)

    def stop(self) -> None:
        """What a click on Stop does: say 'stopping…' at once, then ask the kernel to stop."""
        with self._lock:
            if self.finished or self.stopping:
                return
            self.stopping = True
            self.stop_button.disabled = True
            self.stop_button.description = "Stopping…"
            self.state.value = "<i>stopping…</i>"
        if self._stop_cb is not None:
            try:
                self._stop_cb()
            except Exception as exc:  # noqa: BLE001 - shown in the panel, never raised in a comm handler
                self.state.value = f"<i>stop failed: {html.escape(str(exc))}</i>"

    # -- text ----------------------------------------------------------------------------------
    @property
    def status(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._status)

    def text(self) -> str:
        """The plain-text form: the status line, then the answer or reason once the run ended."""
        with self._lock:
            state = "stopping…" if self.stopping else None
            line = status_line(self.run.run_id, self._status, state)
            extra = self.answer_line() if self.finished else ""
        return f"{line}\n{extra}" if extra else line

    def answer_line(self) -> str:
        run = self.run
        if run.answer is not None:
            return f"answer: {_clip(run.answer)}"
        if run.stop_reason:
            return f"{run.status}: {_clip(run.stop_reason)}"
        return ""

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None,
                          **kwargs: Any) -> dict[str, Any]:
        """The widget view plus a meaningful ``text/plain`` (ipywidgets' own is the widget repr)."""
        return {WIDGET_VIEW: {"version_major": 2, "version_minor": 0,
                              "model_id": self.widget.model_id},
                "text/plain": self.text()}

    def __repr__(self) -> str:
        return self.text()

    # -- rendering -----------------------------------------------------------------------------
    def _on_stop_click(self, _button: Any) -> None:
        self.stop()

    def _trailing(self) -> None:
        with self._lock:
            self._timer = None
            if not self.finished:
                self._render()

    def _render(self) -> None:
        """Push the current status to the widgets; ipywidgets sends only traits that changed."""
        given = self._given
        self._status = given if given is not None else cells.run_status(self.run, self.runs)
        st = self._status
        self._last_render = self._clock()
        self.renders += 1
        state = str(st.get("state") or self.run.status)
        self.title.value = f"<b>RLM run</b> <code>{html.escape(self.run.run_id)}</code>"
        if not self.stopping:
            self.state.value = f"<i>{html.escape(state)}</i>"
        step, max_steps = int(st.get("step") or 0), int(st.get("max_steps") or self.max_steps or 1)
        self.steps.max = max(max_steps, 1)
        self.steps.value = min(step, self.steps.max)
        done_style = _DONE_STATES.get(RunState(state), "info") if state in _DONE_STATES else "info"
        self.steps.bar_style = done_style if self.finished else "info"
        self.steps_text.value = f"{step} of {max_steps}"
        self.meters.value = (
            f"sub-calls {subcalls_text(st.get('subcalls') or {})} · "
            f"{int(st.get('tokens') or 0):,} tokens · "
            f"${float(st.get('cost_usd') or 0.0):.4f} · {float(st.get('elapsed_s') or 0.0):.1f} s")
        self._render_writing()
        self._render_batches()

    def _render_writing(self) -> None:
        live = None if self.finished else self._live
        if live is None:
            self.writing.layout.display = "none"
            return
        n, text, ended = live
        what = f"{ended} while writing" if ended else "writing"
        tail = text[-LIVE_CHARS:]
        self.writing.value = (f"<i>step {n} {what}…</i><pre style='white-space: pre-wrap; "
                              f"margin: 0'>{html.escape(tail)}</pre>")
        self.writing.layout.display = ""

    def _render_batches(self) -> None:
        import ipywidgets as w

        batches = batches_of(self.run)
        first = max(len(batches) - MAX_BATCH_ROWS, 0)
        shown = batches[first:]
        keep = {b.batch_id for b in shown}
        for bid in [b for b in self._batch_rows if b not in keep]:
            # Rows that scrolled out are closed, so a long run holds at most MAX_BATCH_ROWS rows.
            for widget in self._batch_rows.pop(bid):
                widget.close()
        for i, b in enumerate(shown, start=first + 1):
            row = self._batch_rows.get(b.batch_id)
            if row is None:
                bar = w.IntProgress(min=0, max=max(b.total, 1), description=f"batch {i}",
                                    layout=w.Layout(width="260px"))
                label = w.Label()
                row = (w.HBox([bar, label], layout=w.Layout(align_items="center")), bar, label)
                self._batch_rows[b.batch_id] = row
            _, bar, label = row
            bar.max = max(b.total, 1)
            bar.value = b.done + b.failed
            bar.bar_style = "danger" if b.failed else "success" if b.done == b.total else "info"
            label.value = b.text
        children = tuple(self._batch_rows[b.batch_id][0] for b in shown)
        if self.batch_box.children != children:
            self.batch_box.children = children
        hidden = len(batches) - len(shown)
        self.batches_more.value = (f"… {hidden} earlier batch{'es' if hidden != 1 else ''}"
                                   if hidden else "")
        self.batches_more.layout.display = "" if hidden else "none"

    # -- observer hooks: every event asks for a (throttled) render -----------------------------
    def run_started(self, run: Run) -> None:
        self.update()

    wants_stream = True

    def step_streaming(self, run: Run, n: int, text: str, ended: str | None = None) -> None:
        if run is self.run:
            self._live = (n, text, ended)
            self.update()

    def step_proposed(self, run: Run, step: Step) -> None:
        if run is self.run:
            self._live = None
        self.update()

    def step_finished(self, run: Run, step: Step) -> None:
        self.update()

    def subcall_started(self, run: Run, call: SubCall) -> None:
        self.update()

    def subcall_finished(self, run: Run, call: SubCall) -> None:
        self.update()

    def run_finished(self, run: Run) -> None:
        if run is self.run:
            self.finish(run)


def _click_early(button: Any, act: Callable[[], None]) -> None:
    """Act on a click as its comm message passes ipykernel's shell-channel thread.

    Why: the click reaches the kernel as a comm message, which ipykernel handles on the main
    thread, and a step blocked in ``llm()`` holds that thread; Stop must not wait for it. ipykernel
    (>= 7) asks each comm where to route its messages (``_reply_subshell_for``) on that thread; we
    act there and route as before. The main thread's later click handler finds the widget already
    stopping and does nothing. Without the hook, the click is handled as before (later).
    """
    comm = getattr(button, "comm", None)
    route = getattr(comm, "_reply_subshell_for", None)
    if route is None:
        return

    def early(data: Any, default: Any) -> Any:
        try:
            content = data.get("content") if isinstance(data, dict) else None
            if data.get("method") == "custom" and isinstance(content, dict) and \
                    content.get("event") == "click":
                act()
        except Exception:  # noqa: BLE001 - routing must never fail; the click is handled later
            pass
        return route(data, default)

    comm._reply_subshell_for = early  # type: ignore[union-attr]


#: How much of a streaming root reply the panel shows (its end, where the model is writing).
LIVE_CHARS = 600


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
