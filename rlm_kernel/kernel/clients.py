"""The kernel's model clients: one per distinct set of client settings, sharing what a session shares.

Why a pool: a ``%%rlm --concurrency 64`` run and a later run at 16 need different clients (limits
are per client), yet every client of the session must share one response cache (a human's
``%%llm`` re-run, replay and resume read it), one usage ledger (``%rlm status``) and one background
event loop. Clients are keyed by :meth:`RLMConfig.client_key`, which every setting tagged
``client`` enters by construction: changing any of them (``%rlm config prices=...``) gives the
next run a client with the new value.
"""

from __future__ import annotations

import contextlib

from ..config import RLMConfig
from ..connect import open_client
from ..lm import BackgroundLoop, LMClient, ResponseCache, UsageLedger

__all__ = ["ClientPool"]


class ClientPool:
    def __init__(self) -> None:
        self.loop = BackgroundLoop()
        self.cache = ResponseCache()
        self.ledger = UsageLedger()
        self.cache_only = False  # replay: every call must come from the record
        self._clients: dict[tuple[object, ...], LMClient] = {}

    def client_for(self, cfg: RLMConfig) -> LMClient:
        key = (*cfg.client_key(), self.cache_only)
        client = self._clients.get(key)
        if client is None:
            client = open_client(cfg, cache=self.cache, ledger=self.ledger, loop=self.loop,
                                 cache_only=self.cache_only)
            self._clients[key] = client
        client.config = cfg  # per-run settings (models, budgets) that do not make a client
        return client

    def stop_all(self) -> None:
        """Refuse new calls and cancel every call in flight, on every client (thread-safe)."""
        for client in list(self._clients.values()):
            client.stop()

    def resume_all(self) -> None:
        for client in list(self._clients.values()):
            client.resume()

    def close(self) -> None:
        for client in list(self._clients.values()):
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()
