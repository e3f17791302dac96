"""`Slots`: the client's own connection limit, first come first served."""

from __future__ import annotations

import asyncio

import pytest

from copyai_poll._pool import Slots


async def settle() -> None:
    """Let every ready task run until none is left but the caller."""
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_admits_at_most_size_in_arrival_order() -> None:
    """No more than `size` hold a slot at once, and waiters get theirs in arrival order."""
    slots = Slots(2)
    gate = asyncio.Event()
    held, most, order = 0, 0, []

    async def hold(i: int) -> None:
        nonlocal held, most
        async with slots:
            order.append(i)
            held += 1
            most = max(most, held)
            await gate.wait()
            held -= 1

    tasks = [asyncio.create_task(hold(i)) for i in range(6)]
    await settle()
    assert [0, 1] == order
    gate.set()
    await asyncio.gather(*tasks)

    assert (2, list(range(6))) == (most, order)


@pytest.mark.asyncio
async def test_cancelled_waiters_cost_nothing() -> None:
    """Cancelled waiters are skipped: the next one in line gets the slot at once."""
    slots = Slots(1)
    release = asyncio.Event()

    async def holder() -> None:
        async with slots:
            await release.wait()

    first = asyncio.create_task(holder())
    await settle()
    waiters = [asyncio.create_task(holder()) for _ in range(1000)]
    await settle()
    for task in waiters:
        task.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    release.set()
    await first

    async with asyncio.timeout(1):
        async with slots:  # free at once, not behind a thousand dead waiters
            pass


@pytest.mark.asyncio
async def test_slot_handed_to_a_cancelled_waiter_is_passed_on() -> None:
    """A waiter cancelled after its slot was handed over passes it to the next one."""
    slots = Slots(1)
    await slots.__aenter__()
    doomed = asyncio.create_task(slots.__aenter__())
    await settle()
    entered: list[str] = []

    async def next_in_line() -> None:
        async with slots:
            entered.append("next")

    follower = asyncio.create_task(next_in_line())
    await settle()
    await slots.__aexit__(None, None, None)  # hands the slot to `doomed`...
    doomed.cancel()  # ...which is cancelled before it runs
    await asyncio.gather(doomed, return_exceptions=True)
    await follower

    assert ["next"] == entered
    async with asyncio.timeout(1), slots:  # and the slot is free again afterwards
        pass


def test_size_below_one_refused() -> None:
    """A pool of no slots is a ValueError."""
    with pytest.raises(ValueError, match="size"):
        Slots(0)
