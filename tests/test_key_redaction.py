"""The API key stays secret whatever a broken or echoing server sends back.

Each case is a raw TCP server on 127.0.0.1 that answers with scripted bytes, most of them
quoting the request it received, the ``x-copy-ai-api-key`` header included: a proxy page,
a malformed status or header line, a line cut at aiohttp's length limit or split across
reads, a body cut short, a JSON error spelling the key with escapes or in UTF-16. Whatever
comes out (exception chain, reprs, traceback, log records) must not show the key, nor any
run of `PIECE` of its characters.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import re
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import aiohttp.client_proto
import aiohttp.http_parser
import attrs
import pytest
import pytest_asyncio

from copyai_poll import CopyAIClient, CopyAIError, PollPolicy, RetryPolicy
from copyai_poll.testing import FakeCopyAI

#: Random enough that no run of `PIECE` of its characters turns up anywhere by chance.
SECRET = "Zq8Xw3Kp-vT6nY2mB9rL4cF7hJ1s"
#: The shortest run of the key's characters that counts as a leak.
PIECE = 6
WF = "WCFG-echo"
RUN = "WRUN-echo"
API_KEY_HEADER = b"x-copy-ai-api-key"

#: How a JSON encoder may spell the key: every character as a ``\\uXXXX`` escape.
ESCAPED = "".join(f"\\u{ord(ch):04x}" for ch in SECRET)

RETRY = RetryPolicy(attempts=2, initial=0, maximum=0, jitter=0)
POLL = PollPolicy(initial=0.001, maximum=0.001, outage_grace=0, not_found_grace=0)
#: A ceiling for a poll that should end at its first failure anyway.
POLL_TIMEOUT = 5.0


class Pause:
    """Let the client read what was sent so far on its own, before sending the rest."""


class Reset:
    """Abort the connection (a TCP reset), the rest unsent."""


class Stall:
    """Send nothing more; wait until the client gives up."""


Step = bytes | type[Pause] | type[Reset] | type[Stall]


@attrs.frozen
class Echo:
    """A scripted answer to a request, and how the key travels in it."""

    answer: Callable[[bytes], list[Step]]
    #: The key as it is spelled on the wire in this answer: proof that it was echoed.
    spelled: bytes = SECRET.encode()
    #: The client's ``request_timeout``: short only where the server stalls on purpose
    #: (nothing is asserted about time).
    request_timeout: float = 30.0


# -- building answers ----------------------------------------------------------------------


def _flat(request: bytes) -> bytes:
    """The request on one line, as a proxy might quote it in a status or header line."""
    return request.replace(b"\r\n", b" | ")


def _page(request: bytes) -> bytes:
    """A proxy's HTML error page that shows the request it received."""
    return b"<html><body><h1>Bad Gateway</h1><pre>" + request + b"</pre></body></html>"


def _http(status_line: str, body: bytes, *headers: str, ctype: str = "text/html") -> bytes:
    head = "".join(f"{header}\r\n" for header in headers)
    return (
        f"HTTP/1.1 {status_line}\r\nContent-Type: {ctype}\r\n{head}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def _json(status_line: str, payload: Any) -> bytes:
    return _http(status_line, json.dumps(payload).encode(), ctype="application/json")


def _cut_in_key(request: bytes) -> bytes:
    """The request's key header in a line too long for aiohttp, the key across byte 100.

    aiohttp's `LineTooLong` quotes 100 bytes, from the status line's reason or the
    header's value (C parser) or from the line's start (Python parser): the key starts
    at byte 80 here, so that each of them cuts it.
    """
    start = request.index(API_KEY_HEADER)
    header = request[start : request.index(b"\r\n", start)]
    padding = b"." * (80 - len(API_KEY_HEADER + b": "))
    return padding + header + b"." * 10_000


#: What a read that ends inside the key carries of it.
FIRST_HALF = SECRET[: len(SECRET) // 2].encode()


def _split_in_key(data: bytes) -> list[Step]:
    """``data`` sent in two reads, the first ending inside the key."""
    cut = data.index(SECRET.encode()) + len(FIRST_HALF)
    return [data[:cut], Pause, data[cut:]]


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"


def _text(request: bytes) -> str:
    """The request as a JSON string field would quote it."""
    return request.decode("latin-1")


CASES = {
    # A malformed status line that quotes the request: aiohttp's parser error quotes it.
    "status line echoes the request": Echo(
        lambda req: [b"HTTP/1.1 2x0 " + _flat(req) + b"\r\n\r\n"]
    ),
    # A line past aiohttp's limit: its error quotes the line's first 100 bytes, mid-key.
    "status line too long": Echo(lambda req: [b"HTTP/1.1 200 " + _cut_in_key(req) + b"\r\n"]),
    # The same line in two reads: the parser's error quotes only the read it failed in,
    # here the first, which ends with the start of the key (the client then hangs up).
    "status line split in the key": Echo(
        lambda req: _split_in_key(b"HTTP/1.1 2x0 " + _flat(req) + b"\r\n\r\n"),
        spelled=FIRST_HALF,
    ),
    "reason phrase echoes the request": Echo(
        lambda req: [b"HTTP/1.1 200 OK " + _flat(req) + b"\x01\r\n\r\n"]
    ),
    "reason phrase holds the key": Echo(
        lambda req: [_http(f"502 Bad Gateway for {SECRET}", _page(req))]
    ),
    "header line echoes the request": Echo(
        lambda req: [b"HTTP/1.1 200 OK\r\nX-Echo " + _flat(req) + b"\r\n\r\n"]
    ),
    "header line too long": Echo(
        lambda req: [b"HTTP/1.1 200 OK\r\nX-Echo: " + _cut_in_key(req) + b"\r\n\r\n"]
    ),
    "header line split in the key": Echo(
        lambda req: _split_in_key(b"HTTP/1.1 200 OK\r\nX-Echo " + _flat(req) + b"\r\n\r\n"),
        spelled=FIRST_HALF,
    ),
    # A header name that ends in the key, split in it: the parser fails in the second
    # read, and its error quotes the end of the key.
    "header name split in the key": Echo(
        lambda req: _split_in_key(b"HTTP/1.1 200 OK\r\nX-Key-%s is bad\r\n\r\n" % SECRET.encode())
    ),
    "content-length echoes the request": Echo(
        lambda req: [b"HTTP/1.1 200 OK\r\nContent-Length: " + _flat(req) + b"\r\n\r\n"]
    ),
    "chunk size echoes the request": Echo(lambda req: [CHUNKED + _flat(req) + b"\r\n"]),
    "3xx headers carry the key": Echo(
        lambda req: [
            _http(
                "302 Found",
                _page(req),
                f"Location: https://elsewhere.example/?key={SECRET}",
                f"Set-Cookie: key={SECRET}",
                f"X-Echo-Key: {SECRET}",
            )
        ]
    ),
    "retry-after holds the key": Echo(
        lambda req: [_http("503 Service Unavailable", _page(req), f"Retry-After: {SECRET}")]
    ),
    "200 html page echoes the request": Echo(lambda req: [_http("200 OK", _page(req))]),
    "502 html page echoes the request": Echo(lambda req: [_http("502 Bad Gateway", _page(req))]),
    "502 gzip html page echoes the request": Echo(
        lambda req: [
            _http("502 Bad Gateway", gzip.compress(_page(req)), "Content-Encoding: gzip")
        ],
        spelled=b"",  # compressed on the wire; checked below through what the client read
    ),
    "broken gzip body echoes the request": Echo(
        lambda req: [_http("200 OK", b"\x1f\x8b" + _page(req), "Content-Encoding: gzip")]
    ),
    "400 json fields echo the key": Echo(
        lambda req: [
            _json(
                "400 Bad Request",
                {
                    "status": "error",
                    "errorCode": f"BAD_KEY_{SECRET}",
                    "message": f"invalid key {SECRET}",
                    "request": _text(req),
                },
            )
        ]
    ),
    "404 json fields echo the key": Echo(
        lambda req: [
            _json(
                "404 Not Found",
                {"status": "error", "errorCode": "NOT_FOUND", "request": _text(req)},
            )
        ]
    ),
    "200 error envelope echoes the key": Echo(
        lambda req: [
            _json(
                "200 OK",
                {"status": "error", "errorCode": SECRET, "data": {"request": _text(req)}},
            )
        ]
    ),
    "200 data that is no run quotes the key": Echo(
        lambda req: [_json("200 OK", {"status": "success", "data": f"your key: {SECRET}"})]
    ),
    "400 json spells the key with escapes": Echo(
        lambda req: [
            _http(
                "400 Bad Request",
                b'{"status": "error", "errorCode": "BAD", "key": "%s"}' % ESCAPED.encode(),
                ctype="application/json",
            )
        ],
        spelled=ESCAPED.encode(),
    ),
    "200 data spells the key with escapes": Echo(
        lambda req: [
            _http(
                "200 OK",
                b'{"status": "success", "data": "%s"}' % ESCAPED.encode(),
                ctype="application/json",
            )
        ],
        spelled=ESCAPED.encode(),
    ),
    "400 json in utf-16 echoes the key": Echo(
        lambda req: [
            _http(
                "400 Bad Request",
                json.dumps({"status": "error", "key": SECRET}).encode("utf-16"),
                ctype="application/json; charset=utf-16",
            )
        ],
        spelled=SECRET.encode("utf-16-le"),
    ),
    "200 garbled utf-16 echoes the key": Echo(
        lambda req: [
            _http(
                "200 OK",
                f'{{"status": "success" "{SECRET}"'.encode("utf-16-le"),
                ctype="application/json",
            )
        ],
        spelled=SECRET.encode("utf-16-le"),
    ),
    "connection closed mid-body after the echo": Echo(
        lambda req: [b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + _page(req)]
    ),
    "connection reset mid-body after the echo": Echo(
        lambda req: [
            b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + _page(req),
            Pause,
            Reset,
        ]
    ),
    "chunked body cut short after the echo": Echo(
        lambda req: [CHUNKED + b"%x\r\n" % (len(_page(req)) + 100) + _page(req)]
    ),
    "stall mid-body after the echo": Echo(
        lambda req: [b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + _page(req), Stall],
        request_timeout=0.3,
    ),
}

# -- the server ----------------------------------------------------------------------------


@attrs.define
class Wire:
    """What crossed the wire: the requests received and the bytes sent back."""

    received: list[bytes] = attrs.Factory(list)
    sent: list[bytes] = attrs.Factory(list)


async def _play(
    echo: Echo, wire: Wire, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    request = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", request)
    if length:
        request += await reader.readexactly(int(length.group(1)))
    wire.received.append(request)
    for step in echo.answer(request):
        if step is Pause:
            await writer.drain()
            await asyncio.sleep(0.05)  # time for the client to read it as a read of its own
        elif step is Reset:
            writer.transport.abort()
            return
        elif step is Stall:
            await reader.read()  # until the client gives up and closes
            return
        else:
            assert isinstance(step, bytes)
            wire.sent.append(step)
            writer.write(step)
            await writer.drain()


@pytest_asyncio.fixture
async def echo_server() -> AsyncIterator[Callable[[Echo], Awaitable[tuple[str, Wire]]]]:
    """Start servers on 127.0.0.1 that answer each request with an `Echo`'s script."""
    servers: list[asyncio.Server] = []
    handlers: set[asyncio.Task[Any]] = set()

    async def start(echo: Echo) -> tuple[str, Wire]:
        wire = Wire()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await _play(echo, wire, reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # the client hung up first: the answer it saw is the test
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/api", wire

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
    # Every client is closed by now, so every handler ends on its own.
    await asyncio.gather(*handlers)


@pytest.fixture(params=["c", "python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """aiohttp's response parser: its C one, or the pure-Python one (AIOHTTP_NO_EXTENSIONS).

    Their errors quote different parts of what the server sent.
    """
    if request.param == "python":
        python_parser = aiohttp.http_parser.HttpResponseParserPy
        monkeypatch.setattr(aiohttp.client_proto, "HttpResponseParser", python_parser)
    return str(request.param)


# -- where the key could show --------------------------------------------------------------


def _pieces(text: str) -> list[str]:
    """The runs of `PIECE` characters of the key in ``text``, plain or ``\\u``-escaped."""
    runs = {SECRET[i : i + PIECE] for i in range(len(SECRET) - PIECE + 1)}
    escaped = {ESCAPED[6 * i : 6 * (i + PIECE)] for i in range(len(SECRET) - PIECE + 1)}
    return sorted(run for run in runs | escaped if run in text)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """Every exception reachable from ``exc``: causes, contexts and group members."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__]
        linked += list(getattr(current, "exceptions", ()))
        pending.extend(e for e in linked if isinstance(e, BaseException))


def _exception_texts(exc: BaseException) -> dict[str, str]:
    """Every text a user, a log or a traceback can get from ``exc``, by where it came from."""
    texts = {"traceback": "".join(traceback.format_exception(exc))}
    for n, link in enumerate(_chain(exc)):
        where = f"chain[{n}] {type(link).__name__}"
        texts[f"{where} str"] = str(link)
        texts[f"{where} repr"] = repr(link)
        texts[f"{where} args"] = repr(link.args)
        for name, value in vars(link).items():  # .body, .message, .request_info, __notes__...
            texts[f"{where} .{name}"] = repr(value)
    return texts


def _record_texts(records: list[logging.LogRecord]) -> dict[str, str]:
    """Every text of captured log records: message, args, extra fields, formatted traceback."""
    formatter = logging.Formatter()
    texts = {}
    for n, record in enumerate(records):
        where = f"log[{n}] {record.name} {record.levelname}"
        texts[f"{where} message"] = record.getMessage()
        texts[f"{where} args"] = repr(record.args)
        texts[f"{where} fields"] = repr(vars(record))  # extra fields included
        texts[f"{where} formatted"] = formatter.format(record)  # exc_info and stack too
    return texts


def _leaks(texts: dict[str, str]) -> dict[str, list[str]]:
    return {where: found for where, text in texts.items() if (found := _pieces(text))}


# -- the tests -----------------------------------------------------------------------------

Operation = Callable[[CopyAIClient], Awaitable[Any]]

OPERATIONS: dict[str, Operation] = {
    "get_run": lambda client: client.get_run(WF, RUN),
    "start_run": lambda client: client.start_run(WF, {"topic": "echo"}),
    "poll_until_done": lambda client: client.poll_until_done(
        WF, RUN, policy=POLL, timeout=POLL_TIMEOUT
    ),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize("case", list(CASES))
async def test_the_key_never_shows_after_a_failure(
    case: str,
    operation: str,
    parser: str,
    echo_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failure provoked by an answer that echoes the key shows the key nowhere."""
    echo = CASES[case]
    base_url, wire = await echo_server(echo)
    caplog.set_level(logging.DEBUG)
    async with CopyAIClient(
        api_key=SECRET, base_url=base_url, retry=RETRY, request_timeout=echo.request_timeout
    ) as client:
        with pytest.raises(CopyAIError) as caught:
            await OPERATIONS[operation](client)
        texts = {"client repr": repr(client), **_exception_texts(caught.value)}
    texts |= _record_texts(caplog.records)

    # Not vacuous: the key went out, and came back.
    assert SECRET.encode() in b"".join(wire.received)
    assert echo.spelled in b"".join(wire.sent)
    assert {} == _leaks(texts)


@pytest.mark.asyncio
async def test_a_gzip_page_really_carries_the_key_to_the_client(echo_server: Any) -> None:
    """The gzip case is not vacuous: decompressed, the page it sends holds the key."""
    base_url, wire = await echo_server(CASES["502 gzip html page echoes the request"])
    async with aiohttp.ClientSession() as session:
        headers = {"x-copy-ai-api-key": SECRET}
        async with session.get(f"{base_url}/workflow/{WF}/run/{RUN}", headers=headers) as resp:
            assert SECRET in await resp.text()
    assert [] == _pieces(repr(wire.sent))


def test_the_leak_finder_finds_a_piece_of_the_key_deep_in_a_chain() -> None:
    """The checks above can fail: a piece of the key in a chained exception is found."""
    try:
        try:
            raise aiohttp.ClientPayloadError(f"bad line: b'{SECRET[:PIECE]}...'")
        except aiohttp.ClientError as inner:
            raise CopyAIError("failed") from inner
    except CopyAIError as exc:
        leaks = _leaks(_exception_texts(exc))
    assert [SECRET[:PIECE]] == leaks["traceback"]
    assert [SECRET[:PIECE]] == leaks["chain[1] ClientPayloadError str"]


@pytest.mark.asyncio
async def test_an_answer_without_the_key_reaches_the_caller_unchanged(echo_server: Any) -> None:
    """Redaction alters no other data: escapes, odd bytes and pieces of the key all stay."""
    output = f'caf\u00e9 \\ "quoted" a/b {SECRET[:PIECE]} {SECRET[-PIECE:]}'
    data = {"id": RUN, "workflowId": WF, "status": "COMPLETE", "output": {"text": output}}
    payload = json.dumps({"status": "success", "data": data}).replace("/", "\\/").encode()
    base_url, _ = await echo_server(Echo(lambda req: [_http("200 OK", payload)], spelled=b""))
    async with CopyAIClient(api_key=SECRET, base_url=base_url, retry=RETRY) as client:
        run = await client.get_run(WF, RUN)
    assert {"text": output} == dict(run.output)


@pytest.mark.asyncio
async def test_a_key_as_short_as_a_word_does_not_corrupt_answers() -> None:
    """A test key like "a" or "docs" is not cut out of the data of every answer."""
    async with (
        FakeCopyAI(api_key="a") as fake,
        CopyAIClient(api_key="a", base_url=fake.base_url) as client,
    ):
        started = await client.start_run("WCFG-abc", {"Input 1": "a banana"})
        run = await client.get_run("WCFG-abc", started.id)
    assert {"Input 1": "a banana"} == dict(run.input)
    assert "WCFG-abc" == run.workflow_id
