"""The kernel's model clients: one per distinct set of client settings, sharing what a session shares.

Why a pool: a ``%%rlm --concurrency 64`` run and a later run at 16 need different clients (limits
are per client), yet every client of the session must share one response cache (a human's
``%%llm`` re-run, replay and resume read it), one usage ledger (``%rlm status``) and one background
event loop. Clients are keyed by :meth:`RLMConfig.client_key`, which every setting tagged
``client`` enters by construction: changing any of them (``%rlm config prices=...``) gives the
next run a client with the new value.

In the sandboxed kernel a :class:`EndpointGate` stands between the settings and the clients: the
kernel may reach only its forwarder (docs/sandbox.md), so the gate points every client there and
refuses to move the session to another endpoint.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

from ..config import RLMConfig
from ..connect import open_client
from ..lm import BackgroundLoop, LMClient, ResponseCache, UsageLedger

__all__ = ["ClientPool", "EndpointGate"]


class EndpointGate(Protocol):
    """Where the session's model calls may go (the sandboxed kernel has one)."""

    def admit(self, changes: dict[str, Any]) -> dict[str, Any]:
        """``%rlm config`` changes as they may apply; raises ConfigError for a refused one."""
        ...

    def route(self, cfg: RLMConfig) -> RLMConfig:
        """The settings a client for ``cfg`` is opened with."""
        ...


class ClientPool:
    def __init__(self) -> None:
        self.loop = BackgroundLoop()
        self.cache = ResponseCache()
        self.ledger = UsageLedger()
        self.cache_only = False  # replay: every call must come from the record
        self.gate: EndpointGate | None = None
        self._clients: dict[tuple[object, ...], LMClient] = {}

    def admit(self, changes: dict[str, Any]) -> dict[str, Any]:
        return self.gate.admit(changes) if self.gate is not None else changes

    def client_for(self, cfg: RLMConfig) -> LMClient:
        key = (*cfg.client_key(), self.cache_only)
        client = self._clients.get(key)
        if client is None:
            opened = self.gate.route(cfg) if self.gate is not None else cfg
            client = open_client(opened, cache=self.cache, ledger=self.ledger, loop=self.loop,
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
