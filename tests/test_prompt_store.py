"""The session's store of full sub-call prompts keeps the newest within its character budget."""

from __future__ import annotations

from rlm_kernel.prompt_store import PromptStore


def test_newest_prompts_are_kept_within_the_budget() -> None:
    limit = [10]
    store = PromptStore(lambda: limit[0])
    store["a"] = "1234"
    store["b"] = "5678"
    assert store.get("a") == "1234" and store.chars == 8
    store["c"] = "90ab"  # 12 > 10: the oldest goes
    assert "a" not in store and store["b"] == "5678" and store.get("c") == "90ab"
    assert store.chars == 8 and len(store) == 2
    store["b"] = "xy"  # re-recorded (an edited %%llm cell): replaced, now the newest
    store["d"] = "zzzzzz"
    assert store.get("c") is None and store.get("b") == "xy" and store.chars == 8
    store["huge"] = "h" * 11  # longer than the whole budget: not kept, nothing else lost
    assert store.get("huge") is None and len(store) == 2
    assert store.get(None) is None


def test_a_lower_limit_applies_at_once() -> None:
    limit = [100]
    store = PromptStore(lambda: limit[0])
    for i in range(5):
        store[f"c{i}"] = "x" * 10
    limit[0] = 25
    assert store.get("c4") == "x" * 10 and store.get("c2") is None and store.chars == 20
    limit[0] = 0
    assert store.get("c4") is None and store.chars == 0 and len(store) == 0
