"""Webhook delivery: the fake POSTs run events to registered URLs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import attrs

from ._state import Notice


@attrs.frozen(kw_only=True)
class Delivery:
    """One attempt to deliver a webhook event.

    Attributes:
        webhook_id: The webhook it was sent for.
        url: Where it was sent.
        event_type: ``"workflowRun.started"``, ``"workflowRun.completed"`` or
            ``"workflowRun.failed"``.
        run_id: The run it is about.
        payload: The JSON body sent: the run object plus ``"type"``.
        time: When it was sent, on the server's clock.
        status: The receiver's HTTP status; None if the delivery failed.
        error: Why the delivery failed, if it did.
    """

    webhook_id: str
    url: str
    event_type: str
    run_id: str
    payload: Mapping[str, Any]
    time: float
    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True if the receiver answered with a 2xx status."""
        return self.status is not None and 200 <= self.status < 300


@attrs.define(kw_only=True)
class WebhookSender:
    """Sends notices in background tasks and records each attempt.

    Args:
        clock: Stamps each `Delivery`.
        timeout: Seconds a receiver gets to answer.
    """

    clock: Callable[[], float]
    timeout: float = 5.0
    deliveries: list[Delivery] = attrs.field(factory=list)
    _session: aiohttp.ClientSession | None = attrs.field(default=None, init=False)
    _tasks: set[asyncio.Task[None]] = attrs.field(factory=set, init=False)
    _loop: asyncio.AbstractEventLoop | None = attrs.field(default=None, init=False)

    def open(self) -> None:
        """Create the HTTP session; call from inside the event loop."""
        self._loop = asyncio.get_running_loop()
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout)
            )

    def send(self, notice: Notice) -> None:
        """Deliver ``notice`` in the background; ignored while the sender is closed."""
        if self._session is None or self._loop is None:
            return
        # The stored loop, not get_running_loop(): ManualClock.advance() may be called
        # from synchronous code that runs outside the loop.
        task = self._loop.create_task(self._deliver(self._session, notice))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Wait until every delivery started so far has finished."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self, grace: float = 1.0) -> None:
        """Finish pending deliveries (cancelling those still going after ``grace``)."""
        pending = set(self._tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def _deliver(self, session: aiohttp.ClientSession, notice: Notice) -> None:
        sent = self.clock()
        status: int | None = None
        error: str | None = None
        try:
            async with session.post(notice.webhook.url, json=dict(notice.payload)) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        self.deliveries.append(
            Delivery(
                webhook_id=notice.webhook.id,
                url=notice.webhook.url,
                event_type=notice.event_type,
                run_id=notice.run_id,
                payload=notice.payload,
                time=sent,
                status=status,
                error=error,
            )
        )
