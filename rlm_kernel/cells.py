"""The ``rlm.cells`` comm protocol: the one definition of its messages (version 2).

The kernel executes a run; front-ends mirror it. The kernel opens a comm with target ``rlm.cells``
when a run starts (and answers a front-end that opens one to it, e.g. after a reload). Every message's
``data`` is a dict with ``"v": PROTOCOL_VERSION`` and ``"type"``. The TypeScript client in
``widgets/src/protocol.ts`` mirrors this module; the headless runner and the tests use it directly.
``docs/architecture.md`` shows the message sequence of a run.

Kernel -> front-end (each carries ``seq``, see below)
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
    ``finish``  {run, anchor, outcome, answer, reason}: the run ended or paused; ``outcome`` is a
                :class:`~rlm_kernel.states.RunState` other than ``running``. (Not ``state``:
                nbclient takes any top-level ``state`` key of a comm message for widget state.)
    ``batch``   {msgs}: several of the messages above in one comm message, applied in order; the
                inner messages carry neither ``v`` nor ``seq``. The kernel sends one per flush of
                its emitter, so thousands of sub-calls are a few hundred comm messages.
    ``sync``    {runs: [{run, anchor, cells, status, finished}]}: the whole trajectory so far, sent
                in reply to ``hello`` so a (re)connecting front-end catches up. ``cells`` are every
                cell of the run in order, the query cell excluded; ``finished`` is the run's
                ``finish`` message, or null while it is still running.

Sequence numbers: every kernel -> front-end message carries ``seq``, one counter per kernel process,
+1 per message sent to front-ends (every comm receives the same sequence); a ``sync`` carries the
seq of the last message whose effect it includes. IOPub drops messages a slow reader does not take
in time (and jupyter_server rate-limits IOPub), so a client that sees ``seq > last + 1`` has lost
messages: it applies what it got (every operation is an idempotent upsert or patch by cell id) and
says ``hello`` again; the kernel's ``sync`` is the authoritative whole state. ``seq <= last`` is a
duplicate.

Front-end -> kernel
    ``hello``   {client, mirrors}: ``mirrors`` true when the client inserts the cells itself, so
                the kernel can keep the query cell's own output compact.
    ``control`` {action, run, id}: action is one of ``pause``, ``step``, ``continue``, ``stop``;
                ``id`` (unique per message) lets the kernel act on it as soon as it arrives, even
                while a step blocks its main thread, and ignore the same message handled later.
"""

from __future__ import annotations

import uuid
from typing import Any

from .states import CallState, RunState
from .trajectory import Run

__all__ = [
    "TARGET",
    "PROTOCOL_VERSION",
    "CONTROL_ACTIONS",
    "KERNEL_TYPES",
    "insert_msg",
    "update_msg",
    "status_msg",
    "finish_msg",
    "batch_msg",
    "sync_msg",
    "hello_msg",
    "control_msg",
    "status_payload",
    "run_status",
    "check",
]

TARGET = "rlm.cells"
PROTOCOL_VERSION = 2
CONTROL_ACTIONS = ("pause", "step", "continue", "stop")
#: Messages the kernel sends (each with a ``seq``); ``batch`` wraps the first four.
KERNEL_TYPES = ("insert", "update", "status", "finish", "batch", "sync")
_TYPES = {*KERNEL_TYPES, "hello", "control"}


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


def finish_msg(run: str, outcome: RunState | str, answer: str | None, reason: str | None,
               anchor: str | None = None, best_effort: bool = False) -> dict[str, Any]:
    """``best_effort``: the answer was asked for once after a budget ran out."""
    return _msg("finish", run=run, anchor=anchor, outcome=str(outcome), answer=answer,
                reason=reason, best_effort=best_effort)


def batch_msg(msgs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several messages as one; their own envelope (``v``) is dropped."""
    return _msg("batch", msgs=[{k: v for k, v in m.items() if k != "v"} for m in msgs])


def sync_msg(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return _msg("sync", runs=runs)


def hello_msg(client: str, mirrors: bool) -> dict[str, Any]:
    return _msg("hello", client=client, mirrors=mirrors)


def control_msg(action: str, run: str | None = None) -> dict[str, Any]:
    """``id`` makes the message recognisable when the kernel sees it twice (it acts on control
    messages as they arrive, and ipykernel dispatches them again later)."""
    if action not in CONTROL_ACTIONS:
        raise ValueError(f"unknown control action {action!r}; expected one of {CONTROL_ACTIONS}")
    return _msg("control", action=action, run=run, id=uuid.uuid4().hex)


def status_payload(*, state: RunState | str, step: int, max_steps: int,
                   subcalls: dict[str, int], tokens: int, cost_usd: float, elapsed_s: float,
                   reason: str | None = None) -> dict[str, Any]:
    """The counters a front-end shows while a run is live.

    ``step`` is the number of the run's latest live step (numbers are never reused, so it is also
    how many root turns were taken); ``subcalls`` counts the run tree's calls by state: ``done``,
    ``queued`` (waiting for a concurrency slot), ``inflight`` (on the wire), ``failed``,
    ``cancelled``; ``elapsed_s`` is active time (time paused for the human is not counted);
    ``reason`` says in one sentence why a run is paused or ended.
    """
    return {
        "state": str(state), "step": step, "max_steps": max_steps,
        "subcalls": {k: int(subcalls.get(k, 0))
                     for k in ("done", "queued", "inflight", "failed", "cancelled")},
        "tokens": tokens, "cost_usd": round(cost_usd, 6), "elapsed_s": round(elapsed_s, 3),
        "reason": reason,
    }


_BUCKETS = {CallState.OK: "done", CallState.QUEUED: "queued", CallState.INFLIGHT: "inflight",
            CallState.ERROR: "failed", CallState.CANCELLED: "cancelled"}


def run_status(run: Run, runs: dict[str, Run]) -> dict[str, Any]:
    """The status payload of ``run`` and its rlm() children (they share its budgets).

    Safe while the model client's thread adds calls: each run's calls are copied first.
    """
    counts = dict.fromkeys(("done", "queued", "inflight", "failed", "cancelled"), 0)
    tokens, cost = 0, 0.0
    for member in run.tree(runs):
        for call in _snapshot(member):
            counts[_BUCKETS[call.status]] += 1
        tokens += member.usage.total_tokens
        cost += member.usage.cost_usd
    return status_payload(
        state=run.status, step=run.last_step_number,
        max_steps=int(run.settings.get("max_steps") or 0), subcalls=counts, tokens=tokens,
        cost_usd=cost, elapsed_s=run.elapsed_s,
        reason=run.stop_reason if run.status != RunState.RUNNING else None)


def _snapshot(run: Run) -> list[Any]:
    for _ in range(5):
        try:
            return list(run.subcalls.values())
        except RuntimeError:  # the dict grew while copied (calls are added on another thread)
            continue
    return []


def check(data: Any) -> dict[str, Any]:
    """Validate an incoming message's envelope; raise ValueError with a reason otherwise."""
    if not isinstance(data, dict):
        raise ValueError("rlm.cells message must be a JSON object")
    if data.get("v") != PROTOCOL_VERSION:
        raise ValueError(
            f"rlm.cells protocol version {data.get('v')!r} is not supported "
            f"(this kernel speaks {PROTOCOL_VERSION}); update rlm-kernel and its extension together"
        )
    if data.get("type") not in _TYPES:
        raise ValueError(f"unknown rlm.cells message type {data.get('type')!r}")
    return data
