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
    def run_started(self, run: Run) -> None: ...

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

    def _each(self, hook: str, *args: object) -> None:
        for obs in self.observers:
            try:
                getattr(obs, hook)(*args)
            except Exception:  # noqa: BLE001
                logging.getLogger("rlm_kernel").exception("rlm: a run view failed in %s", hook)

    def run_started(self, run: Run) -> None:
        self._each("run_started", run)

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
