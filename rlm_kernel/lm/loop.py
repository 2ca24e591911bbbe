"""A dedicated asyncio loop on a daemon thread.

Why: a sync ``llm()`` inside a cell must block only that cell, while the kernel's own loop and I/O
keep running; and ``llm_batch`` needs a loop to run its calls concurrently even when the caller is
plain synchronous code. Waiting is interrupt-aware: a KeyboardInterrupt in the waiting thread cancels
the work on the loop instead of leaving it running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["BackgroundLoop"]

T = TypeVar("T")


class BackgroundLoop:
    def __init__(self, name: str = "rlm-lm-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    @property
    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], poll: float = 0.1) -> T:
        """Run ``coro`` on the loop and wait; Ctrl-C / kernel interrupt cancels it promptly."""
        if self.in_loop_thread:
            raise RuntimeError("BackgroundLoop.run() called from its own loop thread (would deadlock)")
        return self.wait(self.submit(coro), poll)

    def wait(self, fut: concurrent.futures.Future[T], poll: float = 0.1) -> T:
        """Wait for work already submitted; Ctrl-C / kernel interrupt cancels it promptly."""
        try:
            while True:
                try:
                    return fut.result(timeout=poll)
                except concurrent.futures.TimeoutError:
                    continue
        except BaseException:
            fut.cancel()
            raise

    async def wrap(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` (run on this loop) from another event loop; cancelling cancels it."""
        fut = asyncio.wrap_future(self.submit(coro))
        try:
            return await fut
        except asyncio.CancelledError:
            fut.cancel()
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
