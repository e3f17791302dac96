"""The one boundary with aiohttp: send a request, read its answer, translate failures.

Nothing from aiohttp, asyncio's timeouts or the JSON decoder leaves this module except as
a `CopyAIError`, raised once, ``from`` the original, with the API key scrubbed from
everything the server or the network sent back. `worth_retrying` is the one judge of
whether a failed try may be sent again.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import re
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Literal, cast

import aiohttp
import attrs
import yarl
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from multidict import CIMultiDict, CIMultiDictProxy

from ._errors import (
    APIConnectionError,
    APIError,
    CopyAIError,
    ResponseFormatError,
    error_class_for,
)
from ._models import describe, excerpt, parse_int
from ._policy import parse_retry_after
from ._pool import Slots

#: Bodies larger than this are refused rather than buffered without bound.
MAX_BODY_BYTES = 64 * 1024 * 1024

#: Answers that may go away if asked again: throttling and passing server trouble.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})

#: What the API key becomes wherever something sent back repeats it.
REDACTED = "[redacted]"

#: How an answer's body is read: the ``data`` of a ``{"status", "data"}`` envelope; a
#: JSON answer without one; or an undocumented body that is not read at all.
Answer = Literal["data", "bare", "ignored"]

_FINAL_CONNECT = (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)
_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# aiohttp's own timeouts are all off: `send` bounds a try itself, from the moment a
# connection is in hand, so that waiting for a free connection of the pool is not counted.
_NO_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=None)


@attrs.frozen
class Response:
    """An HTTP answer, read in full."""

    status: int
    body: bytes
    retry_after: str | None


@attrs.define
class _Try:
    """What the tracing hooks or `OwnConnector` tell `send` about one try in flight.

    ``seen`` once the try reached the connector: from then on ``sent`` is known, False
    until the request may have been written. Unseen (a mocked session), it is unknown.
    """

    timeout: float
    scope: asyncio.Timeout | None = None
    seen: bool = False
    sent: bool = False


async def _on_connection(_session: Any, context: Any, _params: Any) -> None:
    # A connection is in hand (reused, or about to be made): the try's time starts now.
    state = context.trace_request_ctx
    if isinstance(state, _Try) and state.scope is not None:
        state.seen = True
        state.scope.reschedule(asyncio.get_running_loop().time() + state.timeout)


async def _on_headers_sent(_session: Any, context: Any, _params: Any) -> None:
    # From here on the server may act on the request, answered or not.
    state = context.trace_request_ctx
    if isinstance(state, _Try):
        state.sent = True


def _tracing() -> aiohttp.TraceConfig:
    config = aiohttp.TraceConfig()
    config.on_connection_create_start.append(_on_connection)
    config.on_connection_reuseconn.append(_on_connection)
    config.on_request_headers_sent.append(_on_headers_sent)
    config.freeze()
    return config


_TRACING = _tracing()


#: The try in flight in this task, for the client's own connector to report to.
_CURRENT_TRY: ContextVar[_Try | None] = ContextVar("copyai_poll_try", default=None)


class OwnConnector(aiohttp.TCPConnector):
    """The connector of the client's own session: it tells `send` what tracing would.

    It marks the try in flight as seen when it starts connecting, and as possibly sent
    once its connection is in hand: a failure in between never wrote the request.
    """

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        state = _CURRENT_TRY.get()
        if state is not None:
            state.seen = True
        connection = await super().connect(req, traces, timeout)
        if state is not None:
            state.sent = True  # from here on, the request may reach the server
        return connection


def install_tracing(session: aiohttp.ClientSession) -> None:
    """Add that tracing to a session made elsewhere; it acts only on requests of `send`."""
    if _TRACING not in session.trace_configs:
        session.trace_configs.append(_TRACING)


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: yarl.URL,
    *,
    headers: Mapping[str, str],
    json_body: Any,
    request_timeout: float,
    secret: str,
    pool: Slots | None = None,
) -> Response:
    """Send one request and read its whole answer.

    ``request_timeout`` bounds connecting, sending and reading, counted from the moment
    a connection is in hand. Two ways to know that moment: a session whose connector
    has no limit of its own, with ``pool`` as its limit (the client's own session: the
    cheap way), or a session with `install_tracing` (a session made elsewhere).

    Raises:
        APIConnectionError: The try failed in transport; it knows whether the request
            was written, and carries no trace of ``secret``.
    """
    state = _Try(request_timeout)
    try:
        if pool is not None:
            # With a slot of the pool in hand, aiohttp's own timer is the try's timer,
            # and `OwnConnector` reports on the try.
            token = _CURRENT_TRY.set(state)
            try:
                async with pool:
                    resp, body = await _exchange(
                        session, method, url, headers, json_body, _total(request_timeout), None
                    )
            finally:
                _CURRENT_TRY.reset(token)
        else:
            # No deadline until a connection is in hand: the tracing hook sets it.
            async with asyncio.timeout(None) as scope:
                state.scope = scope
                resp, body = await _exchange(
                    session, method, url, headers, json_body, _NO_TIMEOUT, state
                )
    except (aiohttp.ClientError, TimeoutError, _BodyTooLarge) as exc:
        # Scrubbed first: the message of the error raised is made from what it says.
        raise translate(scrub(exc, secret), method, state, secret) from exc
    ok = 200 <= resp.status < 300
    return Response(resp.status, _scrub_body(body, secret, ok=ok), resp.headers.get("Retry-After"))


async def _exchange(
    session: aiohttp.ClientSession,
    method: str,
    url: yarl.URL,
    headers: Mapping[str, str],
    json_body: Any,
    timeout: aiohttp.ClientTimeout,
    state: _Try | None,
) -> tuple[aiohttp.ClientResponse, bytes]:
    async with session.request(
        method,
        url,
        headers=headers,
        json=json_body,
        timeout=timeout,
        # Typed as a Mapping, but aiohttp only hands it on to the tracing hooks.
        trace_request_ctx=cast("Mapping[str, Any] | None", state),
        allow_redirects=False,  # the key must never follow a redirect elsewhere
        raise_for_status=False,  # a borrowed session's own setting must not apply
    ) as resp:
        return resp, await _read_limited(resp)


@functools.lru_cache(maxsize=16)
def _total(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


def translate(exc: BaseException, method: str, state: _Try, secret: str) -> APIConnectionError:
    """The `APIConnectionError` users see for a failure of the transport."""
    if isinstance(exc, _BodyTooLarge):
        error = APIConnectionError(f"{method} answer is larger than {MAX_BODY_BYTES} bytes")
        error._final = True
    elif isinstance(exc, _FINAL_CONNECT):
        error = APIConnectionError(f"TLS failure talking to the API: {exc}")
        error._final = error._tls = True
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error = APIConnectionError(f"could not connect to the API: {exc}")
    elif isinstance(exc, TimeoutError):
        error = APIConnectionError(f"no answer from the API within {state.timeout:g}s")
    else:
        detail = str(exc) or type(exc).__name__
        error = APIConnectionError(f"connection to the API failed: {detail}")
    if isinstance(exc, _NOT_SENT):
        error._request_sent = False
    elif state.seen:  # the tracing hooks or `OwnConnector` know
        error._request_sent = state.sent
    error.args = (_scrub_value(error.args[0], secret),)
    return error


def scrub(exc: BaseException, secret: str) -> BaseException:
    """Remove ``secret`` from an exception chain that aiohttp built, in place.

    aiohttp errors carry the request's headers (the key among them) in their
    ``request_info`` and ``args``, and their messages can quote what a server sent back.
    The chain stays, for debugging; nothing in it can print the key.
    """
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        _scrub_one(current, secret)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return exc


def _scrub_one(exc: BaseException, secret: str) -> None:
    if isinstance(exc, aiohttp.ClientResponseError):
        info = exc.request_info
        exc.request_info = aiohttp.RequestInfo(
            info.url, info.method, CIMultiDictProxy(CIMultiDict()), info.real_url
        )
        exc.history = ()
        exc.headers = None
        exc.args = (exc.request_info, ())
    exc.args = tuple(_scrub_value(arg, secret) for arg in exc.args)
    # Every attribute, whatever its type: a `message`, a parser error's `headers`,
    # `__notes__`... An attribute that shows the key becomes its repr, redacted.
    for name, value in list(vars(exc).items()):
        scrubbed = _scrub_value(value, secret)
        if scrubbed is not value:
            setattr(exc, name, scrubbed)


def _scrub_value(value: Any, secret: str) -> Any:
    """``value`` without ``secret``: the very same object if it never showed it."""
    if isinstance(value, aiohttp.RequestInfo):
        return aiohttp.RequestInfo(
            value.url, value.method, CIMultiDictProxy(CIMultiDict()), value.real_url
        )
    if isinstance(value, str):
        scrubbed = _key_pieces(secret).sub(REDACTED, value)
        return value if scrubbed == value else scrubbed
    if isinstance(value, bytes):
        text = value.decode("utf-8", "surrogateescape")  # any bytes, and back unchanged
        scrubbed = _scrub_value(text, secret)
        return value if scrubbed is text else scrubbed.encode("utf-8", "surrogateescape")
    if type(value) in (list, tuple):  # not a named tuple: it could not be rebuilt so
        items = [_scrub_value(item, secret) for item in value]
        same = all(new is old for new, old in zip(items, value, strict=True))
        return value if same else type(value)(items)
    if isinstance(value, int | float | type(None)):
        return value
    text = repr(value)
    scrubbed = _scrub_value(text, secret)
    return value if scrubbed is text else scrubbed


#: The shortest end of the key that `_key_pieces` redacts on its own.
_MIN_PIECE = 4
#: The shortest key redacted from every answer's body. A body is data: a key as short as
#: a word ("docs", "test") would be cut out of every run's output holding that word. A
#: shorter key is redacted from error answers only, and only where it stands alone.
_MIN_BODY_KEY = 8


@functools.lru_cache(maxsize=8)
def _key_pieces(secret: str) -> re.Pattern[str]:
    """The key, and each of its ends down to `_MIN_PIECE` characters, longest first.

    aiohttp's parser errors quote the raw line they failed on, cut at a length limit or
    where one read from the socket ended: a line that echoes the key can show only its
    start, or only its end.
    """
    ends = [secret[:n] for n in range(len(secret), _MIN_PIECE - 1, -1)]
    ends += [secret[-n:] for n in range(len(secret) - 1, _MIN_PIECE - 1, -1)]
    return re.compile("|".join(map(re.escape, ends or [secret])))


@functools.lru_cache(maxsize=8)
def _spellings(secret: str) -> tuple[bytes, tuple[bytes, ...]]:
    """The key as bytes, and the escapes through which JSON could spell it otherwise."""
    return secret.encode(), (b"\\u", *(b"\\" + ch.encode() for ch in '/"\\' if ch in secret))


def _scrub_short_key(body: bytes, secret: str) -> bytes:
    """``body`` without ``secret`` where it stands alone (not inside a longer word)."""
    word = rb"(?<![A-Za-z0-9_\-])" + re.escape(secret.encode()) + rb"(?![A-Za-z0-9_\-])"
    return re.sub(word, REDACTED.encode(), body)


def _scrub_body(body: bytes, secret: str, *, ok: bool = True) -> bytes:
    """``body`` with ``secret`` redacted in every spelling the JSON decoder reads as it.

    Besides the plain echo, `json.loads` reads UTF-16 and UTF-32 and ``\\uXXXX``
    escapes: the key so spelled would reach an error's ``.body``, a message quoting the
    answer, or the document a `json.JSONDecodeError` keeps. Only the whole key is
    redacted from a body, which is data: a server that cut the key itself is not helped.
    A key shorter than `_MIN_BODY_KEY` (no real key is) is redacted only from an error
    answer (``ok`` False), whose text reaches exceptions, and only as a word of its own.
    """
    if len(secret) < _MIN_BODY_KEY:
        return body if ok else _scrub_short_key(body, secret)
    plain, escapes = _spellings(secret)
    if plain in body:
        body = body.replace(plain, REDACTED.encode())  # the usual echo, cheaply
    # Most bodies open with `{"`: UTF-8 (UTF-16 and UTF-32 have a BOM or a zero byte).
    utf8 = body[:2] == b'{"' or json.detect_encoding(body).startswith("utf-8")
    if utf8 and not any(escape in body for escape in escapes):
        return body  # no other spelling is possible: most bodies stop here
    encoding = json.detect_encoding(body)
    # Bad bytes survive as themselves in UTF-8; UTF-16 and UTF-32 cannot keep them.
    text = body.decode(encoding, "surrogateescape" if encoding.startswith("utf-8") else "replace")
    # Each character as itself, or as escapes of its UTF-16 code units (hex in any
    # case), or, for the three that have one, as a short escape.
    spellings = []
    for ch in secret:
        units = ch.encode("utf-16-be").hex()
        escaped = "".join(rf"\\u(?i:{units[i : i + 4]})" for i in range(0, len(units), 4))
        short = rf"|\\{re.escape(ch)}" if ch in '/"\\' else ""
        spellings.append(f"(?:{re.escape(ch)}|{escaped}{short})")
    text, found = re.subn("".join(spellings), REDACTED, text)
    # Written back as UTF-8, which the decoder reads too, whatever the body came in.
    return text.encode("utf-8", "surrogateescape") if found else body


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python accepts them, and would pass them on.
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every answer: `json.loads` with an option builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def parse_json(body: bytes | str) -> Any:
    """Decode a response body, or raise `ResponseFormatError`."""
    try:
        # As `json.loads` reads bytes (UTF-8, -16 or -32) and refuses a BOM in text.
        text = (
            body.decode(json.detect_encoding(body), "surrogatepass")
            if isinstance(body, bytes)
            else body
        )
        if text.startswith("\ufeff"):
            raise ValueError("a byte order mark is not JSON")
        return _DECODER.decode(text)
    # RecursionError: a hostile, deeply nested body must not escape as such.
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ResponseFormatError(f"response body is not JSON: {excerpt(body)}") from exc


def unwrap_data(payload: Any) -> Any:
    """Return the ``data`` of a ``{"status": "success", "data": ...}`` envelope."""
    if not isinstance(payload, Mapping) or "data" not in payload:
        raise ResponseFormatError(f"expected a success envelope, got {describe(payload)}")
    if payload.get("status", "success") != "success":
        raise ResponseFormatError(f"unexpected envelope status {payload.get('status')!r}")
    return payload["data"]


def parse_page(payload: Any) -> tuple[int | None, list[Any]]:
    """Split a list page (``{"total": N, "data": [...]}``) into its total and items."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("data"), list):
        raise ResponseFormatError(f"expected a page of results, got {describe(payload)}")
    return parse_int(payload.get("total")), payload["data"]


def read_answer(response: Response, *, method: str, path: str, answer: Answer) -> Any:
    """The decoded answer of a success: its ``data``, its whole JSON, or None.

    Raises:
        APIError: An error status, or a 2xx whose envelope says ``"status": "error"``;
            ``.retry_after`` holds the ``Retry-After`` header in seconds, if any.
        ResponseFormatError: A 2xx whose body is not the JSON expected.
    """
    if not 200 <= response.status < 300:
        raise error_from_response(response, method=method, path=path)
    if answer == "ignored":
        return None
    payload = parse_json(response.body)
    if isinstance(payload, Mapping) and payload.get("status") == "error":
        code = _error_code(payload)
        cls = error_class_for(response.status, code)
        raise cls(
            f"{method} {path} answered error {code}",
            status=response.status,
            error_code=code,
            body=payload,
        )
    return unwrap_data(payload) if answer == "data" else payload


def error_from_response(response: Response, *, method: str, path: str) -> APIError:
    """The `APIError` for a non-2xx answer."""
    try:
        body: Any = parse_json(response.body)
    except CopyAIError:
        body = response.body[:2000].decode("utf-8", "replace")
    code = _error_code(body)
    retry_after = parse_retry_after(response.retry_after)
    cls = error_class_for(response.status, code)
    message = f"{method} {path} answered {response.status}" + (f" {code}" if code else "")
    return cls(
        message, status=response.status, error_code=code, body=body, retry_after=retry_after
    )


def worth_retrying(error: CopyAIError, *, idempotent: bool) -> bool:
    """Whether a try that failed with ``error`` may be sent again.

    A 429 is the server refusing before it acts, so any request may retry it; other
    server trouble and garbled answers only for a request that is safe to send twice;
    a transport failure also for any request that surely never reached the server.
    """
    if isinstance(error, APIError):
        return error.status == 429 or (idempotent and error.status in TRANSIENT_STATUSES)
    if isinstance(error, APIConnectionError):
        return not error._final and (idempotent or not error._request_sent)
    return idempotent and isinstance(error, ResponseFormatError)


def _error_code(body: Any) -> str | None:
    """Copy.ai's ``errorCode``, if the body is an object that carries a string one."""
    code = body.get("errorCode") if isinstance(body, Mapping) else None
    return code if isinstance(code, str) else None


class _BodyTooLarge(Exception):
    pass


async def _read_limited(resp: aiohttp.ClientResponse) -> bytes:
    if resp.content_length is not None and resp.content_length <= MAX_BODY_BYTES:
        return await resp.read()  # a declared length within bounds: aiohttp reads no more
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
