"""`WebhookReceiver` over HTTP: the token, what it accepts, what it refuses, and ASGI."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yarl
from aiohttp import web

from copyai_poll import WebhookReceiver

SECRET_MARK = "do-not-log-this-body"


class Woken:
    """A waiter that counts its wakes."""

    def __init__(self) -> None:
        self.count = 0

    def wake(self) -> None:
        self.count += 1


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[WebhookReceiver, str]]:
    """A receiver served alone on 127.0.0.1, and its URL."""
    receiver = WebhookReceiver()
    async with receiver.serve() as url:
        yield receiver, url


async def post(url: str, data: Any = None, method: str = "POST", **kw: Any) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=data, **kw) as response,
    ):
        await response.read()
        return response.status


def test_the_default_token_is_long_random_and_url_safe() -> None:
    """Each receiver draws its own token of at least 32 URL-safe characters."""
    first, second = WebhookReceiver(), WebhookReceiver()

    assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", first.token)
    assert first.token != second.token
    assert "/" + first.token == first.path


def test_the_repr_never_shows_the_token() -> None:
    """The token is the URL's only secret, so the repr leaves it out."""
    receiver = WebhookReceiver("a-token-of-my-own-choosing")

    assert "a-token-of-my-own-choosing" not in repr(receiver)
    assert "WebhookReceiver" in repr(receiver)


@pytest.mark.parametrize(
    ("token", "limit"),
    [("short", 1), ("has/a/slash/in/it/x", 1), ("spaces are not ok here", 1), (None, 0)],
)
def test_bad_settings_are_a_value_error(token: str | None, limit: int) -> None:
    """A short or non URL-safe token, or a body limit below 1, is refused at construction."""
    with pytest.raises(ValueError, match=r"token|max_body_bytes"):
        WebhookReceiver(token, max_body_bytes=limit)


@pytest.mark.asyncio
async def test_a_delivery_is_answered_204_and_wakes_its_run(
    served: tuple[WebhookReceiver, str],
) -> None:
    """POST of a run object at the URL: 204, and the run's waiter is woken once."""
    receiver, url = served
    waiter = Woken()
    receiver._attach("WRUN-1", waiter)
    body = {"id": "WRUN-1", "status": "COMPLETE", "type": "workflowRun.completed"}

    status = await post(url, json=body)

    assert (204, 1) == (status, waiter.count)


@pytest.mark.asyncio
async def test_other_paths_are_404_and_wake_nothing(served: tuple[WebhookReceiver, str]) -> None:
    """A wrong token, a longer path or the root is a 404, and wakes no one."""
    receiver, url = served
    waiter = Woken()
    receiver._attach("WRUN-1", waiter)
    body = json.dumps({"id": "WRUN-1"})
    base = url.rsplit("/", 1)[0]

    statuses = [
        await post(base + "/" + "x" * len(receiver.token), body),
        await post(url + "/more", body),
        await post(base + "/", body),
        await post(base + "/" + receiver.token[:-1], body),
    ]

    assert ([404] * 4, 0) == (statuses, waiter.count)


@pytest.mark.asyncio
async def test_other_methods_are_405(served: tuple[WebhookReceiver, str]) -> None:
    """GET, PUT or DELETE at the receiver's URL is a 405 that allows POST."""
    _, url = served
    async with aiohttp.ClientSession() as session:
        for method in ("GET", "PUT", "DELETE"):
            async with session.request(method, url) as response:
                assert (405, "POST") == (response.status, response.headers["Allow"])


BAD_BODIES = {
    "not JSON": (b"{not json", 400),
    "not UTF-8": (b'{"id": "\xff"}', 400),
    "NaN": (b'{"id": "WRUN-1", "x": NaN}', 400),
    "an array": (b'[{"id": "WRUN-1"}]', 400),
    "a string": (b'"WRUN-1"', 400),
    "empty": (b"", 400),
    "deeply nested": (b'{"id": "WRUN-1", "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", 400),
    "missing ids": (b'{"type": "workflowRun.completed", "status": "COMPLETE"}', 400),
    "id not a string": (b'{"id": 12345}', 400),
    "id a list": (b'{"workflowRunId": ["WRUN-1"]}', 400),
    "id empty": (b'{"id": ""}', 400),
    "id too long": (json.dumps({"id": "W" * 10_000}).encode(), 400),
    "type not a string": (b'{"id": "WRUN-1", "type": {"a": 1}}', 400),
    "10 MB": (b'{"id": "WRUN-1", "x": "' + b"a" * 10_000_000 + b'"}', 413),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("case", list(BAD_BODIES))
async def test_bad_bodies_get_their_4xx_calmly(
    case: str, served: tuple[WebhookReceiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Each hostile body gets its 4xx, wakes no one, and logs no exception (nor the body)."""
    receiver, url = served
    waiter = Woken()
    receiver._attach("WRUN-1", waiter)
    raw, expected = BAD_BODIES[case]
    caplog.set_level(logging.DEBUG)

    status = await post(url, io.BytesIO(raw))  # a stream: aiohttp warns of large bytes

    assert (expected, 0) == (status, waiter.count)
    assert [] == [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.asyncio
async def test_a_large_body_without_a_length_is_cut_off_at_the_bound(
    served: tuple[WebhookReceiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A chunked body (no Content-Length) is read only up to max_body_bytes, then 413."""
    _, url = served

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 100_000

    status = await post(url, chunks())

    assert 413 == status
    assert [] == [r for r in caplog.records if r.exc_info]


@pytest.mark.asyncio
async def test_the_body_is_never_logged_above_debug(
    served: tuple[WebhookReceiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Neither an accepted nor a refused body reaches the log, at any level."""
    receiver, url = served
    caplog.set_level(logging.DEBUG)

    await post(url, json={"id": "WRUN-1", "output": SECRET_MARK})
    await post(url, json=[SECRET_MARK])

    assert SECRET_MARK not in caplog.text
    assert receiver.token not in caplog.text


@pytest.mark.asyncio
async def test_the_body_limit_is_exact() -> None:
    """A body of exactly max_body_bytes is read; one byte more is a 413."""
    receiver = WebhookReceiver(max_body_bytes=64)
    fits = json.dumps({"id": "WRUN-1"}).encode().ljust(64)
    async with receiver.serve() as url:
        statuses = [await post(url, fits), await post(url, fits + b" ")]

    assert [204, 413] == statuses


@pytest.mark.asyncio
async def test_mounted_with_add_subapp() -> None:
    """receiver.app mounted under a prefix answers at prefix + path, and only there."""
    receiver = WebhookReceiver()
    waiter = Woken()
    receiver._attach("WRUN-1", waiter)
    outer = web.Application()
    outer.add_subapp("/copyai", receiver.app)
    runner = web.AppRunner(outer, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        body = json.dumps({"workflowRunId": "WRUN-1"})
        statuses = [
            await post(base + "/copyai" + receiver.path, body),
            await post(base + receiver.path, body),
        ]
    finally:
        await runner.cleanup()

    assert ([204, 404], 1) == (statuses, waiter.count)
    assert receiver.app is receiver.app


@pytest.mark.asyncio
async def test_serve_leaves_nothing_listening() -> None:
    """After serve() exits, its port no longer answers."""
    receiver = WebhookReceiver()
    async with receiver.serve() as url:
        assert 204 == await post(url, json={"id": "WRUN-1"})

    with pytest.raises(aiohttp.ClientConnectionError):
        await post(url, json={"id": "WRUN-1"})


# -- ASGI ------------------------------------------------------------------------------


class AsgiCall:
    """One request to an ASGI app, in memory: what it was sent back."""

    def __init__(
        self, path: str, method: str = "POST", chunks: list[bytes] | None = None, **scope: Any
    ) -> None:
        self.scope: dict[str, Any] = {
            "type": "http",
            "method": method,
            "path": path,
            "headers": [],
            **scope,
        }
        self.chunks = list(chunks if chunks is not None else [b""])
        self.sent: list[dict[str, Any]] = []
        self.received = 0

    async def receive(self) -> dict[str, Any]:
        self.received += 1
        if not self.chunks:
            return {"type": "http.disconnect"}
        chunk = self.chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}

    async def send(self, message: Any) -> None:
        self.sent.append(message)

    async def run(self, receiver: WebhookReceiver) -> int | None:
        await receiver.asgi(self.scope, self.receive, self.send)
        return self.sent[0]["status"] if self.sent else None


@pytest.mark.asyncio
async def test_asgi_delivery_below_a_mount_point() -> None:
    """Under root_path /copyai, POST /copyai/<token> is 204 and wakes; other paths are 404."""
    receiver = WebhookReceiver()
    waiter = Woken()
    receiver._attach("WRUN-1", waiter)
    body = json.dumps({"id": "WRUN-1"}).encode()

    ok = await AsgiCall("/copyai" + receiver.path, root_path="/copyai", chunks=[body]).run(
        receiver
    )
    alone = await AsgiCall(receiver.path, chunks=[body[:5], body[5:]]).run(receiver)
    wrong = await AsgiCall("/copyai/nope", root_path="/copyai", chunks=[body]).run(receiver)

    assert (204, 204, 404, 2) == (ok, alone, wrong, waiter.count)


@pytest.mark.asyncio
async def test_asgi_refusals() -> None:
    """ASGI: 405 with Allow, 413 by Content-Length unread or by size read, 400 for junk."""
    receiver = WebhookReceiver(max_body_bytes=10)
    get = AsgiCall(receiver.path, method="GET")
    declared = AsgiCall(receiver.path, headers=[(b"content-length", b"11")], chunks=[b"x" * 11])
    streamed = AsgiCall(receiver.path, chunks=[b"x" * 6, b"x" * 6, b"x" * 6])

    statuses = [
        await get.run(receiver),
        await declared.run(receiver),
        await streamed.run(receiver),
        await AsgiCall(receiver.path, chunks=[b"[]"]).run(receiver),
    ]

    assert [405, 413, 413, 400] == statuses
    assert [(b"allow", b"POST")] == get.sent[0]["headers"]
    assert (0, 2) == (declared.received, streamed.received)


@pytest.mark.asyncio
async def test_asgi_client_gone_and_lifespan() -> None:
    """A client that disconnects gets no answer; the lifespan protocol is acknowledged."""
    receiver = WebhookReceiver()
    gone = await AsgiCall(receiver.path, chunks=[]).run(receiver)
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    await receiver.asgi({"type": "lifespan"}, receive, send)
    await receiver.asgi({"type": "websocket"}, receive, send)

    assert gone is None
    assert ["lifespan.startup.complete", "lifespan.shutdown.complete"] == sent


@pytest.mark.asyncio
async def test_a_sender_gone_mid_body_leaves_no_error_in_the_log(
    served: tuple[WebhookReceiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A delivery whose sender hangs up halfway wakes nothing and logs nothing above DEBUG."""
    receiver, url = served
    waiter = Woken()
    receiver._attach("WRUN-1", waiter)
    parsed = yarl.URL(url)
    with caplog.at_level(logging.INFO):
        _reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
        writer.write(
            f"POST {parsed.path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n".encode()
            + b'{"workflowRunId": "WRUN-1", "pad": "'
        )
        await writer.drain()
        writer.transport.abort()  # a reset, not a clean close
        # A whole delivery after it, answered: the server has been through the first.
        assert 204 == await post(url, data=json.dumps({"workflowRunId": "WRUN-1"}))

    assert 1 == waiter.count
    assert [] == [r for r in caplog.records if r.levelno >= logging.WARNING]
