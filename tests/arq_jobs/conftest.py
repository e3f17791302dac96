"""arq's pool on the session's real Redis (see tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from arq.connections import ArqRedis, RedisSettings, create_pool


@pytest_asyncio.fixture
async def arq_redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    """arq's pool on the test's Redis, closed after the test."""
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        yield pool
    finally:
        await pool.aclose()
