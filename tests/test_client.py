"""CopyAIClient against a mocked session (aioresponses): requests, errors, retries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.client_reqrep import ConnectionKey
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from copyai_poll import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    CopyAIClient,
    CopyAIError,
    CreditLimitError,
    NotFoundError,
    PollPolicy,
    PollTimeoutError,
    RateLimitError,
    ResponseFormatError,
    RetryPolicy,
    RunStatus,
    ServerError,
)
from copyai_poll._limiter import RateLimiter
from tests.helpers import BASE, KEY, RUN, RUN_URL, START_URL, WF, FakeClock, body

FAST = RetryPolicy(attempts=3, initial=1.0, maximum=4.0, jitter=0.0)
CONNECT_FAILED = aiohttp.ClientConnectorError(
    ConnectionKey("api.copy.ai", 443, True, True, None, None, None),
    ConnectionRefusedError(111, "Connection refused"),
)


@pytest.fixture
def mocked() -> Any:
    """An aioresponses mock of every request."""
    with aioresponses() as m:
        yield m


@pytest_asyncio.fixture
async def client(clock: FakeClock) -> AsyncIterator[CopyAIClient]:
    """A client whose retry sleeps run on the virtual clock."""
    async with CopyAIClient(KEY, retry=FAST) as c:
        c._sleep = clock.sleep
        yield c


def sent(mocked: Any, method: str, url: str) -> list[Any]:
    """The calls aioresponses recorded for a method and URL."""
    return mocked.requests.get((method, URL(url)), [])


# -- configuration ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_key_and_base_url_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, mocked: Any
) -> None:
    """Without arguments the key and base URL are read from COPYAI_API_KEY / COPYAI_BASE_URL."""
    monkeypatch.setenv("COPYAI_API_KEY", KEY)
    monkeypatch.setenv("COPYAI_BASE_URL", "https://proxy.example/api/")
    mocked.get(f"https://proxy.example/api/workflow/{WF}/run/{RUN}", payload=body("NEW"))

    async with CopyAIClient() as c:
        await c.get_run(WF, RUN)

    [call] = sent(mocked, "GET", f"https://proxy.example/api/workflow/{WF}/run/{RUN}")
    assert KEY == call.kwargs["headers"]["x-copy-ai-api-key"]


def test_explicit_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit base_url beats COPYAI_BASE_URL."""
    monkeypatch.setenv("COPYAI_BASE_URL", "https://proxy.example/api")

    assert (
        "https://other.example/api"
        == CopyAIClient(KEY, base_url="https://other.example/api").base_url
    )


def test_default_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without argument or variable the base URL is Copy.ai's."""
    monkeypatch.delenv("COPYAI_BASE_URL", raising=False)

    assert "https://api.copy.ai/api" == CopyAIClient(KEY).base_url


def test_missing_key_says_how_to_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key anywhere is a CopyAIError naming the environment variable."""
    monkeypatch.delenv("COPYAI_API_KEY", raising=False)

    with pytest.raises(CopyAIError, match="COPYAI_API_KEY"):
        CopyAIClient()


@pytest.mark.parametrize("key", ["two words", "line\nbreak", "tab\tkey"])
def test_key_with_control_characters_is_refused_without_echoing_it(key: str) -> None:
    """A key that would break the header is refused, and the message does not repeat it."""
    with pytest.raises(CopyAIError) as info:
        CopyAIClient(key)

    assert key not in str(info.value)


@pytest.mark.parametrize(
    "url",
    ["http://api.example.com/api", "http://10.0.0.5/api", "ftp://api.copy.ai/api", "nonsense"],
)
def test_unsafe_or_unusable_base_urls_are_refused(url: str) -> None:
    """Plain http to a non-loopback host, or a non-http URL, is a CopyAIError."""
    with pytest.raises(CopyAIError):
        CopyAIClient(KEY, base_url=url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/api", "http://localhost:1/api", "http://[::1]:9/api"]
)
def test_plain_http_is_fine_on_loopback(url: str) -> None:
    """The fake server on loopback needs no opt-in."""
    assert url == CopyAIClient(KEY, base_url=url).base_url


def test_plain_http_elsewhere_needs_explicit_opt_in() -> None:
    """allow_insecure_http=True lets the caller send the key over plain http."""
    c = CopyAIClient(KEY, base_url="http://proxy.internal/api", allow_insecure_http=True)

    assert "http://proxy.internal/api" == c.base_url


# -- secrets ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_key_never_appears_in_repr_errors_or_logs(
    client: CopyAIClient, mocked: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The key is absent from the client's repr, exception text and every log record."""
    mocked.get(RUN_URL, status=503, repeat=True)

    with caplog.at_level(logging.DEBUG, logger="copyai_poll"), pytest.raises(ServerError) as info:
        await client.get_run(WF, RUN)

    assert KEY not in repr(client)
    assert KEY not in str(info.value) + repr(info.value)
    assert caplog.records
    assert all(KEY not in r.getMessage() for r in caplog.records)


# -- lifecycle ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_borrowed_session_is_used_and_left_open(mocked: Any) -> None:
    """A session passed in is used and never closed by the client."""
    mocked.get(RUN_URL, payload=body("NEW"))
    async with aiohttp.ClientSession() as session:
        async with CopyAIClient(KEY, session=session) as c:
            await c.get_run(WF, RUN)

        assert not session.closed


@pytest.mark.asyncio
async def test_owned_session_is_closed_with_the_client(mocked: Any) -> None:
    """The client closes the session it created, and refuses use after close."""
    mocked.get(RUN_URL, payload=body("NEW"))
    c = CopyAIClient(KEY)
    await c.get_run(WF, RUN)  # opens lazily, without `async with`
    session = c._session

    await c.close()
    await c.close()  # idempotent

    assert session is not None
    assert session.closed
    assert "closed" in repr(c)
    with pytest.raises(RuntimeError, match="closed"):
        await c.get_run(WF, RUN)


# -- the three calls -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_start_run_posts_start_variables_and_metadata(
    client: CopyAIClient, mocked: Any
) -> None:
    """start_run sends startVariables and metadata, and returns the new run's id."""
    mocked.post(START_URL, payload={"status": "success", "data": {"id": "WRUN-new"}})

    started = await client.start_run(WF, {"Input 1": "hello"}, metadata={"api": True})

    [call] = sent(mocked, "POST", START_URL)
    assert {"startVariables": {"Input 1": "hello"}, "metadata": {"api": True}} == call.kwargs[
        "json"
    ]
    assert KEY == call.kwargs["headers"]["x-copy-ai-api-key"]
    assert "WRUN-new" == started.id
    assert WF == started.workflow_id
    assert {"Input 1": "hello"} == dict(started.input)
    assert started.status is None


@pytest.mark.asyncio
async def test_get_run_parses_the_seed_example(client: CopyAIClient, mocked: Any) -> None:
    """get_run returns the run of the documented example, quirks included."""
    data = {
        "output": {"text": "workflow run output"},
        "metadata": {"interestingValue": "doublelyInterestingValue"},
        "createdAt": "2023-09-27T18:34:13.091Z",
        "id": RUN,
        "workflowRunId": RUN,
        "workflowId": WF,
        "credits": "9001",
    }
    mocked.get(RUN_URL, payload={"status": "success", "data": data})

    got = await client.get_run(WF, RUN)

    assert 9001 == got.credits
    assert got.status is None
    assert datetime(2023, 9, 27, 18, 34, 13, 91000, tzinfo=UTC) == got.created_at


@pytest.mark.asyncio
async def test_ids_are_percent_encoded_in_the_path(client: CopyAIClient, mocked: Any) -> None:
    """Ids are opaque: a slash or dots in one never changes the path."""
    url = f"{BASE}/workflow/{WF}/run/a%2F..%2Fb"
    mocked.get(url, payload=body("NEW", id="a/../b"))

    await client.get_run(WF, "a/../b")

    assert 1 == len(sent(mocked, "GET", url))


@pytest.mark.asyncio
async def test_list_runs_walks_every_page_from_one(client: CopyAIClient, mocked: Any) -> None:
    """list_runs asks pages 1, 2, ... until it has `total` runs (given as a string)."""

    def page(ids: list[str]) -> dict[str, Any]:
        runs = [{"id": i, "status": "COMPLETE"} for i in ids]
        return {"status": "success", "data": {"total": "5", "data": runs}}

    url = f"{BASE}/workflow/{WF}/run"
    mocked.get(f"{url}?page=1&size=2", payload=page(["r1", "r2"]))
    mocked.get(f"{url}?page=2&size=2", payload=page(["r2", "r3"]))  # a shifted page repeats r2
    mocked.get(f"{url}?page=3&size=2", payload=page(["r4", "r5"]))

    ids = [r.id async for r in client.list_runs(WF, page_size=2)]

    assert ["r1", "r2", "r3", "r4", "r5"] == ids


@pytest.mark.asyncio
async def test_list_runs_stops_on_an_empty_page(client: CopyAIClient, mocked: Any) -> None:
    """A page with no runs ends the listing even if `total` promised more."""
    url = f"{BASE}/workflow/{WF}/run"
    mocked.get(
        f"{url}?page=1&size=100",
        payload={"status": "success", "data": {"total": 9, "data": [{"id": "r1"}]}},
    )
    mocked.get(
        f"{url}?page=2&size=100", payload={"status": "success", "data": {"total": 9, "data": []}}
    )

    assert ["r1"] == [r.id async for r in client.list_runs(WF)]


@pytest.mark.asyncio
async def test_list_runs_rejects_page_size_over_100(client: CopyAIClient) -> None:
    """Copy.ai caps page size at 100."""
    with pytest.raises(ValueError, match="page_size"):
        async for _ in client.list_runs(WF, page_size=101):
            pass


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "payload", "error"),
    [
        (400, {"status": "error", "errorCode": "BAD_REQUEST"}, BadRequestError),
        (400, {"status": "error", "errorCode": "WORKFLOW_CREDIT_LIMIT_REACHED"}, CreditLimitError),
        (401, {"status": "error", "errorCode": "UNAUTHORIZED"}, AuthenticationError),
        (403, {"status": "error"}, AuthenticationError),
        (404, {"status": "error", "errorCode": "NOT_FOUND"}, NotFoundError),
        (
            422,
            {"status": "error", "errorCode": "INVALID", "details": [{"field": "x"}]},
            BadRequestError,
        ),
        (409, {"status": "error"}, APIError),
        (501, {"status": "error"}, ServerError),
    ],
)
@pytest.mark.asyncio
async def test_final_error_answers_are_typed_and_not_retried(
    client: CopyAIClient, mocked: Any, status: int, payload: dict[str, Any], error: type[APIError]
) -> None:
    """Non-transient error answers raise their typed error after exactly one request."""
    mocked.get(RUN_URL, status=status, payload=payload, repeat=True)

    with pytest.raises(error) as info:
        await client.get_run(WF, RUN)

    assert error is type(info.value)
    assert status == info.value.status
    assert payload.get("errorCode") == info.value.error_code
    assert payload == info.value.body
    assert 1 == len(sent(mocked, "GET", RUN_URL))


@pytest.mark.asyncio
async def test_html_error_page_keeps_its_text(client: CopyAIClient, mocked: Any) -> None:
    """A non-JSON error body is kept as text on the error."""
    mocked.get(RUN_URL, status=403, body="<html>Forbidden</html>", content_type="text/html")

    with pytest.raises(AuthenticationError) as info:
        await client.get_run(WF, RUN)

    assert "<html>Forbidden</html>" == info.value.body


@pytest.mark.asyncio
async def test_error_envelope_on_a_200_is_an_api_error(client: CopyAIClient, mocked: Any) -> None:
    """A 200 whose body says status=error raises the error its code names."""
    mocked.get(RUN_URL, payload={"status": "error", "errorCode": "NOT_FOUND"})

    with pytest.raises(NotFoundError):
        await client.get_run(WF, RUN)


@pytest.mark.asyncio
async def test_redirects_are_not_followed(client: CopyAIClient, mocked: Any) -> None:
    """A redirect is an error, never a second request carrying the key elsewhere."""
    mocked.get(RUN_URL, status=302, headers={"Location": "https://evil.example/steal"})
    mocked.get("https://evil.example/steal", payload=body("COMPLETE"))

    with pytest.raises(APIError) as info:
        await client.get_run(WF, RUN)

    assert 302 == info.value.status
    assert [] == sent(mocked, "GET", "https://evil.example/steal")


# -- retries ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
@pytest.mark.asyncio
async def test_transient_statuses_are_retried(
    client: CopyAIClient, mocked: Any, clock: FakeClock, status: int
) -> None:
    """429 and 500/502/503/504 are retried with exponential backoff."""
    mocked.get(RUN_URL, status=status)
    mocked.get(RUN_URL, status=status)
    mocked.get(RUN_URL, payload=body("COMPLETE"))

    got = await client.get_run(WF, RUN)

    assert RunStatus.COMPLETE == got.status
    assert [1.0, 2.0] == clock.sleeps


@pytest.mark.asyncio
async def test_retries_give_up_after_attempts(client: CopyAIClient, mocked: Any) -> None:
    """After `attempts` tries a 503 is a ServerError and a 429 a RateLimitError."""
    mocked.get(RUN_URL, status=503, repeat=True)
    with pytest.raises(ServerError):
        await client.get_run(WF, RUN)
    assert 3 == len(sent(mocked, "GET", RUN_URL))


@pytest.mark.asyncio
async def test_rate_limit_after_retries(client: CopyAIClient, mocked: Any) -> None:
    """A 429 that persists becomes RateLimitError."""
    mocked.get(RUN_URL, status=429, repeat=True)

    with pytest.raises(RateLimitError):
        await client.get_run(WF, RUN)


@pytest.mark.asyncio
async def test_one_attempt_means_no_retry(mocked: Any) -> None:
    """RetryPolicy(attempts=1) sends a request once."""
    mocked.get(RUN_URL, status=503, repeat=True)
    async with CopyAIClient(KEY, retry=RetryPolicy(attempts=1)) as c:
        with pytest.raises(ServerError):
            await c.get_run(WF, RUN)

    assert 1 == len(sent(mocked, "GET", RUN_URL))


@pytest.mark.asyncio
async def test_retry_after_seconds_replaces_the_backoff(
    client: CopyAIClient, mocked: Any, clock: FakeClock
) -> None:
    """A Retry-After in seconds is the wait before the next try."""
    mocked.get(RUN_URL, status=429, headers={"Retry-After": "7"})
    mocked.get(RUN_URL, payload=body("NEW"))

    await client.get_run(WF, RUN)

    assert [7.0] == clock.sleeps


@pytest.mark.asyncio
async def test_retry_after_http_date_is_honoured(
    client: CopyAIClient, mocked: Any, clock: FakeClock
) -> None:
    """A Retry-After HTTP date becomes the seconds until then."""
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    mocked.get(RUN_URL, status=503, headers={"Retry-After": when})
    mocked.get(RUN_URL, payload=body("NEW"))

    await client.get_run(WF, RUN)

    assert 25 < clock.sleeps[0] <= 30


@pytest.mark.asyncio
async def test_retry_after_in_the_past_falls_back_to_backoff(
    client: CopyAIClient, mocked: Any, clock: FakeClock
) -> None:
    """A Retry-After date already past is ignored in favour of the computed wait."""
    mocked.get(RUN_URL, status=503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    mocked.get(RUN_URL, payload=body("NEW"))

    await client.get_run(WF, RUN)

    assert [1.0] == clock.sleeps


@pytest.mark.asyncio
async def test_retry_after_beyond_the_cap_fails_at_once(client: CopyAIClient, mocked: Any) -> None:
    """A Retry-After longer than max_retry_after ends retrying with the error."""
    mocked.get(RUN_URL, status=429, headers={"Retry-After": "86400"}, repeat=True)

    with pytest.raises(RateLimitError) as info:
        await client.get_run(WF, RUN)

    assert 86400 == info.value.retry_after
    assert 1 == len(sent(mocked, "GET", RUN_URL))


@pytest.mark.asyncio
async def test_connection_errors_and_timeouts_are_retried(
    client: CopyAIClient, mocked: Any
) -> None:
    """A refused connection and a timeout are retried, then succeed."""
    mocked.get(RUN_URL, exception=CONNECT_FAILED)
    mocked.get(RUN_URL, exception=TimeoutError())
    mocked.get(RUN_URL, payload=body("NEW"))

    got = await client.get_run(WF, RUN)

    assert RunStatus.NEW == got.status


@pytest.mark.parametrize(
    "exc", [CONNECT_FAILED, TimeoutError(), aiohttp.ServerDisconnectedError()]
)
@pytest.mark.asyncio
async def test_network_failures_become_api_connection_error(
    client: CopyAIClient, mocked: Any, exc: Exception
) -> None:
    """After retries a network failure is APIConnectionError, caused by the original."""
    mocked.get(RUN_URL, exception=exc, repeat=True)

    with pytest.raises(APIConnectionError) as info:
        await client.get_run(WF, RUN)

    assert exc is info.value.__cause__


@pytest.mark.asyncio
async def test_garbled_200_is_retried_then_a_format_error(
    client: CopyAIClient, mocked: Any
) -> None:
    """For a GET, a 200 that is not the expected JSON is retried, then ResponseFormatError."""
    mocked.get(RUN_URL, body='{"status": "success", "da')
    mocked.get(RUN_URL, body="<html>gateway</html>", content_type="text/html")
    mocked.get(RUN_URL, payload={"unexpected": True})

    with pytest.raises(ResponseFormatError):
        await client.get_run(WF, RUN)

    assert 3 == len(sent(mocked, "GET", RUN_URL))


@pytest.mark.asyncio
async def test_200_whose_data_is_not_a_run_is_retried(client: CopyAIClient, mocked: Any) -> None:
    """A well-formed envelope around something that is not a run is retried like a 5xx."""
    mocked.get(RUN_URL, payload={"status": "success", "data": "not a run"})
    mocked.get(RUN_URL, payload={"status": "success", "data": {"status": "NEW"}})  # no id is fine
    mocked.get(RUN_URL, payload=body("COMPLETE"))

    got = await client.get_run(WF, RUN)

    assert RunStatus.NEW == got.status
    assert RUN == got.id  # the id asked for stands in for a missing one
    assert 2 == len(sent(mocked, "GET", RUN_URL))


@pytest.mark.asyncio
async def test_garbled_200_recovers(client: CopyAIClient, mocked: Any) -> None:
    """A truncated 200 followed by a good one returns the run."""
    mocked.get(RUN_URL, body='{"status": "succ')
    mocked.get(RUN_URL, payload=body("WAITING"))

    assert RunStatus.WAITING == (await client.get_run(WF, RUN)).status


@pytest.mark.parametrize(
    "failure",
    [
        {"status": 500},
        {"status": 503},
        {"exception": TimeoutError()},
        {"exception": aiohttp.ServerDisconnectedError()},
        {"body": "not json"},
    ],
)
@pytest.mark.asyncio
async def test_start_run_is_never_retried_once_it_may_have_arrived(
    client: CopyAIClient, mocked: Any, failure: dict[str, Any]
) -> None:
    """A POST that may have reached the server is sent once: it spends credits."""
    mocked.post(START_URL, **failure)
    mocked.post(START_URL, payload={"status": "success", "data": {"id": "WRUN-2"}})

    with pytest.raises(CopyAIError):
        await client.start_run(WF, {"x": "y"})

    assert 1 == len(sent(mocked, "POST", START_URL))


@pytest.mark.asyncio
async def test_start_run_is_retried_after_a_429(client: CopyAIClient, mocked: Any) -> None:
    """A 429 is the server refusing before it acts, so even a start_run is retried."""
    mocked.post(START_URL, status=429)
    mocked.post(START_URL, payload={"status": "success", "data": {"id": "WRUN-2"}})

    started = await client.start_run(WF, {"x": "y"})

    assert "WRUN-2" == started.id
    assert 2 == len(sent(mocked, "POST", START_URL))


@pytest.mark.asyncio
async def test_start_run_is_retried_when_it_never_left(client: CopyAIClient, mocked: Any) -> None:
    """A refused connection proves the POST never arrived, so it is retried."""
    mocked.post(START_URL, exception=CONNECT_FAILED)
    mocked.post(START_URL, payload={"status": "success", "data": {"id": "WRUN-2"}})

    started = await client.start_run(WF, {"x": "y"})

    assert "WRUN-2" == started.id


@pytest.mark.asyncio
async def test_retries_are_logged_at_warning_with_the_ids(
    client: CopyAIClient, mocked: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Each retried request logs a WARNING naming the workflow and run."""
    mocked.get(RUN_URL, status=503)
    mocked.get(RUN_URL, payload=body("NEW"))

    with caplog.at_level(logging.WARNING, logger="copyai_poll"):
        await client.get_run(WF, RUN)

    [record] = caplog.records
    assert logging.WARNING == record.levelno
    assert WF in record.getMessage()
    assert RUN in record.getMessage()


# -- polling through the client ----------------------------------------------------------


@pytest.mark.asyncio
async def test_client_poll_until_done_polls_through_the_client(
    client: CopyAIClient, mocked: Any, clock: FakeClock
) -> None:
    """client.poll_until_done is poll_until_done with the client as fetcher."""
    mocked.get(RUN_URL, status=404, payload={"status": "error", "errorCode": "NOT_FOUND"})
    mocked.get(RUN_URL, payload=body("PROCESSING"))
    mocked.get(RUN_URL, payload=body("COMPLETE", output={"Output 1": "done"}))
    seen: list[RunStatus] = []

    final = await client.poll_until_done(
        WF, RUN, on_status_change=lambda c: seen.append(c.current), sleep=clock.sleep, clock=clock
    )

    assert {"Output 1": "done"} == dict(final.output)
    assert [RunStatus.PROCESSING, RunStatus.COMPLETE] == seen


@pytest.mark.asyncio
async def test_retry_after_past_the_deadline_fails_fast(
    client: CopyAIClient, mocked: Any, clock: FakeClock
) -> None:
    """A Retry-After longer than the poll's time left is a PollTimeoutError at once."""
    mocked.get(RUN_URL, payload=body("PROCESSING"))
    mocked.get(RUN_URL, status=429, headers={"Retry-After": "60"}, repeat=True)

    with pytest.raises(PollTimeoutError) as info:
        await client.poll_until_done(
            WF, RUN, timeout=10, policy=PollPolicy(jitter=0), sleep=clock.sleep, clock=clock
        )

    assert RunStatus.PROCESSING == info.value.last_run.status
    assert [1.0] == clock.sleeps  # one poll interval; the 60 s Retry-After never slept
    assert 1001.0 == clock.now


# -- concurrency -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_one_client_serves_a_thousand_concurrent_polls(
    client: CopyAIClient, mocked: Any, clock: FakeClock
) -> None:
    """1,000 poll_until_done calls share one client; each sees its own run complete."""
    polls: dict[str, int] = {}

    def answer(url: URL, **kwargs: Any) -> CallbackResult:
        run_id = url.path.rsplit("/", 1)[1]
        polls[run_id] = polls.get(run_id, 0) + 1
        status = "COMPLETE" if polls[run_id] >= 3 else "PROCESSING"
        return CallbackResult(payload=body(status, id=run_id))

    mocked.get(
        re.compile(rf"{re.escape(BASE)}/workflow/{WF}/run/.+"), callback=answer, repeat=True
    )
    ids = [f"WRUN-{i}" for i in range(1000)]

    finals = await asyncio.gather(
        *(client.poll_until_done(WF, i, sleep=clock.sleep, clock=clock) for i in ids)
    )

    assert ids == [f.id for f in finals]
    assert {RunStatus.COMPLETE} == {f.status for f in finals}
    assert {3} == set(polls.values())


@pytest.mark.asyncio
async def test_max_requests_per_second_holds_across_tasks(mocked: Any, clock: FakeClock) -> None:
    """Requests from many tasks start at least 1/N s apart on the client's clock."""
    starts: list[float] = []

    def answer(url: URL, **kwargs: Any) -> CallbackResult:
        starts.append(clock.now)
        return CallbackResult(payload=body("NEW"))

    mocked.get(RUN_URL, callback=answer, repeat=True)
    async with CopyAIClient(KEY, max_requests_per_second=4) as c:
        c._limiter = RateLimiter(4, clock, clock.sleep)
        await asyncio.gather(*(c.get_run(WF, RUN) for _ in range(40)))

    gaps = [b - a for a, b in zip(sorted(starts), sorted(starts)[1:], strict=False)]
    assert 40 == len(starts)
    assert min(gaps) >= 0.25 - 1e-9
    assert 9.75 == pytest.approx(max(starts) - min(starts))


def test_nonsense_rate_is_a_value_error() -> None:
    """max_requests_per_second must be positive."""
    with pytest.raises(ValueError, match="max_requests_per_second"):
        CopyAIClient(KEY, max_requests_per_second=0)


# -- webhooks ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_register_webhook_posts_url_event_and_workflow(
    client: CopyAIClient, mocked: Any
) -> None:
    """register_webhook sends url, eventType and workflowId, and returns the webhook."""
    hook = {"id": "WH-1", "url": "https://me.example/hook", "eventType": "workflowRun.completed"}
    mocked.post(
        f"{BASE}/webhook", payload={"status": "success", "data": {**hook, "workflowId": WF}}
    )

    got = await client.register_webhook(
        "https://me.example/hook", "workflowRun.completed", workflow_id=WF
    )

    [call] = sent(mocked, "POST", f"{BASE}/webhook")
    assert {"url": hook["url"], "eventType": hook["eventType"], "workflowId": WF} == call.kwargs[
        "json"
    ]
    assert "WH-1" == got["id"]


@pytest.mark.asyncio
async def test_list_webhooks_reads_bare_pages_from_zero(client: CopyAIClient, mocked: Any) -> None:
    """list_webhooks walks pages 0, 1, ... of answers that have no status wrapper."""
    url = f"{BASE}/webhook"
    mocked.get(f"{url}?page=0&size=1", payload={"total": "2", "data": [{"id": "WH-1"}]})
    mocked.get(f"{url}?page=1&size=1", payload={"total": "2", "data": [{"id": "WH-2"}]})

    assert ["WH-1", "WH-2"] == [h["id"] async for h in client.list_webhooks(page_size=1)]


@pytest.mark.asyncio
async def test_get_and_delete_webhook(client: CopyAIClient, mocked: Any) -> None:
    """get_webhook returns the object; delete_webhook accepts an undocumented empty body."""
    mocked.get(f"{BASE}/webhook/WH-1", payload={"status": "success", "data": {"id": "WH-1"}})
    mocked.delete(f"{BASE}/webhook/WH-1", status=204, body="")

    assert "WH-1" == (await client.get_webhook("WH-1"))["id"]
    assert await client.delete_webhook("WH-1") is None


@pytest.mark.asyncio
async def test_webhook_object_must_be_an_object(client: CopyAIClient, mocked: Any) -> None:
    """A webhook answer whose data is not an object is a ResponseFormatError."""
    mocked.get(
        f"{BASE}/webhook/WH-1", payload={"status": "success", "data": ["nope"]}, repeat=True
    )

    with pytest.raises(ResponseFormatError):
        await client.get_webhook("WH-1")


# -- the run asked for, the pool, the typed poll --------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "data",
    [
        {"id": "WRUN-other", "status": "COMPLETE"},
        {"workflowRunId": "WRUN-other", "status": "COMPLETE"},
        {"id": RUN, "workflowRunId": "WRUN-other", "status": "COMPLETE"},
    ],
    ids=["id", "workflowRunId", "both-disagree"],
)
async def test_get_run_refuses_another_runs_answer(
    client: CopyAIClient, mocked: Any, data: dict[str, Any]
) -> None:
    """An answer describing another run is garbled: retried, then ResponseFormatError."""
    mocked.get(RUN_URL, payload={"status": "success", "data": data}, repeat=True)

    with pytest.raises(ResponseFormatError, match="WRUN-other"):
        await client.get_run(WF, RUN)

    assert FAST.attempts == len(sent(mocked, "GET", RUN_URL))


@pytest.mark.asyncio
async def test_get_run_retries_past_another_runs_answer(client: CopyAIClient, mocked: Any) -> None:
    """A confused answer followed by the right one returns the run asked for."""
    mocked.get(
        RUN_URL, payload={"status": "success", "data": {"id": "WRUN-B", "output": {"a": 1}}}
    )
    mocked.get(RUN_URL, payload=body("COMPLETE", output={"mine": True}))

    run = await client.get_run(WF, RUN)

    assert (RUN, {"mine": True}) == (run.id, dict(run.output))


@pytest.mark.asyncio
async def test_get_run_accepts_an_answer_without_ids(client: CopyAIClient, mocked: Any) -> None:
    """An answer carrying no id at all is the run asked for (the id comes from the request)."""
    mocked.get(RUN_URL, payload={"status": "success", "data": {"status": "NEW"}})

    assert RUN == (await client.get_run(WF, RUN)).id


def test_client_poll_until_done_is_typed_like_the_function() -> None:
    """client.poll_until_done takes exactly the function's keywords, no **options."""
    import inspect

    from copyai_poll import poll_until_done

    method = inspect.signature(CopyAIClient.poll_until_done).parameters
    function = inspect.signature(poll_until_done).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in method.values())
    assert list(function)[1:] == list(method)[1:]  # all but fetcher / self
    assert 3600.0 == method["timeout"].default == function["timeout"].default


@pytest.mark.asyncio
@pytest.mark.parametrize("own_session", [True, False], ids=["own-session", "given-session"])
async def test_waiting_for_a_pooled_connection_is_not_the_request_timeout(
    own_session: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request queued behind slow ones for longer than request_timeout still succeeds."""
    from aiohttp import web

    reached: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        run_id = request.match_info["run"]
        reached.append(run_id)
        if run_id.startswith("slow"):
            await asyncio.sleep(1.2)  # each within request_timeout; two of them are not
        return web.json_response({"status": "success", "data": {"id": run_id, "status": "NEW"}})

    app = web.Application()
    app.router.add_get("/api/workflow/{wf}/run/{run}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    # One connection at most, in the client's own pool or in the given session's.
    monkeypatch.setattr("copyai_poll._client.POOL_SIZE", 1)
    session = (
        None if own_session else aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
    )
    try:
        async with CopyAIClient(
            KEY,
            base_url=f"http://127.0.0.1:{port}/api",
            session=session,
            request_timeout=2.0,
            retry=RetryPolicy(attempts=1),
        ) as client:
            slow = [asyncio.create_task(client.get_run(WF, f"slow-{i}")) for i in range(2)]
            while not reached:
                await asyncio.sleep(0.01)
            queued = await client.get_run(WF, "queued")  # about 2.4 s in the pool
            assert ["slow-0", "slow-1", "queued"] == reached
            assert ["slow-0", "slow-1", "queued"] == [
                *(r.id for r in await asyncio.gather(*slow)),
                queued.id,
            ]
    finally:
        if session is not None:
            await session.close()
        await runner.cleanup()


@pytest.mark.asyncio
@pytest.mark.parametrize("own_session", [True, False], ids=["own-session", "given-session"])
async def test_start_run_retried_when_connecting_timed_out(
    own_session: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start_run whose connection never completed was never written: it is retried."""
    import socket

    import copyai_poll._client as client_module

    # A listener that never accepts, its backlog full: a connect to it hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    tries = 0
    real_send = client_module.send

    async def counting_send(*args: Any, **kwargs: Any) -> Any:
        nonlocal tries
        tries += 1
        return await real_send(*args, **kwargs)

    monkeypatch.setattr(client_module, "send", counting_send)
    session = None if own_session else aiohttp.ClientSession()
    try:
        async with CopyAIClient(
            KEY,
            base_url=f"http://127.0.0.1:{port}/api",
            session=session,
            request_timeout=0.3,
            retry=RetryPolicy(attempts=3, initial=0.0, maximum=0.0, jitter=0),
        ) as client:
            with pytest.raises(APIConnectionError, match="no answer"):
                await client.start_run(WF, {"Input 1": "x"})
    finally:
        if session is not None:
            await session.close()
        listener.close()
        for filler in fillers:
            filler.close()

    assert 3 == tries


@pytest.mark.asyncio
@pytest.mark.parametrize("data", [{"url": "https://x"}, {"id": None}, {"id": ""}, {"id": True}])
async def test_a_webhook_without_an_id_is_a_garbled_answer(
    mocked: Any, client: CopyAIClient, data: Any
) -> None:
    """A registered webhook with no usable id is a ResponseFormatError, never a KeyError."""
    mocked.post(f"{BASE}/webhook", payload={"status": "success", "data": data}, repeat=True)

    with pytest.raises(ResponseFormatError, match="id"):
        await client.register_webhook("https://hooks.example/x", "workflowRun.completed")
    with pytest.raises(ResponseFormatError):
        async with client.subscribe("https://hooks.example/x"):
            raise AssertionError("not reached")


@pytest.mark.asyncio
async def test_a_short_key_echoed_by_an_error_answer_is_redacted(mocked: Any) -> None:
    """A key shorter than 8 characters, echoed as a word by an error answer, is redacted."""
    body = {"status": "error", "errorCode": "BAD_KEY", "message": "key Sk7Qz9x refused"}
    mocked.get(RUN_URL, status=400, payload=body)

    async with CopyAIClient("Sk7Qz9x") as client:
        with pytest.raises(BadRequestError) as caught:
            await client.get_run(WF, RUN)

    assert "Sk7Qz9x" not in f"{caught.value} {caught.value.body!r}"
