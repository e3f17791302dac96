"""The request log and the per-run GET counters."""

from __future__ import annotations

import pytest

from copyai_poll.testing import FakeCopyAI, Fault, ManualClock, RequestRecord
from tests.testing.fake_helpers import WF, Api


@pytest.mark.asyncio
async def test_log_records_each_request(
    fake: FakeCopyAI, manual_clock: ManualClock, api: Api
) -> None:
    """Each request is logged with method, path, query, parsed body, clock time and status."""
    manual_clock.advance(5)
    await api.call("POST", f"/workflow/{WF}/run", json={"startVariables": {"a": 1}})
    manual_clock.advance(1.5)
    fake.add_faults("list_runs", Fault.server_error(503))
    await api.call("GET", f"/workflow/{WF}/run", params={"size": "5"})

    start, listing = fake.requests

    assert ("POST", f"/api/workflow/{WF}/run", {}) == (start.method, start.path, start.query)
    assert ({"startVariables": {"a": 1}}, 5.0, "start_run") == (
        start.body,
        start.time,
        start.route,
    )
    assert (None, 200) == (start.fault, start.status)
    assert ({"size": "5"}, None, 6.5) == (listing.query, listing.body, listing.time)
    assert (Fault.server_error(503), 503) == (listing.fault, listing.status)


@pytest.mark.asyncio
async def test_log_redacts_the_api_key(fake: FakeCopyAI, api: Api) -> None:
    """The API key's value is logged as *** and appears nowhere in the log's repr."""
    await api.call("GET", "/webhook")
    await api.call("GET", "/webhook", headers={"x-copy-ai-api-key": "sk-other-secret"})

    records = fake.requests

    assert ["***", "***"] == [r.headers["x-copy-ai-api-key"] for r in records]
    assert "sk-secret-key" not in repr(records)
    assert "sk-other-secret" not in repr(records)
    assert "sk-secret-key" not in repr(fake)


@pytest.mark.asyncio
async def test_log_keeps_non_json_bodies_as_text(fake: FakeCopyAI, api: Api) -> None:
    """A body that is not JSON is logged as its text."""
    await api.call("POST", "/webhook", data=b"url=x")

    assert "url=x" == fake.requests[-1].body


@pytest.mark.asyncio
async def test_unknown_path_is_logged_without_route(fake: FakeCopyAI, api: Api) -> None:
    """A request to an unknown path is logged with route None."""
    await api.call("GET", "/elsewhere")

    assert [None] == [r.route for r in fake.requests]


@pytest.mark.asyncio
async def test_get_counts_per_run(fake: FakeCopyAI, api: Api) -> None:
    """Each run counts the GETs that reached its URL, faulted ones included."""
    first, second = await api.start(), await api.start()
    fake.add_faults("get_run", Fault.server_error(500))
    for _ in range(3):
        await api.call("GET", f"/workflow/{WF}/run/{first}")
    await api.call("GET", f"/workflow/{WF}/run/{second}")

    assert (3, 1, 0) == (fake.get_count(first), fake.get_count(second), fake.get_count("x"))


def test_request_record_is_a_frozen_value() -> None:
    """Request records are immutable values."""
    record = RequestRecord(
        method="GET", path="/", query={}, headers={}, body=None, time=0, route=None
    )

    with pytest.raises(AttributeError):
        record.status = 200  # type: ignore[misc]
