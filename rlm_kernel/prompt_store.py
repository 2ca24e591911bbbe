"""Full sub-call prompts kept for this session, within a character budget.

Why: a notebook keeps a long prompt only as a preview and a hash (``record_prompt_chars``), so an
unedited ``%%llm --call ID`` cell can re-send the exact original only while the kernel still holds
it. Holding every prompt forever would keep a second copy of a huge context alive for the whole
session (prompts built from slices of it add up to all of it, once per query); so the store keeps
the newest prompts up to ``limit`` characters and forgets the oldest. A forgotten prompt is
reported by ``%%llm`` with what to do instead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

__all__ = ["PromptStore"]


class PromptStore:
    """call id -> prompt, newest kept first, at most ``limit()`` characters in all.

    ``limit`` is read at each access, so ``%rlm config keep_prompt_chars=...`` applies at once.
    A prompt longer than the whole budget is not kept.
    """

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self._items: OrderedDict[str, str] = OrderedDict()
        self.chars = 0

    def __setitem__(self, call_id: str, prompt: str) -> None:
        self.pop(call_id)
        if len(prompt) <= self._budget():
            self._items[call_id] = prompt
            self.chars += len(prompt)
        self._trim()

    def __getitem__(self, call_id: str) -> str:
        return self._live()[call_id]

    def get(self, call_id: str | None) -> str | None:
        return self._live().get(call_id) if call_id is not None else None

    def pop(self, call_id: str) -> str | None:
        old = self._items.pop(call_id, None)
        if old is not None:
            self.chars -= len(old)
        return old

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._live()

    def __len__(self) -> int:
        return len(self._live())

    def _budget(self) -> int:
        return max(0, int(self._limit()))

    def _trim(self) -> None:
        limit = self._budget()
        while self.chars > limit:
            _, old = self._items.popitem(last=False)
            self.chars -= len(old)

    def _live(self) -> OrderedDict[str, str]:
        """The items under the current limit: every read goes through here."""
        self._trim()
        return self._items
