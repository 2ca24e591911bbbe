"""Hooks by which a front-end follows a run as it happens.

The engine and the REPL call these; the kernel's implementation turns them into ``rlm.cells``
messages, the library's default does nothing (the :class:`~rlm_kernel.trajectory.Run` record already
holds everything). Sub-call hooks may be called from the model client's loop thread, and for a
batch ``subcall_finished`` of a fast call may come before its ``subcall_started``.
"""

from __future__ import annotations

from .trajectory import Run, Step, SubCall

__all__ = ["RunObserver"]


class RunObserver:
    def run_started(self, run: Run) -> None: ...

    def step_proposed(self, run: Run, step: Step) -> None: ...

    def step_started(self, run: Run, step: Step) -> None: ...

    def step_finished(self, run: Run, step: Step) -> None: ...

    def subcall_started(self, run: Run, call: SubCall) -> None: ...

    def subcall_finished(self, run: Run, call: SubCall) -> None: ...

    def run_finished(self, run: Run) -> None: ...
