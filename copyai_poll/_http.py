"""The one boundary with aiohttp: send a request, read its answer, translate failures.

Nothing from aiohttp, asyncio's timeouts or the JSON decoder leaves this module except as
a `CopyAIError`, raised ``from`` the original. Each translated error also says whether
the request may have reached the server (which decides whether a POST may be retried)
and whether it is worth retrying at all.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import attrs
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

from ._errors import APIConnectionError, APIError, CopyAIError, error_class_for
from ._models import parse_json
from ._policy import parse_retry_after

#: Bodies larger than this are refused rather than buffered without bound.
MAX_BODY_BYTES = 64 * 1024 * 1024

#: Answers that may go away if asked again: throttling and passing server trouble.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})

_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
_FINAL_CONNECT = (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)


@attrs.frozen
class Response:
    """An HTTP answer, read in full."""

    status: int
    body: bytes
    retry_after: str | None


@attrs.frozen
class Failure:
    """Why one try failed, and what may be done about it."""

    error: CopyAIError
    transient: bool
    reached_server: bool


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: yarl.URL,
    *,
    headers: Mapping[str, str],
    json_body: Any,
    request_timeout: float,
) -> Response | Failure:
    """Send one request and read its whole answer; never raises a network error."""
    try:
        async with session.request(
            method,
            url,
            headers=headers,
            json=json_body,
            timeout=aiohttp.ClientTimeout(total=request_timeout),
            allow_redirects=False,  # the key must never follow a redirect elsewhere
            raise_for_status=False,  # a borrowed session's own setting must not apply
        ) as resp:
            body = await _read_limited(resp)
            return Response(resp.status, body, resp.headers.get("Retry-After"))
    except (aiohttp.ClientError, TimeoutError, _BodyTooLarge) as exc:
        return translate(exc, method=method, request_timeout=request_timeout)


def translate(exc: BaseException, *, method: str, request_timeout: float) -> Failure:
    """Map a failure of the transport to the `CopyAIError` users see."""
    if isinstance(exc, _BodyTooLarge):
        error: CopyAIError = APIConnectionError(
            f"{method} answer is larger than {MAX_BODY_BYTES} bytes; refused"
        )
        return _caused(Failure(error, transient=False, reached_server=True), exc)
    if isinstance(exc, _FINAL_CONNECT):
        error = APIConnectionError(f"TLS failure talking to the API: {exc}")
        return _caused(Failure(error, transient=False, reached_server=False), exc)
    if isinstance(exc, _NOT_SENT):
        error = APIConnectionError(f"could not connect to the API: {exc}")
        return _caused(Failure(error, transient=True, reached_server=False), exc)
    if isinstance(exc, TimeoutError):
        error = APIConnectionError(f"no answer from the API within {request_timeout:g}s")
        return _caused(Failure(error, transient=True, reached_server=True), exc)
    detail = str(exc) or type(exc).__name__
    error = APIConnectionError(f"connection to the API failed: {detail}")
    return _caused(Failure(error, transient=True, reached_server=True), exc)


def _caused(failure: Failure, exc: BaseException) -> Failure:
    failure.error.__cause__ = _without_secrets(exc)
    return failure


def _without_secrets(exc: BaseException) -> BaseException:
    """Blank the request headers (the API key among them) that aiohttp errors carry.

    The error stays chained for debugging, but its repr must not print the key.
    """
    if isinstance(exc, aiohttp.ClientResponseError):
        info = exc.request_info
        exc.request_info = aiohttp.RequestInfo(
            info.url, info.method, CIMultiDictProxy(CIMultiDict()), info.real_url
        )
        exc.history = ()
    return exc


def error_from_response(response: Response, *, method: str, path: str) -> Failure:
    """The `APIError` for a non-2xx answer."""
    try:
        body: Any = parse_json(response.body)
    except CopyAIError:
        body = response.body[:2000].decode("utf-8", "replace")
    code = _error_code(body)
    retry_after = parse_retry_after(response.retry_after)
    cls = error_class_for(response.status, code)
    message = f"{method} {path} answered {response.status}" + (f" {code}" if code else "")
    error = cls(
        message, status=response.status, error_code=code, body=body, retry_after=retry_after
    )
    transient = response.status in TRANSIENT_STATUSES
    return Failure(error, transient=transient, reached_server=True)


def envelope_error(payload: Any, *, status: int, method: str, path: str) -> APIError | None:
    """The `APIError` for a 2xx answer whose envelope says ``"status": "error"``."""
    if not isinstance(payload, Mapping) or payload.get("status") != "error":
        return None
    code = _error_code(payload)
    cls = error_class_for(status, code)
    return cls(
        f"{method} {path} answered error {code}", status=status, error_code=code, body=payload
    )


def _error_code(body: Any) -> str | None:
    """Copy.ai's ``errorCode``, if the body is an object that carries a string one."""
    code = body.get("errorCode") if isinstance(body, Mapping) else None
    return code if isinstance(code, str) else None


class _BodyTooLarge(Exception):
    pass


async def _read_limited(resp: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def is_loopback(host: str | None) -> bool:
    """True for localhost and loopback addresses, where plain http cannot be sniffed."""
    if not host:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@attrs.define
class RateLimiter:
    """Spaces the starts of requests at least ``1/rate`` seconds apart, across tasks.

    Each caller reserves the next free slot before it sleeps, so no burst can form
    however many tasks arrive together. A cancelled waiter only leaves its slot unused.
    """

    rate: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _next_slot: float = attrs.field(default=float("-inf"), init=False)

    def __attrs_post_init__(self) -> None:
        if not (self.rate > 0) or self.rate == float("inf"):
            raise ValueError(f"max_requests_per_second must be > 0, got {self.rate!r}")

    async def acquire(self) -> None:
        """Wait for this caller's slot."""
        now = self.clock()
        slot = max(now, self._next_slot)
        self._next_slot = slot + 1 / self.rate
        if slot > now:
            await self.sleep(slot - now)
