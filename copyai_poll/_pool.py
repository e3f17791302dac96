"""`Slots`: at most N holders at once, first come first served, cheap at any queue length.

The client's own session has no connection limit in aiohttp's connector; this is its
limit, taken before a try's clock starts, so that waiting for a free connection is never
counted against ``request_timeout``. asyncio's `Semaphore` would do, but on Python 3.11
its acquire scans every waiter, which 10,000 waiting polls turn quadratic.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType


class Slots:
    """An async context manager that admits at most ``size`` holders at a time.

    Args:
        size: How many may hold a slot at once (>= 1).
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size!r}")
        self._free = size
        # A cancelled waiter stays here, done, until `_release` skips it.
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> None:
        if self._free and not self._waiters:
            self._free -= 1
            return
        slot = asyncio.get_running_loop().create_future()
        self._waiters.append(slot)
        try:
            await slot  # a result means a holder handed its slot over
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():  # handed over, then cancelled
                self._release()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
