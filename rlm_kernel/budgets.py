"""Budgets of one run tree (a root run and its rlm() children share them).

Each check raises the matching :class:`~rlm_kernel.errors.BudgetExceeded` with a one-line reason.
The first one raised is remembered (``exceeded``), so model code that swallows the exception with a
bare ``except`` still cannot keep a run going past its budget.
"""

from __future__ import annotations

import threading
import time

from .config import RLMConfig
from .errors import (
    BudgetExceeded,
    CostBudgetExceeded,
    StepBudgetExceeded,
    SubcallBudgetExceeded,
    TokenBudgetExceeded,
    WallTimeExceeded,
)
from .lm.usage import UsageLedger
from .trajectory import Usage

__all__ = ["Budget"]


class Budget:
    def __init__(self, config: RLMConfig, ledger: UsageLedger) -> None:
        self.config = config
        self.ledger = ledger
        self.started = time.monotonic()
        self._base = Usage()
        self._base.add(ledger.total)
        self.subcalls = 0
        self.exceeded: BudgetExceeded | None = None
        self._lock = threading.Lock()

    def restart_clock(self) -> None:
        """A resumed run gets its wall-time budget afresh (the human was thinking, not the model)."""
        self.started = time.monotonic()

    def spent(self) -> Usage:
        now = self.ledger.total
        return Usage(
            now.prompt_tokens - self._base.prompt_tokens,
            now.completion_tokens - self._base.completion_tokens,
            now.cached_tokens - self._base.cached_tokens,
            now.requests - self._base.requests,
            now.cost_usd - self._base.cost_usd,
        )

    def _fail(self, exc: BudgetExceeded) -> BudgetExceeded:
        with self._lock:
            if self.exceeded is None:
                self.exceeded = exc
        return exc

    def charge_subcalls(self, n: int) -> None:
        limit = self.config.max_subcalls
        with self._lock:
            if limit and self.subcalls + n > limit:
                over = True
            else:
                over = False
                self.subcalls += n
        if over:
            raise self._fail(SubcallBudgetExceeded(
                f"sub-call budget exhausted: {self.subcalls} made, {n} more asked, max_subcalls={limit}"
            ))

    def check_spend(self) -> None:
        spent = self.spent()
        if self.config.max_tokens and spent.total_tokens >= self.config.max_tokens:
            raise self._fail(TokenBudgetExceeded(
                f"token budget exhausted: {spent.total_tokens:,} tokens used, "
                f"max_tokens={self.config.max_tokens:,}"
            ))
        if self.config.max_cost and spent.cost_usd >= self.config.max_cost:
            raise self._fail(CostBudgetExceeded(
                f"cost budget exhausted: ${spent.cost_usd:.4f} spent, max_cost=${self.config.max_cost:g}"
            ))

    def remaining_time(self) -> float | None:
        if not self.config.max_wall_time:
            return None
        return self.config.max_wall_time - (time.monotonic() - self.started)

    def check_wall(self) -> None:
        left = self.remaining_time()
        if left is not None and left <= 0:
            raise self._fail(WallTimeExceeded(
                f"wall-time budget exhausted: {self.config.max_wall_time:g} s "
                "(max_wall_time)"
            ))

    def check_steps(self, steps_done: int) -> None:
        # Per run, not per tree: a child that runs out of steps must not stop its parent.
        if steps_done >= self.config.max_steps:
            raise StepBudgetExceeded(
                f"step budget exhausted: {steps_done} steps without FINAL (max_steps="
                f"{self.config.max_steps})"
            )

    def check_sending(self) -> None:
        """Just before a queued call is sent: time and spend. (Its sub-call count was charged when
        it was made, so a sub-call limit reached since then does not hold it back.)"""
        self.check_wall()
        self.check_spend()

    def check_all(self) -> None:
        if self.exceeded is not None:
            raise self.exceeded
        self.check_sending()
