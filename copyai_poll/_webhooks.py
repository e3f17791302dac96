"""`WebhookReceiver`: Copy.ai's deliveries wake the waits of their runs.

Deliveries are unsigned, so one is only a hint to look now: it wakes the waiters of the
run it names, and each of them confirms with a GET of its own. Nothing a delivery says is
ever reported as a run's state, so a forged one costs at most a request.

The receiver keeps a registry run id -> waiters (anything with ``wake()``). A delivery is
read with a bound, checked, and answered before any waiter runs: ``wake`` only schedules.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, ClassVar, Protocol

import aiohttp
from aiohttp import web

from ._policy import PollPolicy

logger = logging.getLogger("copyai_poll")

#: ASGI's three callables, loosely typed: this module needs no ASGI package.
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,}")
_MAX_ID = 256  # longer than any run id seen; a longer one is not an id


class Waiter(Protocol):
    """Anything a delivery can wake: a poll of one run, a tracker's handle."""

    def wake(self) -> None:
        """Poll once at once (the waiter coalesces bursts of wakes itself)."""


class WebhookReceiver:
    """Receives Copy.ai's webhook deliveries and wakes the waits of their runs.

    Pass it as ``webhooks=`` to `poll_until_done`, `watch` or `poll_many`: a delivery for
    a run makes its wait poll at once, and the wait's ``policy`` (by default
    `SAFETY_NET`) only catches deliveries that were lost.

    ``receiver.app`` is an `aiohttp.web.Application` to mount in yours
    (``app.add_subapp("/copyai", receiver.app)``); `serve` runs one alone; `asgi` is the
    same endpoint as an ASGI application. It answers POST at ``receiver.path``: 204 for a
    delivery, 400 for a body that is not a JSON object naming a run, 413 for one over
    ``max_body_bytes``, 405 for another method, 404 for any other path.

    Args:
        token: The secret last segment of the URL; by default 43 random URL-safe
            characters from `secrets`. At least 16 of ``A-Z a-z 0-9 _ -``.
        max_body_bytes: The largest body read; a larger one is refused unread.

    Raises:
        ValueError: ``token`` is too short or not URL-safe, or ``max_body_bytes`` < 1.
    """

    #: The default ``policy`` of a wait with ``webhooks=``: a safety net for lost
    #: deliveries. The first poll is immediate and the next one about 40 s later, so a
    #: run of about 30 s costs two GETs (the first and the one its delivery wakes),
    #: and at most three; polls stay at least 36 s apart.
    SAFETY_NET: ClassVar[PollPolicy] = PollPolicy(
        initial=40.0, maximum=120.0, multiplier=2.0, jitter=0.1, outage_grace=600.0
    )

    def __init__(self, token: str | None = None, *, max_body_bytes: int = 1_048_576) -> None:
        if token is None:
            token = secrets.token_urlsafe(32)
        elif not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise ValueError("token must be at least 16 characters of A-Z a-z 0-9 _ -")
        if not isinstance(max_body_bytes, int) or max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be a whole number >= 1, got {max_body_bytes!r}")
        self.token = token
        self.max_body_bytes = max_body_bytes
        self._secret = token.encode("ascii")
        self._waiters: dict[str, set[Waiter]] = {}
        self._app: web.Application | None = None

    def __repr__(self) -> str:
        # The token is the only secret of an unsigned webhook: never shown.
        return f"<WebhookReceiver path=/*** runs_waited_on={len(self._waiters)}>"

    @property
    def path(self) -> str:
        """The path deliveries are POSTed to: ``"/" + token``."""
        return "/" + self.token

    @property
    def app(self) -> web.Application:
        """The aiohttp application answering deliveries at `path` (built once)."""
        if self._app is None:
            self._app = self._make_app()
        return self._app

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve the receiver alone, and yield the URL to register with Copy.ai.

        Without an access log: the path holds the token. Behind a reverse proxy or a
        tunnel, register the public URL that leads here instead of the one yielded.

        Args:
            host: The address to bind.
            port: The port to bind; 0 picks a free one.

        Yields:
            ``http://host:port/<token>``.
        """
        runner = web.AppRunner(self._make_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound = runner.addresses[0][1]
            shown = f"[{host}]" if ":" in host else host
            yield f"http://{shown}:{bound}{self.path}"
        finally:
            await runner.cleanup()

    # -- the waiters ---------------------------------------------------------------

    def _attach(self, run_id: str, waiter: Waiter) -> Callable[[], None]:
        """Wake ``waiter`` on deliveries for ``run_id``; return the function that stops it."""
        self._waiters.setdefault(run_id, set()).add(waiter)

        def detach() -> None:
            waiters = self._waiters.get(run_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[run_id]

        return detach

    def _wake(self, run_ids: set[str], event: str | None) -> None:
        for run_id in run_ids:
            waiters = list(self._waiters.get(run_id, ()))
            logger.debug(
                "webhook delivery (%s) for run %s wakes %d waiter(s)",
                event or "no type",
                run_id,
                len(waiters),
                extra={"run_id": run_id},
            )
            for waiter in waiters:
                try:
                    waiter.wake()
                except Exception:  # one broken waiter must not cost the others their wake
                    logger.exception("waking a waiter of run %s failed", run_id)

    # -- one delivery, whatever serves it --------------------------------------------

    def _is_ours(self, tail: str) -> bool:
        """Whether ``tail`` (the path below the mount point, without its "/") is the token."""
        return hmac.compare_digest(tail.encode("utf-8", "surrogateescape"), self._secret)

    def _too_large(self, content_length: int | None) -> bool:
        return content_length is not None and content_length > self.max_body_bytes

    def _deliver(self, raw: bytes) -> int:
        """Check one delivery's body, wake its run's waiters, and return the HTTP status."""
        try:
            payload = json.loads(raw, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, NaN, nested too deep
            return _refused(400, "a body that is not JSON")
        if not isinstance(payload, dict):
            return _refused(400, "a body that is not a JSON object")
        event = payload.get("type")
        if event is not None and not isinstance(event, str):
            return _refused(400, "a type that is not a string")
        run_ids = _run_ids(payload)
        if not run_ids:
            return _refused(400, "a body that names no run")
        self._wake(run_ids, event)
        return 204

    # -- aiohttp ----------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application()
        # One catch-all route: the token is compared in constant time, not by the router.
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        if not self._is_ours(request.match_info["tail"]):
            return web.Response(status=404)
        if request.method != "POST":
            return web.Response(status=405, headers={"Allow": "POST"})
        if self._too_large(request.content_length):
            return web.Response(status=_refused(413, "a body over max_body_bytes"))
        raw = bytearray()
        try:
            async for chunk in request.content.iter_any():
                raw += chunk
                if len(raw) > self.max_body_bytes:
                    return web.Response(status=_refused(413, "a body over max_body_bytes"))
        except (ConnectionResetError, aiohttp.ClientPayloadError):
            # The sender went away mid-body: nobody to answer, nothing to wake, and
            # nothing for the server's log above DEBUG.
            return web.Response(status=_refused(400, "a body cut off by the sender"))
        return web.Response(status=self._deliver(bytes(raw)))

    # -- ASGI -------------------------------------------------------------------------

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The receiver as an ASGI application, to mount in Starlette, FastAPI, ...

        The path is read below the mount point (``root_path``), as in `app`.
        """
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        status = await self._asgi_status(scope, receive)
        if status is None:  # the client left
            return
        headers = [(b"allow", b"POST")] if status == 405 else []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _asgi_status(self, scope: Scope, receive: Receive) -> int | None:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if not path.startswith("/") or not self._is_ours(path[1:]):
            return 404
        if scope["method"] != "POST":
            return 405
        if self._too_large(_content_length(scope)):
            return _refused(413, "a body over max_body_bytes")
        raw = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            raw += message.get("body", b"")
            if len(raw) > self.max_body_bytes:
                return _refused(413, "a body over max_body_bytes")
            if not message.get("more_body", False):
                return self._deliver(bytes(raw))


def _run_ids(payload: dict[str, Any]) -> set[str]:
    """The run ids a delivery names; empty if any id field is not a usable string.

    The run object's shape names the run by ``id`` (and ``workflowRunId``); the
    documented shape by ``workflowRunId``. Both are woken: a wrong guess costs a GET at
    most, and only for a run someone waits on.
    """
    found: set[str] = set()
    for key in ("workflowRunId", "id"):
        value = payload.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not 0 < len(value) <= _MAX_ID:
            return set()
        found.add(value)
    return found


def _refused(status: int, why: str) -> int:
    # DEBUG only, and never the body: anyone who learns the URL can send anything.
    logger.debug("webhook delivery refused with %d: %s", status, why)
    return status


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _lifespan(receive: Receive, send: Send) -> None:
    """Answer an ASGI server's lifespan protocol: nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
