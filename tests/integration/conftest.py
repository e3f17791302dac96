"""Fixtures for the integration tests: the fake server on 127.0.0.1 and a client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from copyai_poll import CopyAIClient, PollPolicy, RetryPolicy
from copyai_poll.testing import FakeCopyAI, ManualClock

#: A key distinctive enough to be found if it leaked anywhere.
SECRET_KEY = "sk-integration-Z9q8W7e6R5t4"
WF = "WCFG-integration"

#: Polls with no real waiting to speak of, and no jitter.
FAST_POLL = PollPolicy(initial=0.001, maximum=0.005, jitter=0)

#: Retries at once: tests about retries must not sleep.
QUICK_RETRY = RetryPolicy(attempts=5, initial=0.0, maximum=0.0, jitter=0)


@pytest.fixture
def manual_clock() -> ManualClock:
    """The fake server's clock; it moves only when the test says."""
    return ManualClock()


@pytest_asyncio.fixture
async def server(manual_clock: ManualClock) -> AsyncIterator[FakeCopyAI]:
    """A started fake on the manual clock, with a secret key."""
    async with FakeCopyAI(clock=manual_clock, api_key=SECRET_KEY) as fake:
        yield fake


@pytest_asyncio.fixture
async def client(server: FakeCopyAI) -> AsyncIterator[CopyAIClient]:
    """A client of ``server`` that retries at once."""
    async with CopyAIClient(
        api_key=server.api_key, base_url=server.base_url, retry=QUICK_RETRY
    ) as copyai:
        yield copyai
