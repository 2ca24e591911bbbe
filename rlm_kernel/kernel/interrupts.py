"""Routing the kernel's SIGINT while one of its own cells runs a run.

Why: a Jupyter interrupt is SIGINT. Inside a step's code (or any synchronous stretch) it must be a
KeyboardInterrupt, as in any cell; while the run awaits a model call there is no Python frame of
the run to raise into, so it must cancel the run's task instead. Either way the run is asked to
stop and every in-flight model call is cancelled at once. The handler is installed from the first
line of the kernel's own cells to their reply, so no interrupt escapes to ipykernel's handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["InterruptRouter"]


class InterruptRouter:
    def __init__(self, blocking: Callable[[], bool]) -> None:
        """``blocking()``: is the main thread inside synchronous code (a step) right now?"""
        self._blocking = blocking
        self.task: asyncio.Future[Any] | None = None  # the run being awaited, if any

    @contextlib.contextmanager
    def routed(self, stop: Callable[[], None]) -> Iterator[None]:
        """SIGINT calls ``stop()`` (ask the run to stop, cancel its calls), then raises
        KeyboardInterrupt in synchronous code or cancels the awaited run task."""
        loop = asyncio.get_running_loop()

        def on_sigint(signum: int, frame: Any) -> None:
            stop()
            task = self.task
            if task is None or self._blocking():
                raise KeyboardInterrupt
            loop.call_soon_threadsafe(task.cancel)

        old = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, old)
