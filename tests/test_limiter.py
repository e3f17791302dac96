"""RateLimiter: smooth spacing, FIFO order, and cancelled waiters giving their slot back."""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest

from copyai_poll._limiter import RateLimiter
from tests.helpers import FakeClock


def assert_smooth(starts: list[float], rate: float) -> None:
    gap = 1 / rate
    ordered = sorted(starts)
    assert [] == [(a, b) for a, b in itertools.pairwise(ordered) if b - a < gap - 1e-9]
    # No window of one second holds more than `rate` starts: no burst.
    assert [] == [
        t for t in ordered if sum(t <= u < t + 1 - 1e-9 for u in ordered) > math.ceil(rate)
    ]


async def settle() -> None:
    """Let every ready task run until none is left but the caller."""
    while len(asyncio.all_tasks()) > 1:
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_spaces_many_tasks() -> None:
    """Spaces the starts of 50 concurrent tasks 1/rate apart, without a burst."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    starts: list[float] = []

    async def request() -> None:
        await limiter.acquire()
        starts.append(clock.now)

    await asyncio.gather(*(request() for _ in range(50)))

    assert 50 == len(starts)
    assert 0.0 == min(starts)
    assert pytest.approx(4.9) == max(starts)
    assert_smooth(starts, 10)


@pytest.mark.asyncio
async def test_repeated_requests() -> None:
    """Keeps the spacing when each of several tasks sends many requests in turn."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    starts: list[float] = []

    async def worker() -> None:
        for _ in range(10):
            await limiter.acquire()
            starts.append(clock.now)
            await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(5)))

    assert 50 == len(starts)
    assert pytest.approx(4.9) == max(starts)
    assert_smooth(starts, 10)


@pytest.mark.asyncio
async def test_idle_start_is_immediate() -> None:
    """Lets a request start at once, without sleeping, after the limiter has been idle."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(2, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    clock.now = 100.0

    await limiter.acquire()

    assert ([], 100.0) == (clock.sleeps, clock.now)


@pytest.mark.asyncio
async def test_no_burst_after_idle() -> None:
    """Does not save up unused slots while idle to spend them in a burst."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(4, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    clock.now = 60.0
    starts: list[float] = []

    async def request() -> None:
        await limiter.acquire()
        starts.append(clock.now)

    await asyncio.gather(*(request() for _ in range(8)))

    assert pytest.approx([60.0 + i * 0.25 for i in range(8)]) == starts


@pytest.mark.parametrize("rate", [0, -1, -0.5, float("nan"), float("inf")])
def test_invalid_rate(rate: float) -> None:
    """Refuses a rate that is not a positive finite number."""
    with pytest.raises(ValueError, match="max_requests_per_second must be > 0"):
        RateLimiter(rate)


@pytest.mark.asyncio
async def test_fifo_order() -> None:
    """Grants slots in arrival order, including to callers that arrive while others wait."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    order: list[int] = []

    async def request(i: int) -> None:
        await limiter.acquire()
        order.append(i)

    first = [asyncio.create_task(request(i)) for i in range(10)]
    await asyncio.sleep(0)  # the first ten are queued before the next ten arrive
    later = [asyncio.create_task(request(i)) for i in range(10, 20)]
    await asyncio.gather(*first, *later)

    assert list(range(20)) == order


@pytest.mark.asyncio
async def test_works_with_real_sleep() -> None:
    """Grants every slot, in order, with the real clock and asyncio.sleep."""
    limiter = RateLimiter(1000)
    order: list[int] = []

    async def request(i: int) -> None:
        await limiter.acquire()
        order.append(i)

    await asyncio.gather(*(request(i) for i in range(5)))

    assert [0, 1, 2, 3, 4] == order


@pytest.mark.asyncio
async def test_thousand_cancelled_waiters_do_not_delay_the_next() -> None:
    """After 1,000 queued callers are cancelled, a new caller starts within one slot."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    await limiter.acquire()  # takes the slot at 0.0
    waiters = [asyncio.create_task(limiter.acquire()) for _ in range(1000)]
    await asyncio.sleep(0)  # every waiter is queued
    for w in waiters:
        w.cancel()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    before = clock.now

    await limiter.acquire()

    assert 1000 == sum(isinstance(r, asyncio.CancelledError) for r in results)
    assert clock.now - before <= 1 / 20 + 1e-9


@pytest.mark.asyncio
async def test_cancelling_head_mid_sleep_keeps_spacing() -> None:
    """Cancelling the sleeping head halfway through its wait leaves exact 1/rate spacing."""
    clock = FakeClock(start=0.0)
    sleeps = 0

    async def sleep(seconds: float) -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps == 3:  # the third caller to sleep is cancelled halfway through its wait
            clock.now += seconds / 2
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
        await clock.sleep(seconds)

    limiter = RateLimiter(10, clock=clock, sleep=sleep)
    starts: dict[int, float] = {}

    async def request(i: int) -> None:
        await limiter.acquire()
        starts[i] = clock.now

    tasks = [asyncio.create_task(request(i)) for i in range(6)]
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert [3] == [i for i, r in enumerate(results) if isinstance(r, asyncio.CancelledError)]
    assert pytest.approx({0: 0.0, 1: 0.1, 2: 0.2, 4: 0.3, 5: 0.4}) == starts


@pytest.mark.asyncio
async def test_cancelled_just_before_its_grant_takes_no_slot() -> None:
    """A waiter cancelled just as its turn comes up does not use a slot."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    starts: dict[int, float] = {}
    tasks: list[asyncio.Task[None]] = []

    async def request(i: int) -> None:
        await limiter.acquire()
        starts[i] = clock.now
        if i == 2:
            tasks[3].cancel()  # its turn is next: it has been woken but has not run yet

    tasks.extend(asyncio.create_task(request(i)) for i in range(6))
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert [3] == [i for i, r in enumerate(results) if isinstance(r, asyncio.CancelledError)]
    assert pytest.approx({0: 0.0, 1: 0.1, 2: 0.2, 4: 0.3, 5: 0.4}) == starts


@pytest.mark.asyncio
async def test_error_while_sleeping_does_not_wedge_the_queue() -> None:
    """A head whose sleep raises gets the error; the callers behind it still get slots."""
    clock = FakeClock(start=0.0)
    sleeps = 0

    async def sleep(seconds: float) -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps == 1:
            raise RuntimeError("sleep broke")
        await clock.sleep(seconds)

    limiter = RateLimiter(10, clock=clock, sleep=sleep)
    starts: dict[int, float] = {}

    async def request(i: int) -> None:
        await limiter.acquire()
        starts[i] = clock.now

    results = await asyncio.gather(*(request(i) for i in range(4)), return_exceptions=True)

    assert [1] == [i for i, r in enumerate(results) if isinstance(r, RuntimeError)]
    assert pytest.approx({0: 0.0, 2: 0.1, 3: 0.2}) == starts


@pytest.mark.asyncio
async def test_no_task_left_behind() -> None:
    """After cancellations anywhere in the queue, no task lingers and the limiter goes idle."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    starts: list[float] = []

    async def request() -> None:
        await limiter.acquire()
        starts.append(clock.now)

    tasks = [asyncio.create_task(request()) for _ in range(10)]
    await asyncio.sleep(0)  # all are queued; task 1 is the sleeping head
    for i in (1, 4, 9):  # the head, one in the middle, the last
        tasks[i].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await settle()
    clock.now = max(starts) + 0.1  # one slot after the last grant
    sleeps_before = len(clock.sleeps)

    await limiter.acquire()

    assert {asyncio.current_task()} == asyncio.all_tasks()
    assert 7 == len(starts)
    assert pytest.approx(0.6) == max(starts)
    assert sleeps_before == len(clock.sleeps)
