"""How many model calls may be in flight: a ceiling, halved when the provider says "too many".

Why not a plain semaphore: an RLM's speed is its concurrency (a 256-call batch at 64 in flight
takes a quarter of the time it takes at 16), but a provider's own concurrency or rate cap is not
known in advance, and every request over it comes back HTTP 429 to be retried after a wait. The
limit here starts at the configured ``concurrency`` and moves the way TCP's window does:
multiplicative decrease on a 429 (at most once per round: a limit's worth of answers since the
last cut, so one burst of 429s is one signal), additive increase of one after as many successes as the limit (about one round), never
above the ceiling. The calls already in flight keep their slots (the openai client retries them);
only new calls wait, and a call refused with a 429 gives its slot up and queues again before
its retry is sent (:meth:`AdaptiveLimit.requeue`). Against a server that never says 429 it behaves as the semaphore it replaces.
"""

from __future__ import annotations

import asyncio
import collections
from types import TracebackType

__all__ = ["AdaptiveLimit"]


class AdaptiveLimit:
    """An async context manager admitting at most :attr:`limit` holders at once (FIFO)."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = ceiling
        self.lowest = ceiling  # the smallest the limit has been (status and tests read it)
        self.held = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._successes = 0
        self._since_cut = ceiling  # answers since the last cut (the first 429 always cuts)

    async def __aenter__(self) -> None:
        if self.held < self.limit and not self._waiters:
            self.held += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted, then cancelled: pass the slot on
                self.held -= 1
                self._admit()
            else:
                self._waiters.remove(fut)
            raise

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.held -= 1
        self._admit()

    def _admit(self) -> None:
        while self._waiters and self.held < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.held += 1
                fut.set_result(None)

    async def requeue(self) -> None:
        """Called by a holder whose request was refused with a 429, before it is sent again: if
        the limit is now below what is held, give the slot up and wait in line for another, so
        the retry goes out when there is room instead of straight into the provider's cap."""
        if self.held <= self.limit:
            return
        self.held -= 1
        self._admit()
        try:
            await self.__aenter__()
        except asyncio.CancelledError:
            self.held += 1  # the holder's own exit gives this back
            raise

    # -- what the server said ----------------------------------------------------------------
    def rate_limited(self) -> None:
        """An HTTP 429: halve the limit, unless it was cut less than a round ago (the answers to
        calls sent before that cut say nothing about the new limit)."""
        self._since_cut += 1
        if self._since_cut < self.limit:
            return
        self._since_cut = 0
        self.limit = max(1, self.limit // 2)
        self.lowest = min(self.lowest, self.limit)
        self._successes = 0

    def succeeded(self) -> None:
        """A response that was not a 429: after ``limit`` of them, one more slot."""
        self._since_cut += 1
        if self.limit >= self.ceiling:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self.limit += 1
            self._admit()
