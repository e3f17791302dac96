"""`CopyAIClient(on_retry=...)`: one typed `RetryEvent` before each retry's wait."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from aioresponses import aioresponses

from copyai_poll import (
    CopyAIClient,
    RateLimitError,
    RetryEvent,
    RetryPolicy,
    ServerError,
)
from tests.helpers import BASE, KEY, RUN, RUN_URL, START_URL, WF, FakeClock, body

FAST = RetryPolicy(attempts=3, initial=1.0, maximum=4.0, jitter=0.0)


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    """An aioresponses mock of every request."""
    with aioresponses() as m:
        yield m


def client_with(clock: FakeClock, on_retry: Any) -> CopyAIClient:
    """A client whose retry waits run on ``clock``."""
    client = CopyAIClient(KEY, retry=FAST, on_retry=on_retry)
    client._sleep = clock.sleep
    return client


@pytest.mark.asyncio
async def test_each_retry_is_one_event_naming_the_request(mocked: aioresponses) -> None:
    """Two failed tries of a get_run give two events: ids, attempt, wait and error."""
    clock, events = FakeClock(), []
    mocked.get(RUN_URL, status=503)
    mocked.get(RUN_URL, status=429, headers={"Retry-After": "7"})
    mocked.get(RUN_URL, payload=body("COMPLETE"))
    async with client_with(clock, events.append) as client:
        await client.get_run(WF, RUN)

    path = f"/workflow/{WF}/run/{RUN}"
    assert [("GET", path, WF, RUN, 1, 1.0), ("GET", path, WF, RUN, 2, 7.0)] == [
        (e.method, e.path, e.workflow_id, e.run_id, e.attempt, e.wait) for e in events
    ]
    assert (ServerError, RateLimitError) == tuple(type(e.error) for e in events)
    assert [1.0, 7.0] == clock.sleeps


@pytest.mark.asyncio
async def test_the_event_comes_before_the_wait(mocked: aioresponses) -> None:
    """The callback runs before the retry's wait begins, not after it."""
    clock, seen_at = FakeClock(), []
    mocked.get(RUN_URL, status=500)
    mocked.get(RUN_URL, payload=body("NEW"))
    async with client_with(clock, lambda event: seen_at.append(len(clock.sleeps))) as client:
        await client.get_run(WF, RUN)
    assert ([0], [1.0]) == (seen_at, clock.sleeps)


@pytest.mark.asyncio
async def test_an_async_callback_is_awaited(mocked: aioresponses) -> None:
    """An async on_retry is awaited before the next try."""
    clock, events = FakeClock(), []

    async def on_retry(event: RetryEvent) -> None:
        events.append(event.attempt)

    mocked.get(RUN_URL, status=502)
    mocked.get(RUN_URL, status=502)
    mocked.get(RUN_URL, payload=body("NEW"))
    async with client_with(clock, on_retry) as client:
        await client.get_run(WF, RUN)
    assert [1, 2] == events


@pytest.mark.asyncio
async def test_no_event_without_a_retry(mocked: aioresponses) -> None:
    """A first try that succeeds, and a last try that fails, call no callback."""
    clock, events = FakeClock(), []
    mocked.get(RUN_URL, payload=body("NEW"))
    mocked.get(RUN_URL, status=503, repeat=True)
    async with client_with(clock, events.append) as client:
        await client.get_run(WF, RUN)
        with pytest.raises(ServerError):
            await client.get_run(WF, RUN)
    assert [1, 2] == [e.attempt for e in events]  # three tries: two retries, not three


@pytest.mark.asyncio
async def test_a_callback_error_propagates_unchanged(mocked: aioresponses) -> None:
    """An exception raised by on_retry ends the request with that very exception."""
    clock = FakeClock()
    boom = RuntimeError("boom")

    def on_retry(event: RetryEvent) -> None:
        raise boom

    mocked.get(RUN_URL, status=503)
    mocked.get(RUN_URL, payload=body("NEW"))
    async with client_with(clock, on_retry) as client:
        with pytest.raises(RuntimeError) as caught:
            await client.get_run(WF, RUN)
    assert boom is caught.value
    assert [] == clock.sleeps  # ended before the wait


@pytest.mark.asyncio
async def test_requests_without_a_run_name_none(mocked: aioresponses) -> None:
    """A 429 to start_run names its workflow but no run; a webhook call names neither."""
    clock, events = FakeClock(), []
    mocked.post(START_URL, status=429)
    mocked.post(START_URL, payload={"status": "success", "data": {"id": RUN}})
    mocked.get(f"{BASE}/webhook/H1", status=503)
    mocked.get(f"{BASE}/webhook/H1", payload={"status": "success", "data": {"id": "H1"}})
    async with client_with(clock, events.append) as client:
        await client.start_run(WF, {"Input 1": "x"})
        await client.get_webhook("H1")
    assert [("POST", WF, None), ("GET", None, None)] == [
        (e.method, e.workflow_id, e.run_id) for e in events
    ]


@pytest.mark.asyncio
async def test_list_runs_retries_name_the_workflow(mocked: aioresponses) -> None:
    """A retried page of list_runs names its workflow."""
    clock, events = FakeClock(), []
    page = f"{START_URL}?page=1&size=100"
    mocked.get(page, status=503)
    mocked.get(page, payload={"status": "success", "data": {"total": 0, "data": []}})
    async with client_with(clock, events.append) as client:
        assert [] == [run async for run in client.list_runs(WF)]
    assert [(WF, None)] == [(e.workflow_id, e.run_id) for e in events]


def test_retry_event_is_frozen() -> None:
    """A RetryEvent is a frozen value: callbacks cannot change what others see."""
    event = RetryEvent(
        method="GET",
        path="/x",
        workflow_id=None,
        run_id=None,
        attempt=1,
        wait=0.5,
        error=ServerError("x", status=503),
    )
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.attempt = 2  # type: ignore[misc]
