"""Exact usage per model and per depth, and USD cost from a user-supplied price table.

Usage is what the provider reported for answered calls. Failed attempts that the client retried
(429/5xx) report no usage and are counted separately as ``retries`` (HTTP attempts beyond the first),
so a run's bill is never under-stated by what the server told us; a cache hit costs nothing.
"""

from __future__ import annotations

import threading
from typing import Any

from ..trajectory import Usage

__all__ = ["UsageLedger", "price_of"]


def price_of(prices: dict[str, Any], model: str, prompt: int, completion: int, cached: int) -> float:
    """USD for one call; prices are per 1M tokens; cached prompt tokens at the cached rate if given."""
    table = prices.get(model)
    if not table:
        return 0.0
    p = float(table.get("prompt", 0.0))
    c = float(table.get("completion", 0.0))
    k = float(table.get("cached", p))
    return ((prompt - cached) * p + cached * k + completion * c) / 1_000_000


class UsageLedger:
    def __init__(self, prices: dict[str, Any] | None = None) -> None:
        self.prices = dict(prices or {})
        self._lock = threading.Lock()
        self.by_model: dict[str, Usage] = {}
        self.by_depth: dict[int, Usage] = {}
        self.total = Usage()
        self.http_attempts = 0
        self.failed_calls = 0
        self.cache_hits = 0

    def usage_for(self, model: str, prompt: int, completion: int, cached: int,
                  prices: dict[str, Any] | None = None) -> Usage:
        """One answered call's usage, priced by ``prices`` (the calling client's current table;
        this ledger's own when not given)."""
        table = self.prices if prices is None else prices
        return Usage(prompt, completion, cached, 1, price_of(table, model, prompt, completion, cached))

    def record(self, model: str, depth: int, usage: Usage) -> None:
        with self._lock:
            self.by_model.setdefault(model, Usage()).add(usage)
            self.by_depth.setdefault(depth, Usage()).add(usage)
            self.total.add(usage)

    def note_attempt(self) -> None:
        with self._lock:
            self.http_attempts += 1

    def note_failure(self) -> None:
        with self._lock:
            self.failed_calls += 1

    def note_cache_hit(self) -> None:
        with self._lock:
            self.cache_hits += 1

    @property
    def retries(self) -> int:
        """HTTP attempts beyond one per answered or failed call."""
        return max(0, self.http_attempts - self.total.requests - self.failed_calls)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": self.total.to_dict(),
                "by_model": {m: u.to_dict() for m, u in self.by_model.items()},
                "by_depth": {str(d): u.to_dict() for d, u in self.by_depth.items()},
                "http_attempts": self.http_attempts,
                "failed_calls": self.failed_calls,
                "cache_hits": self.cache_hits,
            }
