"""Webhook deliveries for started, completed and failed runs."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import attrs
import pytest
import pytest_asyncio
from aiohttp import web

from copyai_poll.testing import DeliveryPlan, FakeCopyAI, ManualClock, Script
from tests.testing.fake_helpers import WF, Api

STARTED, COMPLETED, FAILED = "workflowRun.started", "workflowRun.completed", "workflowRun.failed"


@attrs.define
class Receiver:
    """A tiny webhook receiver on 127.0.0.1 that keeps what it is sent."""

    url: str
    received: list[dict[str, Any]]
    answer: list[int]


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A running receiver; set ``answer[0]`` to change the status it replies with."""
    received: list[dict[str, Any]] = []
    answer = [204]

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=answer[0])

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield Receiver(f"http://127.0.0.1:{port}/hook", received, answer)
    await runner.cleanup()


@pytest.mark.asyncio
async def test_started_and_completed_are_delivered(
    fake: FakeCopyAI, manual_clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    """Started fires on start, completed when the clock reaches the end, with the full run."""
    fake.set_script(Script.completes(("PROCESSING", 2), output={"text": "ok"}))
    for event in (STARTED, COMPLETED):
        await api.call("POST", "/webhook", json={"url": receiver.url, "eventType": event})
    run_id = await api.start()
    await fake.flush_webhooks()
    after_start = [body["type"] for body in receiver.received]

    manual_clock.advance(2)
    deliveries = await fake.flush_webhooks()

    assert [STARTED] == after_start
    started, completed = receiver.received
    assert (STARTED, "PROCESSING", run_id) == (started["type"], started["status"], started["id"])
    assert {**fake.run(run_id), "type": COMPLETED} == completed
    assert [(STARTED, 204, True), (COMPLETED, 204, True)] == [
        (d.event_type, d.status, d.ok) for d in deliveries
    ]


@pytest.mark.asyncio
async def test_failed_is_delivered_once(
    fake: FakeCopyAI, manual_clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    """A run that fails sends one workflowRun.failed carrying its error, however often it is polled."""
    fake.set_script(Script.fails(("NEW", 1), error="boom"))
    fake.register_webhook(receiver.url, FAILED)
    run_id = await api.start()
    manual_clock.advance(1)
    await api.run(run_id)
    manual_clock.advance(1)

    await fake.flush_webhooks()

    assert [(FAILED, "FAILED", "boom")] == [
        (b["type"], b["status"], b["error"]) for b in receiver.received
    ]


@pytest.mark.asyncio
async def test_webhook_filtered_by_workflow(
    fake: FakeCopyAI, api: Api, receiver: Receiver
) -> None:
    """A webhook with a workflowId hears only that workflow's runs."""
    fake.register_webhook(receiver.url, STARTED, workflow_id=WF)
    mine = await api.start(WF)
    await api.start("WCFG-other")

    await fake.flush_webhooks()

    assert [mine] == [body["id"] for body in receiver.received]


@pytest.mark.asyncio
async def test_rescripted_run_completes_at_its_new_end_once(
    fake: FakeCopyAI, manual_clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    """A run given a longer script mid-way fires completed at the new end, and only once."""
    fake.set_script(Script.completes(("PROCESSING", 1)))
    fake.register_webhook(receiver.url, COMPLETED)
    run_id = await api.start()
    fake.set_script(Script.completes(("PROCESSING", 3)), run_id=run_id)

    manual_clock.advance(1.5)  # past the old end: nothing yet
    early = len(await fake.flush_webhooks())
    manual_clock.advance(1.5)  # past the new end
    await fake.flush_webhooks()
    manual_clock.advance(5)
    await fake.flush_webhooks()

    assert 0 == early
    assert [run_id] == [body["id"] for body in receiver.received]


@pytest.mark.asyncio
async def test_manual_move_fires_completed(fake: FakeCopyAI, api: Api, receiver: Receiver) -> None:
    """Moving a run to COMPLETE by hand sends workflowRun.completed with the given output."""
    fake.register_webhook(receiver.url, COMPLETED)
    run_id = await api.start()

    fake.set_status(run_id, "COMPLETE", output={"text": "by hand"})
    await fake.flush_webhooks()

    assert [{"text": "by hand"}] == [body["output"] for body in receiver.received]


@pytest.mark.asyncio
async def test_failed_deliveries_are_recorded_and_harmless(
    fake: FakeCopyAI, api: Api, receiver: Receiver
) -> None:
    """A receiver answering 500, or not listening at all, is recorded; the server goes on."""
    receiver.answer[0] = 500
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    fake.register_webhook(receiver.url, STARTED)
    fake.register_webhook(f"http://127.0.0.1:{closed_port}/hook", STARTED)
    await api.start()

    deliveries = await fake.flush_webhooks()

    by_url = {d.url: d for d in deliveries}
    assert (500, False) == (by_url[receiver.url].status, by_url[receiver.url].ok)
    refused = by_url[f"http://127.0.0.1:{closed_port}/hook"]
    assert (None, True) == (refused.status, "Connect" in (refused.error or ""))
    assert 200 == (await api.call("GET", "/webhook"))[0]


@pytest.mark.asyncio
async def test_deleted_webhook_hears_nothing(
    fake: FakeCopyAI, api: Api, receiver: Receiver
) -> None:
    """After DELETE, a webhook receives no more events."""
    hook_id = fake.register_webhook(receiver.url, STARTED)
    await api.call("DELETE", f"/webhook/{hook_id}")

    await api.start()

    assert [] == await fake.flush_webhooks()


@attrs.define
class SteppedClock:
    """A plain callable clock (not a ManualClock): the ticker must notice its changes."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.asyncio
async def test_ticker_sends_completion_without_requests(receiver: Receiver) -> None:
    """On a clock that is not a ManualClock, a background ticker sends completion events."""
    clock = SteppedClock()
    async with FakeCopyAI(clock=clock, tick=0.01, script=Script.completes(("NEW", 1))) as server:
        server.register_webhook(receiver.url, COMPLETED)
        async with aiohttp.ClientSession(headers={"x-copy-ai-api-key": server.api_key}) as s:
            await Api(s, server.base_url).start()
        clock.now = 1
        async with asyncio.timeout(5):
            while not server.deliveries:
                await asyncio.sleep(0.01)

    assert [COMPLETED] == [d.event_type for d in server.deliveries]


# -- DeliveryPlan: deliveries that go wrong on demand ------------------------------------


async def _start_many(api: Api, n: int) -> list[str]:
    return [await api.start() for _ in range(n)]


@pytest.mark.asyncio
async def test_a_share_of_deliveries_is_dropped(
    fake: FakeCopyAI, api: Api, receiver: Receiver
) -> None:
    """drop=0.5 sends about half; the dropped ones are recorded as such, never sent."""
    fake.set_delivery_plan(DeliveryPlan(drop=0.5, seed=1))
    fake.register_webhook(receiver.url, STARTED)
    run_ids = await _start_many(api, 40)

    deliveries = await fake.flush_webhooks()

    dropped = [d.run_id for d in deliveries if d.dropped]
    sent = [body["id"] for body in receiver.received]
    assert 10 <= len(dropped) <= 30
    assert sorted(run_ids) == sorted(dropped + sent)
    assert all(d.status is None and not d.ok for d in deliveries if d.dropped)


@pytest.mark.asyncio
async def test_duplicated_deliveries_arrive_twice(
    fake: FakeCopyAI, api: Api, receiver: Receiver
) -> None:
    """duplicate=1.0 sends every event twice, the same body both times."""
    fake.set_delivery_plan(DeliveryPlan(duplicate=1.0))
    fake.register_webhook(receiver.url, STARTED)
    run_ids = await _start_many(api, 3)

    await fake.flush_webhooks()

    assert sorted(run_ids * 2) == sorted(body["id"] for body in receiver.received)


@pytest.mark.asyncio
async def test_delayed_deliveries_are_held_back(
    fake: FakeCopyAI, api: Api, receiver: Receiver
) -> None:
    """delay=1.0 holds every delivery back for delay_seconds: none has arrived at once."""
    fake.set_delivery_plan(DeliveryPlan(delay=1.0, delay_seconds=30.0))
    fake.register_webhook(receiver.url, STARTED)
    await api.start()

    for _ in range(20):
        await asyncio.sleep(0)

    assert ([], []) == (receiver.received, fake.deliveries)


@pytest.mark.asyncio
async def test_the_documented_shape(
    fake: FakeCopyAI, manual_clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    """shape="documented" sends {type, workflowId, workflowRunId, result, metadata}."""
    fake.set_delivery_plan(DeliveryPlan(shape="documented"))
    fake.set_script(Script.completes(("PROCESSING", 1), output={"text": "ok"}))
    fake.register_webhook(receiver.url, COMPLETED)
    run_id = await api.start()
    manual_clock.advance(1)

    await fake.flush_webhooks()

    assert [
        {
            "type": COMPLETED,
            "workflowId": WF,
            "workflowRunId": run_id,
            "result": {"text": "ok"},
            "metadata": fake.run(run_id)["metadata"],
        }
    ] == receiver.received


def test_the_same_seed_gives_the_same_fates() -> None:
    """Fates come from the plan's seed, so a failing run of a test repeats exactly."""
    from copyai_poll.testing._webhooks import WebhookSender

    def fates(seed: int) -> list[float]:
        sender = WebhookSender(clock=lambda: 0.0)
        sender.set_plan(DeliveryPlan(drop=0.5, seed=seed))
        return [sender._rng.random() for _ in range(10)]

    assert fates(3) == fates(3)
    assert fates(3) != fates(4)


@pytest.mark.parametrize(
    "options",
    [{"drop": 1.5}, {"duplicate": -0.1}, {"delay_seconds": float("inf")}, {"shape": "xml"}],
)
def test_nonsense_plans_are_refused(options: dict[str, Any]) -> None:
    """Shares outside 0..1, an endless delay or an unknown shape are a ValueError."""
    with pytest.raises(ValueError, match=r"must|shape"):
        DeliveryPlan(**options)
