"""Webhook delivery: the fake POSTs run events to registered URLs.

A `DeliveryPlan` makes a share of the deliveries go wrong on demand (dropped, late or
sent twice, from a seeded generator) and picks the body's shape.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from typing import Any, Literal

import aiohttp
import attrs

from ._state import Notice

#: `Delivery.error` of a delivery the plan dropped.
DROPPED = "dropped by the delivery plan"

Shape = Literal["run", "documented"]


def _share(_inst: Any, attribute: Any, value: float) -> None:
    if not (0 <= value <= 1):
        raise ValueError(f"{attribute.name} must be between 0 and 1, got {value!r}")


def _seconds(_inst: Any, attribute: Any, value: float) -> None:
    if not (0 <= value < float("inf")):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class DeliveryPlan:
    """What becomes of the fake's webhook deliveries; the default sends each once, at once.

    Each delivery draws its fate from a generator seeded with ``seed``: dropped with
    probability ``drop``; else sent twice with probability ``duplicate``; either way
    held back ``delay_seconds`` (real time) first with probability ``delay``.

    Args:
        drop: Share of deliveries never sent (recorded with ``error=DROPPED``).
        duplicate: Share sent twice, one right after the other.
        delay: Share sent late.
        delay_seconds: How late, in real seconds.
        shape: ``"run"``: the run object plus ``"type"`` (what Copy.ai sends);
            ``"documented"``: ``{type, workflowId, workflowRunId, result, metadata}``.
        seed: Seeds the draws; None for fresh ones.
    """

    drop: float = attrs.field(default=0.0, validator=_share)
    duplicate: float = attrs.field(default=0.0, validator=_share)
    delay: float = attrs.field(default=0.0, validator=_share)
    delay_seconds: float = attrs.field(default=1.0, validator=_seconds)
    shape: Shape = attrs.field(
        default="run", validator=attrs.validators.in_(("run", "documented"))
    )
    seed: int | None = 0

    def body(self, notice: Notice) -> dict[str, Any]:
        """The JSON body of ``notice`` in this plan's shape."""
        if self.shape == "run":
            return dict(notice.payload)
        run = notice.payload
        return {
            "type": notice.event_type,
            "workflowId": run.get("workflowId"),
            "workflowRunId": notice.run_id,
            "result": run.get("output"),
            "metadata": run.get("metadata"),
        }


@attrs.frozen(kw_only=True)
class Delivery:
    """One attempt to deliver a webhook event.

    Attributes:
        webhook_id: The webhook it was sent for.
        url: Where it was sent.
        event_type: ``"workflowRun.started"``, ``"workflowRun.completed"`` or
            ``"workflowRun.failed"``.
        run_id: The run it is about.
        payload: The JSON body sent: the run object plus ``"type"``, or the documented
            shape (see `DeliveryPlan`).
        time: When it was sent, on the server's clock.
        status: The receiver's HTTP status; None if the delivery failed.
        error: Why the delivery failed, if it did (`DROPPED` if the plan dropped it).
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

    @property
    def dropped(self) -> bool:
        """True if the `DeliveryPlan` dropped it: it was never sent."""
        return self.error == DROPPED


@attrs.define(kw_only=True)
class WebhookSender:
    """Sends notices in background tasks and records each attempt.

    Args:
        clock: Stamps each `Delivery`.
        timeout: Seconds a receiver gets to answer.
        plan: What becomes of each delivery; change it with `set_plan`.
    """

    clock: Callable[[], float]
    timeout: float = 5.0
    deliveries: list[Delivery] = attrs.field(factory=list)
    plan: DeliveryPlan = attrs.field(factory=DeliveryPlan)
    _rng: random.Random = attrs.field(init=False)
    _session: aiohttp.ClientSession | None = attrs.field(default=None, init=False)
    _tasks: set[asyncio.Task[None]] = attrs.field(factory=set, init=False)
    _loop: asyncio.AbstractEventLoop | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.plan.seed)

    def set_plan(self, plan: DeliveryPlan) -> None:
        """Apply ``plan`` to the deliveries from now on (its draws start afresh)."""
        self.plan = plan
        self._rng = random.Random(plan.seed)

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
        plan, draw = self.plan, self._rng.random
        # Always three draws, so that one share's fate does not shift the others'.
        dropped, twice, late = draw() < plan.drop, draw() < plan.duplicate, draw() < plan.delay
        if dropped:
            self.deliveries.append(self._record(notice, plan.body(notice), None, DROPPED))
            return
        delay = plan.delay_seconds if late else 0.0
        for _ in range(2 if twice else 1):
            # The stored loop, not get_running_loop(): ManualClock.advance() may be called
            # from synchronous code that runs outside the loop.
            task = self._loop.create_task(
                self._deliver(self._session, notice, plan.body(notice), delay)
            )
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

    async def _deliver(
        self,
        session: aiohttp.ClientSession,
        notice: Notice,
        body: Mapping[str, Any],
        delay: float,
    ) -> None:
        if delay:
            await asyncio.sleep(delay)
        sent = self.clock()
        status: int | None = None
        error: str | None = None
        try:
            async with session.post(notice.webhook.url, json=body) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        self.deliveries.append(self._record(notice, body, status, error, sent))

    def _record(
        self,
        notice: Notice,
        body: Mapping[str, Any],
        status: int | None,
        error: str | None,
        sent: float | None = None,
    ) -> Delivery:
        return Delivery(
            webhook_id=notice.webhook.id,
            url=notice.webhook.url,
            event_type=notice.event_type,
            run_id=notice.run_id,
            payload=body,
            time=self.clock() if sent is None else sent,
            status=status,
            error=error,
        )
