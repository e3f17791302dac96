"""Hostile and odd inputs: each gets a typed error or a calm recovery, never a leak or a hang."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aioresponses import CallbackResult, aioresponses

from copyai_poll import (
    CopyAIClient,
    CopyAIError,
    NotFoundError,
    PollPolicy,
    PollTimeoutError,
    RetryPolicy,
    ServerError,
    poll_many,
    poll_until_done,
)
from tests.helpers import KEY, RUN, RUN_URL, WF, FakeClock, ScriptedFetcher, body, run

ONCE = RetryPolicy(attempts=1)


def _http(status_line: str, payload: Any) -> bytes:
    data = json.dumps(payload).encode()
    head = (
        f"HTTP/1.1 {status_line}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


@pytest_asyncio.fixture
async def raw_server() -> AsyncIterator[Callable[[bytes], Any]]:
    """Start a TCP server on 127.0.0.1 that answers every request with fixed bytes."""
    servers: list[asyncio.Server] = []

    async def start(answer: bytes) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/api"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


# -- hostile input escaping as a bare exception -----------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "retry_after",
    [
        "Wed, 21 Oct 99999999999999999999 07:28:00 GMT",
        "Wed, 21 Oct 2015 07:28:00 +99999999999999999999",
    ],
)
async def test_absurd_retry_after_date_is_not_a_bare_overflow_error(retry_after: str) -> None:
    """A 503 with an absurd Retry-After date is a ServerError, never a bare OverflowError."""
    with aioresponses() as mocked:
        mocked.get(RUN_URL, status=503, headers={"Retry-After": retry_after}, repeat=True)
        async with CopyAIClient(KEY, retry=ONCE) as client:
            with pytest.raises(ServerError):
                await client.get_run(WF, RUN)


@pytest.mark.asyncio
async def test_infinite_request_timeout_is_refused_or_works(raw_server: Any) -> None:
    """request_timeout=inf is a ValueError at construction or works; never a bare OverflowError."""
    base = await raw_server(_http("200 OK", body("COMPLETE")))
    try:
        client = CopyAIClient(KEY, base_url=base, request_timeout=math.inf, retry=ONCE)
    except ValueError:
        return
    async with client:
        assert RUN == (await client.get_run(WF, RUN)).id


# -- secrets ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_malformed_http_answer_does_not_leak_the_key_through_the_cause(
    raw_server: Any,
) -> None:
    """A malformed HTTP answer's error chain never shows the API key in any repr."""
    base = await raw_server(b"garbage\r\n\r\n")
    async with CopyAIClient(KEY, base_url=base, retry=ONCE) as client:
        with pytest.raises(CopyAIError) as caught:
            await client.get_run(WF, RUN)
    leaked = [type(e).__name__ for e in _chain(caught.value) if KEY in repr(e)]
    assert [] == leaked


@pytest.mark.asyncio
async def test_borrowed_session_with_raise_for_status_keeps_404_typed_and_key_hidden() -> None:
    """A borrowed session with raise_for_status=True still gives NotFoundError, key unexposed."""
    with aioresponses() as mocked:
        mocked.get(
            RUN_URL, status=404, payload={"status": "error", "errorCode": "NOT_FOUND"}, repeat=True
        )
        async with (
            aiohttp.ClientSession(raise_for_status=True) as session,
            CopyAIClient(KEY, session=session, retry=ONCE) as client,
        ):
            with pytest.raises(CopyAIError) as caught:
                await client.get_run(WF, RUN)
    assert isinstance(caught.value, NotFoundError)
    assert not any(KEY in repr(e) for e in _chain(caught.value))


# -- retries and the deadline ----------------------------------------------------------


@pytest.mark.asyncio
async def test_retry_after_past_the_deadline_fails_the_wait_fast() -> None:
    """A 503 asking for 100 s inside a 10 s wait is a PollTimeoutError at once, caused by it."""
    clock = FakeClock()
    with aioresponses() as mocked:
        mocked.get(RUN_URL, status=503, headers={"Retry-After": "100"}, repeat=True)
        async with CopyAIClient(KEY, retry=ONCE) as client:
            with pytest.raises(PollTimeoutError) as raised:
                await poll_until_done(client, WF, RUN, timeout=10, sleep=clock.sleep, clock=clock)

    assert isinstance(raised.value.__cause__, ServerError)
    assert 100.0 == raised.value.__cause__.retry_after
    assert [] == clock.sleeps  # it did not sleep towards a poll that could not happen


# -- hangs ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_list_runs_stops_when_pages_bring_nothing_new() -> None:
    """A server whose total lies and which ignores `page` cannot keep list_runs paging for ever."""
    calls = 0

    def same_page(url: Any, **kwargs: Any) -> CallbackResult:
        nonlocal calls
        calls += 1
        items = [] if calls > 20 else [{"id": "WRUN-1", "status": "COMPLETE"}]
        return CallbackResult(
            payload={"status": "success", "data": {"total": 10**6, "data": items}}
        )

    with aioresponses() as mocked:
        mocked.get(re.compile(r".*/workflow/WCFG-1/run\?.*"), callback=same_page, repeat=True)
        async with CopyAIClient(KEY) as client:
            ids = [r.id async for r in client.list_runs("WCFG-1")]
    assert ["WRUN-1"] == ids
    assert calls <= 2


# -- lost results and contract letter ------------------------------------------------


@pytest.mark.asyncio
async def test_poll_many_outcome_keeps_the_last_observed_run_on_any_error() -> None:
    """RunOutcome.run is the last observed run even when the poll ends with an API error."""
    fetcher = ScriptedFetcher([run("PROCESSING"), ServerError("down", status=503)])
    clock = FakeClock()
    outcomes = [o async for o in poll_many(fetcher, [(WF, RUN)], sleep=clock.sleep, clock=clock)]
    assert isinstance(outcomes[0].error, ServerError)
    assert outcomes[0].run is not None


@pytest.mark.asyncio
async def test_empty_status_string_is_warned_as_undocumented(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A status of "" (a string that is not a documented status) is logged at WARNING."""
    monkeypatch.setattr("copyai_poll._models._warned", set())  # "once per process" starts anew
    fetcher = ScriptedFetcher([run(""), run("COMPLETE")])
    with caplog.at_level(logging.WARNING, logger="copyai_poll"):
        await poll_until_done(fetcher, WF, RUN, sleep=FakeClock().sleep)
    assert [r for r in caplog.records if r.levelno == logging.WARNING]


# -- misuse gets a clear error ---------------------------------------------------------


@pytest.mark.asyncio
async def test_closed_borrowed_session_is_a_clear_runtime_error() -> None:
    """A borrowed session that is already closed is named in the error."""
    session = aiohttp.ClientSession()
    await session.close()
    client = CopyAIClient(KEY, session=session)

    with pytest.raises(RuntimeError, match="session given to CopyAIClient is closed"):
        await client.get_run(WF, RUN)


def test_client_used_from_a_second_event_loop_says_so() -> None:
    """Reusing one client across asyncio.run calls is a clear RuntimeError, not a loop crash."""
    client = CopyAIClient(KEY)

    async def use() -> None:
        with aioresponses() as mocked:
            mocked.get(RUN_URL, payload=body("NEW"))
            await client.get_run(WF, RUN)

    asyncio.run(use())
    try:
        with pytest.raises(RuntimeError, match="another event loop"):
            asyncio.run(use())
    finally:
        asyncio.run(client._session.close())  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "make",
    [
        lambda: PollPolicy(initial=math.inf, maximum=math.inf),
        lambda: RetryPolicy(attempts=2.5),  # type: ignore[arg-type]
        lambda: RetryPolicy(attempts=True),
        lambda: RetryPolicy(initial=math.nan),
    ],
)
def test_nonsense_policy_values_are_value_errors(make: Callable[[], Any]) -> None:
    """Infinite first waits and fractional or boolean attempt counts are refused."""
    with pytest.raises(ValueError, match="must be"):
        make()


@pytest.mark.parametrize("retry_after", ["1_0", "1e3", "-0", "NaN", "inf", "9" * 400])
@pytest.mark.asyncio
async def test_retry_after_that_is_not_http_falls_back_to_backoff(retry_after: str) -> None:
    """Retry-After values HTTP does not define are ignored in favour of the backoff."""
    clock = FakeClock()
    with aioresponses() as mocked:
        mocked.get(RUN_URL, status=503, headers={"Retry-After": retry_after})
        mocked.get(RUN_URL, payload=body("NEW"))
        async with CopyAIClient(KEY, retry=RetryPolicy(initial=1.0, jitter=0.0)) as client:
            client._sleep = clock.sleep
            await client.get_run(WF, RUN)

    assert [1.0] == clock.sleeps


@pytest.mark.asyncio
async def test_retry_log_records_carry_the_ids(caplog: pytest.LogCaptureFixture) -> None:
    """Each retry's WARNING record names the workflow and run in its extra fields."""
    with aioresponses() as mocked:
        mocked.get(RUN_URL, status=503)
        mocked.get(RUN_URL, payload=body("NEW"))
        async with CopyAIClient(KEY, retry=RetryPolicy(initial=0.0, maximum=0.0)) as client:
            with caplog.at_level(logging.WARNING, logger="copyai_poll"):
                await client.get_run(WF, RUN)

    [record] = caplog.records
    assert (WF, RUN) == (record.workflow_id, record.run_id)  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_not_found_in_the_grace_period_is_logged_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 404 polled again during the grace period still leaves a DEBUG line naming the run."""
    missing = NotFoundError("not yet", status=404)
    fetcher = ScriptedFetcher([missing, run("COMPLETE")])
    with caplog.at_level(logging.DEBUG, logger="copyai_poll"):
        await poll_until_done(fetcher, WF, RUN, sleep=FakeClock().sleep)

    assert any("404" in r.getMessage() and RUN in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_webhook_listing_stops_when_pages_repeat() -> None:
    """list_webhooks stops when a page brings nothing new, whatever `total` claims."""
    page = {"total": 10**6, "data": [{"id": "WH-1"}]}
    with aioresponses() as mocked:
        mocked.get(re.compile(r".*/webhook\?.*"), payload=page, repeat=True)
        async with CopyAIClient(KEY) as client:
            hooks = [h["id"] async for h in client.list_webhooks()]

    assert ["WH-1"] == hooks
