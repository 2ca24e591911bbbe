"""The states of runs, steps and sub-calls, and the moves between them, in one place.

Why enums: the same states are compared in the engine, the kernel, the notebook writer, the run
widget and the front-end (``widgets/src/protocol.ts`` mirrors them as literal unions); a typo in a
bare string silently never matches. They are ``StrEnum``s, so records serialise to the same JSON
strings as before and old notebooks load unchanged.

Why one table of moves: each record changes state through :func:`advance`, which refuses a move
the design does not allow (e.g. a finished step going back to ``proposed``), so a new code path
that forgets a rule fails in tests instead of writing an inconsistent trajectory.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

__all__ = ["RunState", "StepState", "CallState", "StateError", "advance", "ENDED"]


class RunState(StrEnum):
    """A run (one query at one depth)."""

    RUNNING = "running"
    PAUSED = "paused"  # waiting for the human: %rlm continue / step resumes it
    FINAL = "final"  # ended with an answer
    STOPPED = "stopped"  # ended by a budget, a Stop or an interrupt
    ERROR = "error"  # ended by an error (model call failed, replay miss, ...)

    @property
    def ended(self) -> bool:
        return self in ENDED


class StepState(StrEnum):
    """One root step."""

    PROPOSED = "proposed"  # the model wrote it; its code has not run (step mode shows it here)
    RUNNING = "running"
    DONE = "done"
    STALE = "stale"  # an earlier step was edited: this one no longer follows from the record


class CallState(StrEnum):
    """One sub-call (``llm()`` or one prompt of ``llm_batch``)."""

    QUEUED = "queued"  # made, waiting for a concurrency slot
    INFLIGHT = "inflight"  # its request is on the wire
    OK = "ok"
    ERROR = "error"
    CANCELLED = "cancelled"  # stopped by the human or the run's end before it answered

    @property
    def settled(self) -> bool:
        return self in (CallState.OK, CallState.ERROR, CallState.CANCELLED)


ENDED = frozenset({RunState.FINAL, RunState.STOPPED, RunState.ERROR})

_MOVES: dict[type, dict[StrEnum, frozenset[StrEnum]]] = {
    RunState: {
        RunState.RUNNING: frozenset({RunState.PAUSED, RunState.FINAL, RunState.STOPPED,
                                     RunState.ERROR}),
        # A paused run is continued, stepped or stopped (%rlm stop).
        RunState.PAUSED: frozenset({RunState.RUNNING, RunState.STOPPED}),
        # An ended run goes on when the human continues it (after an edit, a Stop, or an error
        # they fixed), or pauses when one of its steps is edited.
        RunState.FINAL: frozenset({RunState.RUNNING, RunState.PAUSED}),
        RunState.STOPPED: frozenset({RunState.RUNNING, RunState.PAUSED}),
        RunState.ERROR: frozenset({RunState.RUNNING, RunState.PAUSED}),
    },
    StepState: {
        StepState.PROPOSED: frozenset({StepState.RUNNING, StepState.DONE, StepState.STALE}),
        StepState.RUNNING: frozenset({StepState.DONE}),
        # A human re-runs a done step (it stays done) or edits an earlier one (it goes stale).
        StepState.DONE: frozenset({StepState.RUNNING, StepState.STALE}),
        StepState.STALE: frozenset(),
    },
    CallState: {
        CallState.QUEUED: frozenset({CallState.INFLIGHT, CallState.OK, CallState.ERROR,
                                     CallState.CANCELLED}),
        CallState.INFLIGHT: frozenset({CallState.OK, CallState.ERROR, CallState.CANCELLED}),
        # A human re-sends a recorded sub-call (%%llm --call ID).
        CallState.OK: frozenset({CallState.INFLIGHT}),
        CallState.ERROR: frozenset({CallState.INFLIGHT}),
        CallState.CANCELLED: frozenset({CallState.INFLIGHT}),
    },
}


class StateError(RuntimeError):
    """A record was asked to make a move the state machine does not allow (a bug)."""


S = TypeVar("S", RunState, StepState, CallState)


def advance(current: S, new: S) -> S:
    """Return ``new`` if ``current -> new`` is an allowed move (staying put always is)."""
    if new == current or new in _MOVES[type(current)][current]:
        return new
    raise StateError(f"{type(current).__name__} cannot move from {current!s} to {new!s}")
