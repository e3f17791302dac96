"""Fixtures for the fake server's own tests: a manual clock, a fake, a raw HTTP helper."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from copyai_poll.testing import FakeCopyAI, ManualClock
from tests.testing.fake_helpers import Api


@pytest.fixture
def manual_clock() -> ManualClock:
    """A clock that moves only when the test says."""
    return ManualClock()


@pytest_asyncio.fixture
async def fake(manual_clock: ManualClock) -> AsyncIterator[FakeCopyAI]:
    """A started fake on the manual clock."""
    async with FakeCopyAI(clock=manual_clock, api_key="sk-secret-key") as server:
        yield server


@pytest_asyncio.fixture
async def api(fake: FakeCopyAI) -> AsyncIterator[Api]:
    """A raw HTTP helper that sends the fake's key."""
    headers = {"x-copy-ai-api-key": fake.api_key}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield Api(session, fake.base_url)
