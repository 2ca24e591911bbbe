"""Turning a run's events into ``rlm.cells`` messages, off the hot path.

Observer hooks only enqueue (sub-call hooks run on the model client's loop thread, where a slow
``comm.send`` would delay the next request); one sender thread drains the queue in order every
20 ms and adds a throttled ``status`` message while a run is live.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import cells
from ..notebook import (
    child_run_cells,
    final_cell,
    llm_cell,
    query_cell,
    step_cell,
    thought_cell,
)
from ..observer import RunObserver
from ..trajectory import Run, Step, SubCall

__all__ = ["CellEmitter"]

Send = Callable[[dict[str, Any]], None]


class CellEmitter(RunObserver):
    """One per root run: knows where its cells go (after the query cell, in trajectory order)."""

    def __init__(self, send: Send, *, anchor: str | None, query_id: str,
                 status_of: Callable[[], dict[str, Any]], runs: dict[str, Run],
                 on_step_done: Callable[[Run, Step], None] | None = None,
                 io_barrier: Callable[[threading.Event], None] | None = None) -> None:
        self.send_now = send
        self.anchor = anchor
        self.query_id = query_id
        self.status_of = status_of
        self.runs = runs
        self.on_step_done = on_step_done
        self.io_barrier = io_barrier
        self.last_id: str = query_id
        self.inserted: set[str] = set()
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._calls_lock = threading.Lock()  # a call's cell: snapshot and enqueue as one
        self._live = False
        self._thread: threading.Thread | None = None
        self.sent = 0

    # -- plumbing ------------------------------------------------------------------------------
    def start(self) -> None:
        self._live = True
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="rlm-cells", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Flush everything queued, then stop the sender."""
        self._live = False
        self._q.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _drain(self) -> None:
        last_status = 0.0
        while True:
            try:
                msg = self._q.get(timeout=0.02)
            except queue.Empty:
                msg = ...
            if msg is None:
                self._flush_rest()
                return
            if isinstance(msg, threading.Event):
                self._release(msg)
            elif msg is not ...:
                self._send(msg)
            now = time.monotonic()
            if self._live and now - last_status >= 0.25:
                last_status = now
                self._send(self.status_of())

    def _flush_rest(self) -> None:
        while True:
            try:
                msg = self._q.get_nowait()
            except queue.Empty:
                return
            if isinstance(msg, threading.Event):
                self._release(msg)
            elif msg is not None:
                self._send(msg)

    def _release(self, done: threading.Event) -> None:
        if self.io_barrier is not None:
            self.io_barrier(done)  # sets it once IOPub has handed everything before it to zmq
        else:
            done.set()

    def flush(self, timeout: float = 2.0) -> None:
        """Block until every message queued so far is on its way to the front-ends."""
        if self._thread is None:
            return
        done = threading.Event()
        self._q.put(done)
        done.wait(timeout)

    def _send(self, msg: dict[str, Any]) -> None:
        try:
            self.send_now(msg)
            self.sent += 1
        except Exception:  # noqa: BLE001 - a front-end glitch must never break the run
            pass

    def emit(self, msg: dict[str, Any]) -> None:
        self._q.put(msg)

    def _insert(self, run: Run, cell: dict[str, Any], kind: str) -> None:
        with self._lock:
            after = self.last_id
            self.last_id = cell["id"]
            self.inserted.add(cell["id"])
        self.emit(cells.insert_msg(run.run_id, cell, anchor=self.anchor, after=after, kind=kind))

    def _upsert(self, run: Run, cell: dict[str, Any], kind: str, **patch: Any) -> None:
        if cell["id"] in self.inserted:
            self.emit(cells.update_msg(run.run_id, cell["id"], **patch))
        else:
            self._insert(run, cell, kind)

    # -- observer hooks ------------------------------------------------------------------------
    def run_started(self, run: Run) -> None:
        if run.depth == 0:
            self.emit(cells.status_msg(run.run_id, self.status_of()["status"], self.anchor))

    def step_proposed(self, run: Run, step: Step) -> None:
        if run.depth:
            return
        if step.thought or step.code is None:
            self._insert(run, thought_cell(run, step, record=step.code is None), "thought")
        if step.code is not None:
            self._insert(run, step_cell(run, step), "step")

    def step_started(self, run: Run, step: Step) -> None:
        # The step's code may take the kernel down (os._exit, OOM): its proposal, already paid
        # for, must be out of this process first.
        if run.depth == 0:
            self.flush()

    def step_finished(self, run: Run, step: Step) -> None:
        if run.depth:
            return
        if step.code is not None:
            cell = step_cell(run, step)
            self._upsert(run, cell, "step", outputs=cell["outputs"],
                         execution_count=cell["execution_count"], metadata=cell["metadata"])
        else:
            cell = thought_cell(run, step, record=True)
            self._upsert(run, cell, "thought", metadata=cell["metadata"], source=cell["source"])
        if self.on_step_done is not None:
            self.on_step_done(run, step)

    def subcall_started(self, run: Run, call: SubCall) -> None:
        if run.depth:
            return
        with self._calls_lock:
            if call.call_id not in self.inserted:  # else it finished first and is in already
                self._insert(run, llm_cell(run, call), "llm")

    def subcall_finished(self, run: Run, call: SubCall) -> None:
        if run.depth:
            return
        with self._calls_lock:
            cell = llm_cell(run, call)
            if call.call_id not in self.inserted:
                self._insert(run, cell, "llm")  # finished before it was announced
            else:
                self.emit(cells.update_msg(run.run_id, call.call_id, outputs=cell["outputs"],
                                           metadata=cell["metadata"]))

    def run_finished(self, run: Run) -> None:
        if run.depth:
            # A child run ran in its own namespace: its record is inserted whole when it ends.
            for cell in child_run_cells(run, self.runs):
                self._insert(run, cell, "child")
            return
        if run.status != "paused":
            self._insert(run, final_cell(run), "final")
        # The query cell's header (status, answer, usage) is the run's summary: keep it current.
        self.emit(cells.update_msg(run.run_id, self.query_id,
                                   metadata=query_cell(run, "", self.query_id)["metadata"]))
        self.emit(cells.status_msg(run.run_id, self.status_of()["status"], self.anchor))
        self.emit(cells.finish_msg(run.run_id, run.status, run.answer, run.stop_reason,
                                   self.anchor))
