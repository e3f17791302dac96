"""A smooth, first-come-first-served rate limit on the starts of requests.

`RateLimiter` spaces the starts of all requests through one client at least ``1/rate``
seconds apart, whichever tasks send them. A caller cancelled while it waits gives its
place back: nobody's slot is reserved until the moment it is taken.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

import attrs


@attrs.define
class RateLimiter:
    """Grants slots ``1/rate`` seconds apart, in the order callers arrive.

    Waiters queue up; only the one at the head sleeps, until the next slot is due. It then
    takes the slot and wakes the next waiter. A slot is booked only when it is taken, so a
    caller that is cancelled (or fails) while waiting costs the others nothing.
    """

    rate: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _next_slot: float = attrs.field(default=-math.inf, init=False)
    _waiters: deque[asyncio.Future[None]] = attrs.field(factory=deque, init=False)

    def __attrs_post_init__(self) -> None:
        if not (0 < self.rate < math.inf):  # also refuses NaN
            raise ValueError(f"max_requests_per_second must be > 0, got {self.rate!r}")

    async def acquire(self) -> None:
        """Wait for this caller's slot; return once the request may start."""
        now = self.clock()
        if not self._waiters and now >= self._next_slot:
            # Fast path: nobody ahead and the slot is due. No future, no sleep.
            self._next_slot = now + 1 / self.rate
            return
        ticket = asyncio.get_running_loop().create_future()
        self._waiters.append(ticket)
        try:
            if self._waiters[0] is not ticket:
                await ticket  # resolved by whoever leaves the head of the queue before us
            # At the head, nobody else takes slots, so `_next_slot` stays put while we sleep.
            delay = self._next_slot - self.clock()
            if delay > 0:
                await self.sleep(delay)
            # Counting from the later of "now" and the due time keeps every gap at least
            # 1/rate, whether the sleep woke late or a hair early.
            self._next_slot = max(self.clock(), self._next_slot) + 1 / self.rate
        finally:
            # Runs on success, cancellation and errors alike, so the queue never wedges.
            if self._waiters[0] is ticket:
                self._waiters.popleft()
                # A cancelled successor's ticket is already done; that task will reach this
                # block itself, as the new head, and pass the turn on.
                if self._waiters and not self._waiters[0].done():
                    self._waiters[0].set_result(None)
            else:
                self._waiters.remove(ticket)
