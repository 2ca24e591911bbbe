"""Response cache keyed by (model, messages, sampling params).

Seeded from a notebook's records, it is how replay serves every call offline; a human can override
one entry (``override``) to see how the run would go with a different answer. Overrides win over
recorded responses. Thread-safe: the kernel reads it from the cell thread and the loop thread.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

__all__ = ["ResponseCache", "cache_key"]


def cache_key(model: str, messages: list[dict[str, Any]], params: dict[str, Any] | None = None) -> str:
    """A stable hash of what determines a response (not of the endpoint or the key)."""
    payload = json.dumps(
        {"model": model, "messages": messages, "params": params or {}},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class ResponseCache:
    def __init__(self) -> None:
        self._entries: dict[str, str] = {}
        self._overrides: dict[str, str] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> str | None:
        with self._lock:
            value = self._overrides.get(key, self._entries.get(key))
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
            return value

    def put(self, key: str, response: str) -> None:
        with self._lock:
            self._entries[key] = response

    def seed(self, entries: dict[str, str]) -> None:
        with self._lock:
            self._entries.update(entries)

    def override(self, key: str, response: str) -> None:
        with self._lock:
            self._overrides[key] = response

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._overrides or key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(set(self._entries) | set(self._overrides))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._overrides.clear()
