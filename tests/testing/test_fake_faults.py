"""Faults on demand, per route, by exact sequence or by seeded probability."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from copyai_poll.testing import FakeCopyAI, Fault, ManualClock
from tests.testing.fake_helpers import WF, Api

SHORT = aiohttp.ClientTimeout(total=0.2)


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_queued_server_error_then_normal(fake: FakeCopyAI, api: Api, status: int) -> None:
    """A queued 5xx answers the next request with a JSON error; the one after is normal."""
    run_id = await api.start()
    fake.add_faults("get_run", Fault.server_error(status))
    path = f"/workflow/{WF}/run/{run_id}"

    first, second = await api.call("GET", path), await api.call("GET", path)

    assert (status, {"status": "error", "errorCode": "INTERNAL_SERVER_ERROR"}) == first
    assert 200 == second[0]


@pytest.mark.asyncio
async def test_faults_come_in_the_queued_order(fake: FakeCopyAI, api: Api) -> None:
    """The next K requests to a route get the K queued faults, in order."""
    fake.add_faults("list_runs", Fault.server_error(503), Fault.rate_limited(), Fault.html(504))

    statuses = [(await api.call("GET", f"/workflow/{WF}/run"))[0] for _ in range(4)]

    assert [503, 429, 504, 200] == statuses


@pytest.mark.asyncio
@pytest.mark.parametrize(("retry_after", "header"), [(2, "2"), (0.5, "0.5"), (None, None)])
async def test_rate_limited_with_or_without_retry_after(
    fake: FakeCopyAI, retry_after: float | None, header: str | None
) -> None:
    """A 429 carries Retry-After (in seconds) only when asked to."""
    fake.add_faults("list_webhooks", Fault.rate_limited(retry_after))
    async with (
        aiohttp.ClientSession(headers={"x-copy-ai-api-key": fake.api_key}) as session,
        session.get(f"{fake.base_url}/webhook") as response,
    ):
        assert (429, header) == (response.status, response.headers.get("Retry-After"))


@pytest.mark.asyncio
async def test_html_error_page(fake: FakeCopyAI) -> None:
    """An html fault answers a text/html error page instead of JSON."""
    fake.add_faults("list_webhooks", Fault.html(502))
    async with (
        aiohttp.ClientSession(headers={"x-copy-ai-api-key": fake.api_key}) as session,
        session.get(f"{fake.base_url}/webhook") as response,
    ):
        text = await response.text()

    assert (502, "text/html") == (response.status, response.content_type)
    assert text.startswith("<html>")


@pytest.mark.asyncio
async def test_truncated_json_on_a_200(fake: FakeCopyAI, api: Api) -> None:
    """A truncated answer is a 200 whose body is the first half of the normal JSON."""
    run_id = await api.start()
    path = f"/workflow/{WF}/run/{run_id}"
    fake.add_faults("get_run", Fault.truncated())

    status, body = await api.call("GET", path)
    _, normal = await api.call("GET", path)

    assert 200 == status
    assert isinstance(body, str)
    assert json.dumps(normal).startswith(body)


@pytest.mark.asyncio
async def test_slow_answer_times_out_a_patient_client(fake: FakeCopyAI, api: Api) -> None:
    """A slow answer outlasts a 0.2 s client timeout; a short delay still answers normally."""
    fake.add_faults("list_webhooks", Fault.slow(30), Fault.slow(0.01))

    with pytest.raises(TimeoutError):
        await api.call("GET", "/webhook", timeout=SHORT)
    status, _ = await api.call("GET", "/webhook")

    assert 200 == status


@pytest.mark.asyncio
async def test_dropped_connection(fake: FakeCopyAI, api: Api) -> None:
    """A drop closes the connection without an answer, and the start did not happen."""
    fake.add_faults("start_run", Fault.drop())

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api.call("POST", f"/workflow/{WF}/run", json={"startVariables": {}})

    assert ([], None) == (fake.run_ids(), fake.requests[-1].status)


@pytest.mark.asyncio
async def test_fault_after_handling_still_starts_the_run(fake: FakeCopyAI, api: Api) -> None:
    """With after_handling, the run is started although the client only sees the fault."""
    fake.add_faults(
        "start_run", Fault.server_error(504, after_handling=True), Fault.drop(after_handling=True)
    )

    status, _ = await api.call("POST", f"/workflow/{WF}/run", json={"startVariables": {}})
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api.call("POST", f"/workflow/{WF}/run", json={"startVariables": {}})

    assert (504, 2) == (status, len(fake.run_ids()))


@pytest.mark.asyncio
async def test_hang_never_answers_and_shutdown_is_clean(manual_clock: ManualClock) -> None:
    """A hanging request times out the client; closing the server ends it, leaving no task."""
    server = FakeCopyAI(clock=manual_clock)
    await server.start()
    server.add_faults("get_run", Fault.hang())
    async with aiohttp.ClientSession(headers={"x-copy-ai-api-key": server.api_key}) as session:
        with pytest.raises(TimeoutError):
            await Api(session, server.base_url).call("GET", f"/workflow/{WF}/run/x", timeout=SHORT)

    async with asyncio.timeout(5):
        await server.close()

    assert {asyncio.current_task()} == asyncio.all_tasks()
    assert Fault.hang() == server.requests[-1].fault


@pytest.mark.asyncio
async def test_slow_request_in_flight_is_released_on_close(manual_clock: ManualClock) -> None:
    """Closing the server while a slow answer is pending finishes promptly."""
    server = FakeCopyAI(clock=manual_clock)
    await server.start()
    server.add_faults("list_webhooks", Fault.slow(60))
    async with aiohttp.ClientSession(headers={"x-copy-ai-api-key": server.api_key}) as session:
        with pytest.raises(TimeoutError):
            await Api(session, server.base_url).call("GET", "/webhook", timeout=SHORT)

    async with asyncio.timeout(5):
        await server.close()

    assert {asyncio.current_task()} == asyncio.all_tasks()


async def _statuses_with_rate(seed: int) -> list[int]:
    async with FakeCopyAI(clock=ManualClock(), seed=seed) as server:
        server.fault_rate("list_webhooks", Fault.server_error(503), 0.5)
        async with aiohttp.ClientSession(headers={"x-copy-ai-api-key": server.api_key}) as s:
            api = Api(s, server.base_url)
            return [(await api.call("GET", "/webhook"))[0] for _ in range(20)]


@pytest.mark.asyncio
async def test_fault_rate_is_reproducible_with_a_seed() -> None:
    """A fault by probability hits some requests, and the same ones again with the same seed."""
    first, second = await _statuses_with_rate(7), await _statuses_with_rate(7)

    assert first == second
    assert {200, 503} == set(first)


@pytest.mark.asyncio
async def test_queued_faults_come_before_rates(fake: FakeCopyAI, api: Api) -> None:
    """Queued faults are used up first; a rate of 1 then hits every request."""
    fake.fault_rate("list_webhooks", Fault.server_error(500), 1.0)
    fake.add_faults("list_webhooks", Fault.rate_limited())

    statuses = [(await api.call("GET", "/webhook"))[0] for _ in range(3)]
    fake.clear_faults()

    assert ([429, 500, 500], 200) == (statuses, (await api.call("GET", "/webhook"))[0])


@pytest.mark.asyncio
async def test_group_route_names(fake: FakeCopyAI, api: Api) -> None:
    """'webhooks' targets every webhook route, '*' every route; other routes are untouched."""
    fake.add_faults("webhooks", Fault.server_error(502))
    fake.add_faults("*", Fault.server_error(503))

    list_runs = (await api.call("GET", f"/workflow/{WF}/run"))[0]
    get_hook = (await api.call("GET", "/webhook/WHK-1"))[0]
    list_hooks = (await api.call("GET", "/webhook"))[0]

    assert (503, 502, 200) == (list_runs, get_hook, list_hooks)


@pytest.mark.parametrize(
    ("route", "probability", "match"),
    [("get_runs", 0.5, "unknown route"), ("get_run", 1.5, "between 0 and 1")],
)
def test_nonsense_fault_settings_are_value_errors(
    route: str, probability: float, match: str
) -> None:
    """An unknown route name or a probability outside 0..1 is a ValueError."""
    with pytest.raises(ValueError, match=match):
        FakeCopyAI().fault_rate(route, Fault.drop(), probability)
