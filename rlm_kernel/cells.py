"""The ``rlm.cells`` comm protocol: the one definition of its messages.

The kernel executes a run; front-ends mirror it. The kernel opens a comm with target ``rlm.cells``
when a run starts (and answers a front-end that opens one to it, e.g. after a reload). Every message's
``data`` is a dict with ``"v": PROTOCOL_VERSION`` and ``"type"``. The TypeScript client in
``widgets/src/protocol.ts`` mirrors this module; the headless runner and the tests use it directly.

Kernel -> front-end
    ``insert``  {run, id, anchor, after, kind, cell}: add ``cell`` (an nbformat v4 cell dict with
                ``id``, ``cell_type``, ``source``, ``metadata``; code cells also ``outputs`` and
                ``execution_count``) after the cell whose id is ``after`` (the previous cell of this
                run, or ``anchor``, the query cell). ``anchor`` is the query cell's id as the
                front-end knows it (JupyterLab's ``cellId``), or ``None`` for clients that sent none.
    ``update``  {run, id, patch}: replace the named fields of that cell (``outputs``,
                ``execution_count``, ``source``; ``metadata`` keys are merged, so a front-end's own
                keys such as ``jupyter.source_hidden`` survive). A run's first message is an
                ``update`` of its query cell (``id`` = the front-end's cell id, or ``<run>-q``
                when it sent none) with ``kind: "query"`` and the run's header in its metadata; a
                client that has no such cell (the headless runner) creates it from that.
    Ids are deterministic (``<run>-t<n>``, ``<run>-s<n>``, ``<run>-s<n>c<k>``, ...), so a replayed
    or resumed run, or a re-run step, addresses the same cells: an ``insert`` whose id already
    exists in the notebook updates that cell in place.
    ``status``  {run, anchor, status}: live counters (see :func:`status_payload`); throttled.
    ``finish``  {run, anchor, outcome, answer, reason}: the run ended; ``outcome`` is final |
                stopped | error | paused. (Not ``state``: nbclient takes any top-level ``state``
                key of a comm message for widget state.)
    ``sync``    {runs: [{run, anchor, cells, status, finished}]}: the whole trajectory so far, sent
                in reply to ``hello`` so a (re)connecting front-end catches up. ``cells`` are every
                cell of the run in order, the query cell excluded; ``finished`` is the run's
                ``finish`` message, or null while it is still running.
Front-end -> kernel
    ``hello``   {client, mirrors}: ``mirrors`` true when the client inserts the cells itself, so
                the kernel can keep the query cell's own output compact.
    ``control`` {action, run}: action is one of ``pause``, ``step``, ``continue``, ``stop``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "TARGET",
    "PROTOCOL_VERSION",
    "CONTROL_ACTIONS",
    "insert_msg",
    "update_msg",
    "status_msg",
    "finish_msg",
    "sync_msg",
    "hello_msg",
    "control_msg",
    "check",
]

TARGET = "rlm.cells"
PROTOCOL_VERSION = 1
CONTROL_ACTIONS = ("pause", "step", "continue", "stop")


def _msg(type_: str, **body: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "type": type_, **body}


def insert_msg(run: str, cell: dict[str, Any], *, anchor: str | None, after: str | None,
               kind: str) -> dict[str, Any]:
    return _msg("insert", run=run, id=cell["id"], anchor=anchor, after=after or anchor, kind=kind,
                cell=cell)


def update_msg(run: str, cell_id: str, **patch: Any) -> dict[str, Any]:
    return _msg("update", run=run, id=cell_id, patch=patch)


def status_msg(run: str, status: dict[str, Any], anchor: str | None = None) -> dict[str, Any]:
    return _msg("status", run=run, anchor=anchor, status=status)


def finish_msg(run: str, outcome: str, answer: str | None, reason: str | None,
               anchor: str | None = None) -> dict[str, Any]:
    return _msg("finish", run=run, anchor=anchor, outcome=outcome, answer=answer, reason=reason)


def sync_msg(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return _msg("sync", runs=runs)


def hello_msg(client: str, mirrors: bool) -> dict[str, Any]:
    return _msg("hello", client=client, mirrors=mirrors)


def control_msg(action: str, run: str | None = None) -> dict[str, Any]:
    if action not in CONTROL_ACTIONS:
        raise ValueError(f"unknown control action {action!r}; expected one of {CONTROL_ACTIONS}")
    return _msg("control", action=action, run=run)


def status_payload(*, state: str, step: int, max_steps: int, subcalls_done: int,
                   subcalls_inflight: int, subcalls_failed: int, tokens: int, cost_usd: float,
                   elapsed_s: float) -> dict[str, Any]:
    """The counters a front-end shows while a run is live."""
    return {
        "state": state, "step": step, "max_steps": max_steps,
        "subcalls": {"done": subcalls_done, "inflight": subcalls_inflight,
                     "failed": subcalls_failed},
        "tokens": tokens, "cost_usd": round(cost_usd, 6), "elapsed_s": round(elapsed_s, 3),
    }


def check(data: Any) -> dict[str, Any]:
    """Validate an incoming message's envelope; raise ValueError with a reason otherwise."""
    if not isinstance(data, dict):
        raise ValueError("rlm.cells message must be a JSON object")
    if data.get("v") != PROTOCOL_VERSION:
        raise ValueError(
            f"rlm.cells protocol version {data.get('v')!r} is not supported "
            f"(this kernel speaks {PROTOCOL_VERSION}); update rlm-kernel and its extension together"
        )
    if data.get("type") not in {"insert", "update", "status", "finish", "sync", "hello", "control"}:
        raise ValueError(f"unknown rlm.cells message type {data.get('type')!r}")
    return data
