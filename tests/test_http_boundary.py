"""The one aiohttp boundary: translating failures, error answers, loopback, rate limit."""

from __future__ import annotations

import asyncio
import itertools
import math
import ssl
from collections.abc import Callable
from unittest import mock

import aiohttp
import pytest
import yarl
from aiohttp.client_reqrep import ConnectionKey
from aioresponses import aioresponses

from copyai_poll import (
    APIConnectionError,
    APIError,
    BadRequestError,
    CreditLimitError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from copyai_poll._http import (
    Failure,
    RateLimiter,
    Response,
    _BodyTooLarge,
    envelope_error,
    error_from_response,
    is_loopback,
    send,
    translate,
)
from tests.helpers import FakeClock

KEY = ConnectionKey(
    host="api.copy.ai",
    port=443,
    is_ssl=True,
    ssl=True,
    proxy=None,
    proxy_auth=None,
    proxy_headers_hash=None,
)


def refused() -> BaseException:
    return aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "Connection refused"))


def refused_mock_key() -> BaseException:
    return aiohttp.ClientConnectorError(mock.Mock(), OSError(101, "Network is unreachable"))


def bad_certificate() -> BaseException:
    return aiohttp.ClientConnectorCertificateError(
        KEY, ssl.SSLCertVerificationError(1, "certificate verify failed")
    )


def ssl_failure() -> BaseException:
    return aiohttp.ClientConnectorSSLError(KEY, ssl.SSLError(1, "handshake failure"))


# (factory, reached_server, transient): one row for every kind of failure `send` catches.
FAILURES: list[tuple[Callable[[], BaseException], bool, bool]] = [
    (refused, False, True),
    (refused_mock_key, False, True),
    (lambda: aiohttp.ConnectionTimeoutError("Connection timeout to host"), False, True),
    (bad_certificate, False, False),
    (ssl_failure, False, False),
    (lambda: aiohttp.SocketTimeoutError("Timeout on reading data from socket"), True, True),
    (lambda: aiohttp.ServerTimeoutError("timeout"), True, True),
    (lambda: TimeoutError(), True, True),  # asyncio.TimeoutError is this class
    (lambda: aiohttp.ServerDisconnectedError(), True, True),
    (lambda: aiohttp.ClientPayloadError("Response payload is not completed"), True, True),
    (lambda: aiohttp.ClientOSError(104, "Connection reset by peer"), True, True),
    (lambda: aiohttp.ClientConnectionError("connection closed"), True, True),
    (lambda: aiohttp.ClientError(), True, True),
    (lambda: aiohttp.ClientError("generic"), True, True),
    (lambda: _BodyTooLarge(), True, False),
]


@pytest.mark.parametrize(("make", "reached", "transient"), FAILURES)
def test_translate(make: Callable[[], BaseException], reached: bool, transient: bool) -> None:
    """Maps every failure the boundary catches to APIConnectionError, caused by the original."""
    exc = make()

    failure = translate(exc, method="GET", request_timeout=30.0)

    assert isinstance(failure.error, APIConnectionError)
    assert exc is failure.error.__cause__
    assert (reached, transient) == (failure.reached_server, failure.transient)
    assert str(failure.error)


def test_translate_timeout_names_the_limit() -> None:
    """Says how long it waited when the server did not answer in time."""
    failure = translate(TimeoutError(), method="GET", request_timeout=12.5)

    assert "12.5" in str(failure.error)


@pytest.mark.asyncio
@pytest.mark.parametrize(("make", "reached", "transient"), FAILURES)
async def test_send_catches(
    make: Callable[[], BaseException], reached: bool, transient: bool
) -> None:
    """Returns a Failure instead of raising when the session raises any caught failure."""
    exc = make()
    url = yarl.URL("https://api.copy.ai/api/workflow/W/run/R")
    async with aiohttp.ClientSession() as session:
        with aioresponses() as server:
            server.get(str(url), exception=exc)
            result = await send(
                session, "GET", url, headers={}, json_body=None, request_timeout=5.0
            )

    assert isinstance(result, Failure)
    assert exc is result.error.__cause__
    assert (reached, transient) == (result.reached_server, result.transient)


class TestErrorFromResponse:
    def test_json_body(self) -> None:
        """Reads the errorCode of a JSON error body and picks its class."""
        body = b'{"status":"error","errorCode":"NOT_FOUND"}'

        failure = error_from_response(Response(404, body, None), method="GET", path="/run/R")

        error = failure.error
        assert isinstance(error, NotFoundError)
        assert (404, "NOT_FOUND", {"status": "error", "errorCode": "NOT_FOUND"}) == (
            error.status,
            error.error_code,
            error.body,
        )
        assert (False, True) == (failure.transient, failure.reached_server)
        assert "GET /run/R answered 404 NOT_FOUND" == str(error)

    def test_html_body(self) -> None:
        """Keeps an HTML body as text, with no error code, and marks a 502 transient."""
        body = b"<html><body>502 Bad Gateway</body></html>"

        failure = error_from_response(Response(502, body, None), method="GET", path="/x")

        error = failure.error
        assert isinstance(error, ServerError)
        assert (502, None, body.decode()) == (error.status, error.error_code, error.body)
        assert failure.transient

    def test_long_html_body_truncated(self) -> None:
        """Keeps at most 2000 bytes of a non-JSON body."""
        failure = error_from_response(Response(500, b"x" * 10_000, None), method="GET", path="/")

        assert "x" * 2000 == failure.error.body  # type: ignore[attr-defined]

    def test_retry_after(self) -> None:
        """Reads Retry-After onto a 429 and marks it transient."""
        failure = error_from_response(Response(429, b"", "7"), method="GET", path="/x")

        error = failure.error
        assert isinstance(error, RateLimitError)
        assert 7.0 == error.retry_after
        assert failure.transient

    def test_retry_after_http_date(self) -> None:
        """Reads a Retry-After HTTP date in the future as a positive wait."""
        header = "Fri, 01 Jan 2100 00:00:00 GMT"

        failure = error_from_response(Response(503, b"", header), method="GET", path="/x")

        assert isinstance(failure.error, ServerError)
        assert failure.error.retry_after is not None
        assert failure.error.retry_after > 0

    def test_retry_after_garbage(self) -> None:
        """Ignores an unreadable Retry-After."""
        failure = error_from_response(Response(503, b"", "later"), method="GET", path="/x")

        assert None is failure.error.retry_after  # type: ignore[attr-defined]

    def test_credit_limit(self) -> None:
        """Turns a 400 credit-limit answer into a final CreditLimitError."""
        body = b'{"status":"error","errorCode":"WORKFLOW_CREDIT_LIMIT_REACHED"}'

        failure = error_from_response(Response(400, body, None), method="POST", path="/run")

        assert isinstance(failure.error, CreditLimitError)
        assert not failure.transient

    def test_unprocessable_details(self) -> None:
        """Keeps a 422's details in the error body."""
        body = b'{"status":"error","errorCode":"INVALID","details":[{"field":"startVariables"}]}'

        failure = error_from_response(Response(422, body, None), method="POST", path="/run")

        error = failure.error
        assert isinstance(error, BadRequestError)
        assert [{"field": "startVariables"}] == error.body["details"]

    @pytest.mark.parametrize("body", [b'{"errorCode": 5}', b"[1, 2]", b'"NOT_FOUND"', b"null"])
    def test_odd_json_body(self, body: bytes) -> None:
        """Ignores an errorCode that is not a string, or a body that is not an object."""
        failure = error_from_response(Response(418, body, None), method="GET", path="/x")

        assert APIError is type(failure.error)
        assert None is failure.error.error_code

    @pytest.mark.parametrize(
        ("status", "transient"),
        [(s, True) for s in (429, 500, 502, 503, 504)]
        + [(s, False) for s in (400, 401, 403, 404, 422, 501)],
    )
    def test_transient_statuses(self, status: int, transient: bool) -> None:
        """Marks only 429, 500, 502, 503 and 504 as worth retrying."""
        failure = error_from_response(Response(status, b"", None), method="GET", path="/x")

        assert transient == failure.transient


def test_envelope_error() -> None:
    """Turns a 200 whose envelope says error into the matching APIError."""
    error = envelope_error(
        {"status": "error", "errorCode": "NOT_FOUND"}, status=200, method="GET", path="/x"
    )

    assert isinstance(error, NotFoundError)
    assert (200, "NOT_FOUND") == (error.status, error.error_code)


@pytest.mark.parametrize("payload", [{"status": "success", "data": {}}, [], None, "error"])
def test_envelope_not_error(payload: object) -> None:
    """Finds no error in an envelope that does not say error."""
    assert None is envelope_error(payload, status=200, method="GET", path="/x")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("localhost.", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("example.com", False),
        ("api.copy.ai", False),
        ("localhost.example.com", False),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("", False),
        (None, False),
    ],
)
def test_is_loopback(host: str | None, expected: bool) -> None:
    """Treats only localhost and loopback addresses as loopback."""
    assert expected == is_loopback(host)


def assert_smooth(starts: list[float], rate: float) -> None:
    gap = 1 / rate
    ordered = sorted(starts)
    assert [] == [(a, b) for a, b in itertools.pairwise(ordered) if b - a < gap - 1e-9]
    # No window of one second holds more than `rate` starts: no burst.
    assert [] == [
        t for t in ordered if sum(t <= u < t + 1 - 1e-9 for u in ordered) > math.ceil(rate)
    ]


@pytest.mark.asyncio
async def test_rate_limiter_spaces_many_tasks() -> None:
    """Spaces the starts of 50 concurrent tasks 1/rate apart, without a burst."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    starts: list[float] = []

    async def request() -> None:
        await limiter.acquire()
        starts.append(clock.now)

    await asyncio.gather(*(request() for _ in range(50)))

    assert 50 == len(starts)
    assert 0.0 == min(starts)
    assert pytest.approx(4.9) == max(starts)
    assert_smooth(starts, 10)


@pytest.mark.asyncio
async def test_rate_limiter_repeated_requests() -> None:
    """Keeps the spacing when each of several tasks sends many requests in turn."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    starts: list[float] = []

    async def worker() -> None:
        for _ in range(10):
            await limiter.acquire()
            starts.append(clock.now)
            await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(5)))

    assert 50 == len(starts)
    assert_smooth(starts, 10)


@pytest.mark.asyncio
async def test_rate_limiter_idle() -> None:
    """Lets a request start at once after the limiter has been idle."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(2, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    clock.now = 100.0

    await limiter.acquire()

    assert ([], 100.0) == (clock.sleeps, clock.now)


@pytest.mark.asyncio
async def test_rate_limiter_after_idle_no_burst() -> None:
    """Does not save up unused slots while idle to spend them in a burst."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(4, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    clock.now = 60.0
    starts: list[float] = []

    async def request() -> None:
        await limiter.acquire()
        starts.append(clock.now)

    await asyncio.gather(*(request() for _ in range(8)))

    assert pytest.approx([60.0 + i * 0.25 for i in range(8)]) == sorted(starts)


@pytest.mark.parametrize("rate", [0, -1, -0.5, float("nan"), float("inf")])
def test_rate_limiter_invalid(rate: float) -> None:
    """Refuses a rate that is not a positive finite number."""
    with pytest.raises(ValueError, match="max_requests_per_second"):
        RateLimiter(rate)
