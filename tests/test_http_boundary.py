"""The one aiohttp boundary: translating failures, reading answers, judging retries."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any
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
    ResponseFormatError,
    ServerError,
)
from copyai_poll._http import (
    Response,
    _BodyTooLarge,
    _Try,
    error_from_response,
    is_loopback,
    read_answer,
    send,
    translate,
    worth_retrying,
)

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


# (factory, request_sent, final): one row for every kind of failure `send` catches.
# `request_sent` is as judged without the tracing hooks' word: only a failure to connect
# proves the request was never written.
FAILURES: list[tuple[Callable[[], BaseException], bool, bool]] = [
    (refused, False, False),
    (refused_mock_key, False, False),
    (lambda: aiohttp.ConnectionTimeoutError("Connection timeout to host"), False, False),
    (bad_certificate, False, True),
    (ssl_failure, False, True),
    (lambda: aiohttp.SocketTimeoutError("Timeout on reading data from socket"), True, False),
    (lambda: aiohttp.ServerTimeoutError("timeout"), True, False),
    (lambda: TimeoutError(), True, False),  # asyncio.TimeoutError is this class
    (lambda: aiohttp.ServerDisconnectedError(), True, False),
    (lambda: aiohttp.ClientPayloadError("Response payload is not completed"), True, False),
    (lambda: aiohttp.ClientOSError(104, "Connection reset by peer"), True, False),
    (lambda: aiohttp.ClientConnectionError("connection closed"), True, False),
    (lambda: aiohttp.ClientError(), True, False),
    (lambda: aiohttp.ClientError("generic"), True, False),
    (lambda: _BodyTooLarge(), True, True),
]


@pytest.mark.parametrize(("make", "sent", "final"), FAILURES)
def test_translate(make: Callable[[], BaseException], sent: bool, final: bool) -> None:
    """Maps every failure the boundary catches to an APIConnectionError that knows if it was sent."""
    error = translate(make(), "GET", _Try(30.0), "sk-secret")

    assert isinstance(error, APIConnectionError)
    assert (sent, final) == (error._request_sent, error._final)
    assert str(error)


@pytest.mark.parametrize(("make", "sent", "final"), FAILURES)
def test_worth_retrying_transport(
    make: Callable[[], BaseException], sent: bool, final: bool
) -> None:
    """Retries a GET after any failure but a final one, a POST only if it was never sent."""
    error = translate(make(), "POST", _Try(30.0), "sk-secret")

    assert (not final, not final and not sent) == (
        worth_retrying(error, idempotent=True),
        worth_retrying(error, idempotent=False),
    )


def test_translate_trusts_the_tracing_hooks() -> None:
    """Believes the tracing hooks when they saw a connection: unsent means retryable."""
    state = _Try(30.0, seen=True, sent=False)

    error = translate(TimeoutError(), "POST", state, "sk-secret")

    assert (False, True) == (error._request_sent, worth_retrying(error, idempotent=False))


def test_translate_timeout_names_the_limit() -> None:
    """Says how long it waited when the server did not answer in time."""
    error = translate(TimeoutError(), "GET", _Try(12.5), "sk-secret")

    assert "12.5" in str(error)


@pytest.mark.asyncio
@pytest.mark.parametrize(("make", "sent", "final"), FAILURES)
async def test_send_raises_translated(
    make: Callable[[], BaseException], sent: bool, final: bool
) -> None:
    """Raises an APIConnectionError caused by the original for any failure it catches."""
    exc = make()
    url = yarl.URL("https://api.copy.ai/api/workflow/W/run/R")
    async with aiohttp.ClientSession() as session:
        with aioresponses() as server:
            server.get(str(url), exception=exc)
            with pytest.raises(APIConnectionError) as raised:
                await send(
                    session,
                    "GET",
                    url,
                    headers={},
                    json_body=None,
                    request_timeout=5.0,
                    secret="sk-secret",
                )

    assert exc is raised.value.__cause__
    assert final == raised.value._final


class TestErrorFromResponse:
    def test_json_body(self) -> None:
        """Reads the errorCode of a JSON error body and picks its class."""
        body = b'{"status":"error","errorCode":"NOT_FOUND"}'

        error = error_from_response(Response(404, body, None), method="GET", path="/run/R")

        assert isinstance(error, NotFoundError)
        assert (404, "NOT_FOUND", {"status": "error", "errorCode": "NOT_FOUND"}) == (
            error.status,
            error.error_code,
            error.body,
        )
        assert not worth_retrying(error, idempotent=True)
        assert "GET /run/R answered 404 NOT_FOUND" == str(error)

    def test_html_body(self) -> None:
        """Keeps an HTML body as text, with no error code, and marks a 502 transient."""
        body = b"<html><body>502 Bad Gateway</body></html>"

        error = error_from_response(Response(502, body, None), method="GET", path="/x")

        assert isinstance(error, ServerError)
        assert (502, None, body.decode()) == (error.status, error.error_code, error.body)
        assert worth_retrying(error, idempotent=True)

    def test_long_html_body_truncated(self) -> None:
        """Keeps at most 2000 bytes of a non-JSON body."""
        error = error_from_response(Response(500, b"x" * 10_000, None), method="GET", path="/")

        assert "x" * 2000 == error.body

    def test_retry_after(self) -> None:
        """Reads Retry-After onto a 429 and marks it transient."""
        error = error_from_response(Response(429, b"", "7"), method="POST", path="/x")

        assert isinstance(error, RateLimitError)
        assert 7.0 == error.retry_after
        assert worth_retrying(error, idempotent=False)  # refused before acting: even a POST

    def test_retry_after_http_date(self) -> None:
        """Reads a Retry-After HTTP date in the future as a positive wait."""
        header = "Fri, 01 Jan 2100 00:00:00 GMT"

        error = error_from_response(Response(503, b"", header), method="GET", path="/x")

        assert isinstance(error, ServerError)
        assert error.retry_after is not None
        assert error.retry_after > 0

    def test_retry_after_garbage(self) -> None:
        """Ignores an unreadable Retry-After."""
        error = error_from_response(Response(503, b"", "later"), method="GET", path="/x")

        assert None is error.retry_after

    def test_credit_limit(self) -> None:
        """Turns a 400 credit-limit answer into a final CreditLimitError."""
        body = b'{"status":"error","errorCode":"WORKFLOW_CREDIT_LIMIT_REACHED"}'

        error = error_from_response(Response(400, body, None), method="POST", path="/run")

        assert isinstance(error, CreditLimitError)
        assert not worth_retrying(error, idempotent=True)

    def test_unprocessable_details(self) -> None:
        """Keeps a 422's details in the error body."""
        body = b'{"status":"error","errorCode":"INVALID","details":[{"field":"startVariables"}]}'

        error = error_from_response(Response(422, body, None), method="POST", path="/run")

        assert isinstance(error, BadRequestError)
        assert [{"field": "startVariables"}] == error.body["details"]

    @pytest.mark.parametrize("body", [b'{"errorCode": 5}', b"[1, 2]", b'"NOT_FOUND"', b"null"])
    def test_odd_json_body(self, body: bytes) -> None:
        """Ignores an errorCode that is not a string, or a body that is not an object."""
        error = error_from_response(Response(418, body, None), method="GET", path="/x")

        assert APIError is type(error)
        assert None is error.error_code

    @pytest.mark.parametrize(
        ("status", "transient"),
        [(s, True) for s in (429, 500, 502, 503, 504)]
        + [(s, False) for s in (400, 401, 403, 404, 422, 501)],
    )
    def test_transient_statuses(self, status: int, transient: bool) -> None:
        """Retries a GET only after 429, 500, 502, 503 and 504; a POST only after a 429."""
        error = error_from_response(Response(status, b"", None), method="GET", path="/x")

        assert (transient, status == 429) == (
            worth_retrying(error, idempotent=True),
            worth_retrying(error, idempotent=False),
        )


def test_envelope_error() -> None:
    """Raises the matching APIError for a 200 whose envelope says error."""
    body = b'{"status": "error", "errorCode": "NOT_FOUND"}'

    with pytest.raises(NotFoundError) as raised:
        read_answer(Response(200, body, None), method="GET", path="/x", answer="data")

    assert (200, "NOT_FOUND") == (raised.value.status, raised.value.error_code)


@pytest.mark.parametrize(
    ("answer", "body", "expected"),
    [
        ("data", b'{"status": "success", "data": {"id": "R"}}', {"id": "R"}),
        ("bare", b'{"total": 0, "data": []}', {"total": 0, "data": []}),
        ("ignored", b"<html>not read</html>", None),
    ],
)
def test_read_answer(answer: Any, body: bytes, expected: object) -> None:
    """Reads a success's data, its whole JSON, or nothing, as asked."""
    assert expected == read_answer(
        Response(200, body, None), method="GET", path="/x", answer=answer
    )


@pytest.mark.parametrize("body", [b"<html>", b'{"status": "success"}', b"[1]", b""])
def test_read_answer_garbled(body: bytes) -> None:
    """Raises ResponseFormatError for a 200 that is not the envelope expected."""
    with pytest.raises(ResponseFormatError):
        read_answer(Response(200, body, None), method="GET", path="/x", answer="data")


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
