"""Fixtures of the CLI tests: a fake server in the test's own event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from copyai_poll.testing import FakeCopyAI
from tests.cli.cli_helpers import QUICK


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeCopyAI]:
    """A fake server in the test's loop whose runs finish within a fraction of a second."""
    async with FakeCopyAI(api_key="cli-test-key", script=QUICK) as server:
        yield server
