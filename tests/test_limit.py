"""AdaptiveLimit: FIFO admission, a halving per burst of 429s, one more slot per round of
successes, a cancelled waiter never leaks a slot."""

from __future__ import annotations

import asyncio

from rlm_kernel.lm.limit import AdaptiveLimit


async def _hold(limit: AdaptiveLimit, order: list[int], i: int, gate: asyncio.Event) -> None:
    async with limit:
        order.append(i)
        await gate.wait()


def test_admits_at_most_the_limit_in_arrival_order() -> None:
    async def main() -> None:
        limit, order, gate = AdaptiveLimit(3), [], asyncio.Event()
        tasks = [asyncio.create_task(_hold(limit, order, i, gate)) for i in range(7)]
        await asyncio.sleep(0)
        assert order == [0, 1, 2] and limit.held == 3
        gate.set()
        await asyncio.gather(*tasks)
        assert order == list(range(7)) and limit.held == 0

    asyncio.run(main())


def test_a_burst_of_429s_halves_the_limit_once_and_successes_win_it_back() -> None:
    limit = AdaptiveLimit(64)
    for _ in range(32):  # a cut, then the answers to calls sent before it: one signal
        limit.rate_limited()
    assert limit.limit == 32 == limit.lowest
    limit.rate_limited()  # a round (32 answers) later: a new signal
    assert limit.limit == 16
    for _ in range(15):
        limit.succeeded()
    assert limit.limit == 16
    limit.succeeded()
    assert limit.limit == 17  # a round of successes: one more slot
    for _ in range(10_000):
        limit.succeeded()
    assert limit.limit == 64 == limit.ceiling and limit.lowest == 16  # never above the ceiling


def test_raising_the_limit_admits_a_waiter_and_a_cancelled_waiter_leaks_nothing() -> None:
    async def main() -> None:
        limit, order, gate = AdaptiveLimit(2), [], asyncio.Event()
        limit.rate_limited()  # limit 1
        first = asyncio.create_task(_hold(limit, order, 0, gate))
        second = asyncio.create_task(_hold(limit, order, 1, gate))
        third = asyncio.create_task(_hold(limit, order, 2, gate))
        await asyncio.sleep(0)
        assert order == [0]
        second.cancel()  # gives up while waiting
        await asyncio.sleep(0)
        limit.succeeded()  # a round of one success at limit 1: the limit is 2 again
        await asyncio.sleep(0)
        assert order == [0, 2] and limit.held == 2
        gate.set()
        await asyncio.gather(first, third)
        assert limit.held == 0 and not limit._waiters

    asyncio.run(main())


def test_a_waiter_cancelled_after_it_was_granted_passes_its_slot_on() -> None:
    async def main() -> None:
        limit, order, gate = AdaptiveLimit(1), [], asyncio.Event()
        gate.set()
        await limit.__aenter__()
        second = asyncio.create_task(_hold(limit, order, 1, gate))
        third = asyncio.create_task(_hold(limit, order, 2, gate))
        await asyncio.sleep(0)
        await limit.__aexit__(None, None, None)  # grants the slot to `second`...
        second.cancel()  # ...which is cancelled before it runs
        await asyncio.gather(second, return_exceptions=True)
        await third
        assert order == [2] and limit.held == 0

    asyncio.run(main())


def test_a_refused_holder_queues_again_behind_the_waiters() -> None:
    async def main() -> None:
        limit, order, gate = AdaptiveLimit(2), [], asyncio.Event()
        await limit.__aenter__()
        await limit.__aenter__()  # two held, as two calls in flight
        waiter = asyncio.create_task(_hold(limit, order, 1, gate))
        await asyncio.sleep(0)
        limit.rate_limited()  # limit 1, two held
        requeued = asyncio.create_task(limit.requeue())
        await asyncio.sleep(0)
        assert not requeued.done() and order == [] and limit.held == 1
        await limit.__aexit__(None, None, None)  # the other call ends: the waiter goes first
        await asyncio.sleep(0)
        assert order == [1] and not requeued.done()
        gate.set()
        await waiter
        await requeued  # then the refused call has its slot again
        assert limit.held == 1
        await limit.__aexit__(None, None, None)
        assert limit.held == 0

    asyncio.run(main())
