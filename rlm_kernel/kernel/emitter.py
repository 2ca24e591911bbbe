"""Turning a run's events into ``rlm.cells`` messages, off the hot path, in batches.

Observer hooks only build the cell and enqueue (sub-call hooks run on the model client's loop
thread, where a slow ``comm.send`` would delay the next request). One sender thread drains the
queue in order every ``FLUSH_S`` and sends what it found as one ``batch`` message, folding an
``update`` into a queued ``insert`` of the same cell and successive updates of one cell into one:
a sub-call that starts and ends within a flush costs one inner message, and a 5,000-call batch is a
few hundred comm messages instead of 10,000 (IOPub and jupyter_server's rate limit drop messages
under such floods). A throttled ``status`` rides along while the run is live.

The emitter's one dependency is its :class:`CellSink` (the kernel's front-end channel): ``send`` a
message, and ``barrier`` to learn when everything sent so far has left the process.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Protocol

from .. import cells
from ..notebook import (
    child_head_cell,
    compaction_cell,
    final_cell,
    has_thought_cell,
    llm_cell,
    query_cell,
    step_cell,
    streaming_cell,
    thought_cell,
)
from ..observer import RunObserver
from ..states import RunState
from ..trajectory import Run, Step, SubCall

__all__ = ["CellEmitter", "CellSink", "FLUSH_S", "STATUS_S"]

#: How often the sender thread sends what was queued (a live view stays live at this rate).
FLUSH_S = 0.02
#: Least time between two status messages while a run is live.
STATUS_S = 0.25


class CellSink(Protocol):
    def send(self, msg: dict[str, Any]) -> None: ...

    def barrier(self, done: threading.Event) -> None: ...


class CellEmitter(RunObserver):
    """One per drive of a root run: knows where its cells go (after the query cell, in order).

    Sub-RLMs (``rlm()``, ``rlm_batch()``) get live cells too, grouped under the parent step
    that started them: a head cell, then their thought, step (collapsed), sub-call and final
    cells. Children of one ``rlm_batch`` run at the same time, so each run keeps the id of the
    last cell of its region (its own cells and its descendants'): a cell goes after its run's
    region, and becomes the end of every enclosing region that ended where it was put.
    """

    wants_stream = True

    def __init__(self, sink: CellSink, root: Run, runs: dict[str, Run], *, anchor: str | None,
                 query_id: str, known: list[str] | None = None) -> None:
        """``known``: ids of the run's cells that front-ends already have, in order (a resumed
        run's); new cells go after the last of them, known ones are updated in place."""
        self.sink = sink
        self.root = root
        self.runs = runs
        self.anchor = anchor
        self.query_id = query_id
        self.tails: dict[str, str] = {root.run_id: known[-1] if known else query_id}
        self.inserted: set[str] = set(known or ())
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._live = False
        self._thread: threading.Thread | None = None
        self.sent = 0  # comm messages sent (tests and benchmarks read it)

    # -- plumbing ------------------------------------------------------------------------------
    def start(self) -> None:
        self._live = True
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="rlm-cells", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Flush everything queued, then stop the sender."""
        self._live = False
        self._q.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def flush(self, timeout: float = 2.0) -> None:
        """Block until every message queued so far has left this process (IOPub included)."""
        if self._thread is None:
            return
        done = threading.Event()
        self._q.put(done)
        done.wait(timeout)

    def emit(self, msg: dict[str, Any]) -> None:
        self._q.put(msg)

    def _drain(self) -> None:
        last_status = 0.0
        stopping = False
        while not stopping:
            pending: list[dict[str, Any]] = []
            barriers: list[threading.Event] = []
            try:
                item = self._q.get(timeout=FLUSH_S)
                while True:
                    if item is None:
                        stopping = True
                    elif isinstance(item, threading.Event):
                        barriers.append(item)
                    else:
                        pending.append(item)
                    item = self._q.get_nowait()
            except queue.Empty:
                pass
            now = time.monotonic()
            if self._live and now - last_status >= STATUS_S:
                last_status = now
                pending.append(cells.status_msg(self.root.run_id,
                                                cells.run_status(self.root, self.runs),
                                                self.anchor))
            if pending:
                self._send(_coalesce(pending))
            for done in barriers:
                self.sink.barrier(done)

    def _send(self, msgs: list[dict[str, Any]]) -> None:
        try:
            self.sink.send(msgs[0] if len(msgs) == 1 else cells.batch_msg(msgs))
            self.sent += 1
        except Exception:  # noqa: BLE001 - a front-end glitch must never break the run
            pass

    @property
    def last_id(self) -> str:
        return self.tails[self.root.run_id]

    def _lineage(self, run: Run) -> list[str]:
        """``run`` and its ancestors up to the root, nearest first."""
        out = [run.run_id]
        while run.parent and run.parent in self.runs and len(out) < 100:
            run = self.runs[run.parent]
            out.append(run.run_id)
        return out

    def _insert(self, run: Run, cell: dict[str, Any], kind: str, region: Run | None = None) -> None:
        """Put ``cell`` after the region of ``region`` (default: ``run``'s own)."""
        owner = region or run
        with self._lock:
            lineage = self._lineage(owner)
            after = next((self.tails[r] for r in lineage if r in self.tails), self.last_id)
            for rid in lineage:
                if self.tails.get(rid, after) == after:
                    self.tails[rid] = cell["id"]
            if run.run_id != owner.run_id:
                self.tails[run.run_id] = cell["id"]
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
            self.emit(cells.status_msg(run.run_id, cells.run_status(run, self.runs), self.anchor))
            return
        parent = self.runs.get(run.parent or "")
        head = child_head_cell(run)
        if head["id"] in self.inserted:
            self.emit(cells.update_msg(run.run_id, head["id"], metadata=head["metadata"]))
        elif parent is not None:
            self._insert(run, head, "child", region=parent)

    def history_compacted(self, run: Run, n: int, note: str) -> None:
        if run.depth:
            return
        cell = compaction_cell(run, Step(n=n, compaction=note))
        self._upsert(run, cell, "compaction", source=cell["source"])

    def step_streaming(self, run: Run, n: int, text: str, ended: str | None = None) -> None:
        if run.depth:
            return
        cell = streaming_cell(run, n, text, ended)
        self._upsert(run, cell, "thought", source=cell["source"])

    def step_proposed(self, run: Run, step: Step) -> None:
        if step.compaction:
            cell = compaction_cell(run, step)
            self._upsert(run, cell, "compaction", source=cell["source"])
        if has_thought_cell(step):
            cell = thought_cell(run, step, record=step.code is None)
            self._upsert(run, cell, "thought", source=cell["source"], metadata=cell["metadata"])
        if step.code is not None:
            self._insert(run, step_cell(run, step), "step")

    def step_started(self, run: Run, step: Step) -> None:
        # The step's code may take the kernel down (os._exit, OOM): its proposal, already paid
        # for, must be out of this process first.
        if run.depth == 0:
            self.flush()

    def step_finished(self, run: Run, step: Step) -> None:
        if step.code is not None:
            cell = step_cell(run, step)
            self._upsert(run, cell, "step", outputs=cell["outputs"],
                         execution_count=cell["execution_count"], metadata=cell["metadata"])
        else:
            cell = thought_cell(run, step, record=True)
            self._upsert(run, cell, "thought", metadata=cell["metadata"], source=cell["source"])

    def subcall_started(self, run: Run, call: SubCall) -> None:
        with self._lock:
            if call.call_id in self.inserted:  # it finished first and is in already
                return
        self._insert(run, llm_cell(run, call), "llm")

    def subcall_finished(self, run: Run, call: SubCall) -> None:
        cell = llm_cell(run, call)
        with self._lock:
            known = call.call_id in self.inserted
        if not known:
            self._insert(run, cell, "llm")  # finished before it was announced
        else:
            self.emit(cells.update_msg(run.run_id, call.call_id, outputs=cell["outputs"],
                                       metadata=cell["metadata"]))

    def run_finished(self, run: Run) -> None:
        if run.depth:
            if run.status != RunState.PAUSED:
                self._upsert(run, final_cell(run), "final")
            head = child_head_cell(run)  # its header (status, answer, usage) is its summary
            self.emit(cells.update_msg(run.run_id, head["id"], metadata=head["metadata"]))
            return
        if run.status != RunState.PAUSED:
            self._insert(run, final_cell(run), "final")
        # The query cell's header (status, answer, usage) is the run's summary: keep it current.
        self.emit(cells.update_msg(run.run_id, self.query_id,
                                   metadata=query_cell(run, "", self.query_id)["metadata"]))
        self.emit(cells.status_msg(run.run_id, cells.run_status(run, self.runs), self.anchor))
        self.emit(cells.finish_msg(run.run_id, run.status, run.answer, run.stop_reason,
                                   self.anchor, best_effort=run.best_effort))


def _coalesce(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold each ``update`` into the queued ``insert`` of its cell, or into the queued update
    before it; drop all but the last ``status`` of a run. Order of the rest is kept."""
    out: list[dict[str, Any]] = []
    inserts: dict[str, dict[str, Any]] = {}
    updates: dict[str, dict[str, Any]] = {}
    last_status: dict[str, int] = {}
    for msg in msgs:
        kind = msg["type"]
        if kind == "insert":
            inserts[msg["id"]] = msg
            updates.pop(msg["id"], None)
        elif kind == "update":
            target = inserts.get(msg["id"])
            if target is not None:
                _patch_cell(target["cell"], msg["patch"])
                continue
            prior = updates.get(msg["id"])
            if prior is not None:
                _merge_patch(prior["patch"], msg["patch"])
                continue
            updates[msg["id"]] = msg
        elif kind == "status":
            if msg["run"] in last_status:
                out[last_status[msg["run"]]] = msg
                continue
            last_status[msg["run"]] = len(out)
        elif kind == "finish":
            # Anything queued after a run's end is a new drive's: do not fold across it.
            inserts.clear()
            updates.clear()
        out.append(msg)
    return out


def _patch_cell(cell: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if key == "metadata":
            cell.setdefault("metadata", {}).update(value)
        elif key != "kind":
            cell[key] = value


def _merge_patch(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if key == "metadata" and isinstance(into.get("metadata"), dict):
            into["metadata"] = {**into["metadata"], **value}
        else:
            into[key] = value
