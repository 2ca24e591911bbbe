"""Hooks by which a front-end follows a run as it happens.

The engine and the REPL call these; the kernel's implementation turns them into ``rlm.cells``
messages, the library's default does nothing (the :class:`~rlm_kernel.trajectory.Run` record already
holds everything). Sub-call hooks may be called from the model client's loop thread, and for a
batch ``subcall_finished`` of a fast call may come before its ``subcall_started``.
"""

from __future__ import annotations

import logging

from .trajectory import Run, Step, SubCall

__all__ = ["RunObserver", "Observers"]


class RunObserver:
    #: Whether this view shows a root reply as it streams (``step_streaming``); the engine sends
    #: the text only when some view does.
    wants_stream = False
    def run_started(self, run: Run) -> None: ...

    def history_compacted(self, run: Run, n: int, note: str) -> None:
        """Before asking for step ``n``, older steps were compacted out of the model's view;
        ``note`` says which (also recorded as the step's ``compaction``)."""

    def step_streaming(self, run: Run, n: int, text: str, ended: str | None = None) -> None:
        """The root model's reply for step ``n`` so far, while it streams (called on the model
        client's loop thread, a few times a second; ``step_proposed`` follows with the whole).
        ``ended``: the reply will not be whole ("stopped" or "failed"); this is its last text."""

    def step_proposed(self, run: Run, step: Step) -> None: ...

    def step_started(self, run: Run, step: Step) -> None: ...

    def step_finished(self, run: Run, step: Step) -> None: ...

    def subcall_started(self, run: Run, call: SubCall) -> None: ...

    def subcall_finished(self, run: Run, call: SubCall) -> None: ...

    def run_finished(self, run: Run) -> None: ...


class Observers(RunObserver):
    """Several observers as one, called in order (the kernel's cell emitter, the query cell's
    own display, the run widget). An observer that raises does not stop the others or the run:
    views must never break a run."""

    def __init__(self, *observers: RunObserver | None) -> None:
        self.observers = [o for o in observers if o is not None]
        self.wants_stream = any(o.wants_stream for o in self.observers)

    def _each(self, hook: str, *args: object) -> None:
        for obs in self.observers:
            try:
                getattr(obs, hook)(*args)
            except Exception:  # noqa: BLE001
                logging.getLogger("rlm_kernel").exception("rlm: a run view failed in %s", hook)

    def run_started(self, run: Run) -> None:
        self._each("run_started", run)

    def history_compacted(self, run: Run, n: int, note: str) -> None:
        self._each("history_compacted", run, n, note)

    def step_streaming(self, run: Run, n: int, text: str, ended: str | None = None) -> None:
        self._each("step_streaming", run, n, text, ended)

    def step_proposed(self, run: Run, step: Step) -> None:
        self._each("step_proposed", run, step)

    def step_started(self, run: Run, step: Step) -> None:
        self._each("step_started", run, step)

    def step_finished(self, run: Run, step: Step) -> None:
        self._each("step_finished", run, step)

    def subcall_started(self, run: Run, call: SubCall) -> None:
        self._each("subcall_started", run, call)

    def subcall_finished(self, run: Run, call: SubCall) -> None:
        self._each("subcall_finished", run, call)

    def run_finished(self, run: Run) -> None:
        self._each("run_finished", run)
