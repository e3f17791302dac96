"""Webhooks end to end over real sockets: the fake delivers, the receiver wakes, GETs confirm.

The fake runs on a `ManualClock`, and the waits sleep on the same clock, so 30-second runs
and a 40-second safety net take no real time and the counts are exact.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import attrs
import pytest
import pytest_asyncio

from copyai_poll import (
    BadRequestError,
    CopyAIClient,
    RetryPolicy,
    RunOutcome,
    RunStatus,
    StatusChange,
    WebhookReceiver,
    poll_many,
    poll_until_done,
)
from copyai_poll.testing import DeliveryPlan, FakeCopyAI, ManualClock, Script

WF = "WCFG-webhooks"


class ManualSleep:
    """Sleeps on a `ManualClock`: they end when the test advances it, not before."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self._waiting: list[tuple[float, asyncio.Future[None]]] = []
        clock.subscribe(self._wake)

    async def __call__(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        entry = (self.clock() + seconds, asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        try:
            await entry[1]
        finally:
            self._waiting.remove(entry)

    @property
    def sleeping(self) -> int:
        """Sleeps in progress."""
        return sum(not future.done() for _, future in self._waiting)

    def _wake(self) -> None:
        for target, future in self._waiting:
            if target <= self.clock() and not future.done():
                future.set_result(None)


@attrs.define
class Rig:
    """A fake on a manual clock, a client, a served and subscribed receiver."""

    clock: ManualClock
    sleep: ManualSleep
    fake: FakeCopyAI
    client: CopyAIClient
    receiver: WebhookReceiver
    url: str


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    """Everything wired: deliveries of completed and failed runs of WF reach the receiver."""
    clock = ManualClock()
    receiver = WebhookReceiver()
    async with (
        FakeCopyAI(clock=clock) as fake,
        CopyAIClient(api_key=fake.api_key, base_url=fake.base_url) as client,
        receiver.serve() as url,
        client.subscribe(url, workflow_id=WF),
    ):
        yield Rig(clock, ManualSleep(clock), fake, client, receiver, url)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (on real I/O) until ``condition`` holds; fail after 10 s."""
    try:
        async with asyncio.timeout(10):
            while not condition():
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def scripts(n: int) -> list[Script]:
    """Runs of 28 to 32 s; every fifth one fails."""
    found = []
    for i in range(n):
        step = ("PROCESSING", 28 + (i % 5))
        found.append(Script.fails(step, error="boom") if i % 5 == 4 else Script.completes(step))
    return found


async def wait_for_all(
    rig: Rig, n: int, plan: DeliveryPlan, advances: list[float]
) -> tuple[list[str], dict[str, RunOutcome], dict[str, list[tuple[Any, Any]]]]:
    """Start ``n`` runs, watch them with webhooks, move the clock; outcomes and changes."""
    rig.fake.set_delivery_plan(plan)
    rig.fake.queue_scripts(*scripts(n))
    ids = [(await rig.client.start_run(WF, {"i": i})).id for i in range(n)]
    changes: dict[str, list[tuple[Any, Any]]] = {run_id: [] for run_id in ids}

    def record(change: StatusChange) -> None:
        changes[change.run.id].append((change.previous, change.current))

    outcomes: dict[str, RunOutcome] = {}

    async def consume() -> None:
        async for outcome in poll_many(
            rig.client,
            [(WF, run_id) for run_id in ids],
            webhooks=rig.receiver,
            on_status_change=record,
            sleep=rig.sleep,
            clock=rig.clock,
        ):
            outcomes[outcome.run_id] = outcome

    task = asyncio.create_task(consume())
    await until(lambda: rig.sleep.sleeping == n, "the first polls")
    for seconds in advances:
        rig.clock.advance(seconds)
        await rig.fake.flush_webhooks()
        expected = {d.run_id for d in rig.fake.deliveries if not d.dropped and d.ok}
        await until(lambda e=expected: e <= outcomes.keys(), "the woken polls")  # type: ignore[misc]
    await until(task.done, "every wait")
    task.result()
    return ids, outcomes, changes


def truth(i: int) -> RunStatus:
    return RunStatus.FAILED if i % 5 == 4 else RunStatus.COMPLETE


def status_of(outcome: RunOutcome) -> RunStatus | None:
    return None if outcome.run is None else outcome.run.status


@pytest.mark.asyncio
async def test_runs_resolve_with_two_gets_each(rig: Rig) -> None:
    """40 runs of ~30 s: each ends on its delivery, with two GETs (the first and the woken)."""
    ids, outcomes, changes = await wait_for_all(rig, 40, DeliveryPlan(), [33])

    assert [truth(i) for i in range(40)] == [status_of(outcomes[r]) for r in ids]
    expected = [
        [(None, RunStatus.PROCESSING), (RunStatus.PROCESSING, truth(i))] for i in range(40)
    ]
    assert expected == [changes[r] for r in ids]
    assert [2] * 40 == [rig.fake.get_count(r) for r in ids]
    assert 33.0 == rig.clock()  # no safety-net poll was needed


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "plan",
    [
        DeliveryPlan(drop=0.1, duplicate=0.1, seed=7),
        DeliveryPlan(drop=0.1, duplicate=0.1, delay=0.2, delay_seconds=0.01, shape="documented"),
        DeliveryPlan(drop=1.0),
    ],
    ids=["10% dropped, 10% twice", "documented shape, some late", "all dropped"],
)
async def test_lost_and_repeated_deliveries_change_only_the_cost(
    rig: Rig, plan: DeliveryPlan
) -> None:
    """Every run ends in its true state with exactly-once changes; lost ones via the safety net."""
    ids, outcomes, changes = await wait_for_all(rig, 40, plan, [33, 12])

    dropped = {d.run_id for d in rig.fake.deliveries if d.dropped}
    assert [truth(i) for i in range(40)] == [status_of(outcomes[r]) for r in ids]
    expected = [
        [(None, RunStatus.PROCESSING), (RunStatus.PROCESSING, truth(i))] for i in range(40)
    ]
    assert expected == [changes[r] for r in ids]
    assert all(rig.fake.get_count(r) <= 3 for r in ids)
    assert all(rig.fake.get_count(r) == 2 for r in ids if r not in dropped)
    if plan.drop == 1.0:
        assert set(ids) == dropped


@pytest.mark.asyncio
async def test_forged_deliveries_resolve_nothing_and_cost_little(rig: Rig) -> None:
    """2,000 forged deliveries: no wait ends, watched runs pay one GET a second, others none."""
    rig.fake.set_script(Script.completes(("PROCESSING", 1000)))
    watched = [(await rig.client.start_run(WF, {})).id for _ in range(10)]
    unwatched = [(await rig.client.start_run(WF, {})).id for _ in range(5)]
    waits = [
        asyncio.create_task(
            poll_until_done(
                rig.client, WF, r, webhooks=rig.receiver, sleep=rig.sleep, clock=rig.clock
            )
        )
        for r in watched
    ]
    await until(lambda: rig.sleep.sleeping == len(watched), "the first polls")
    wrong = rig.url.rsplit("/", 1)[0] + "/" + "x" * len(rig.receiver.token)
    forged = [
        {"id": r, "status": "COMPLETE", "type": "workflowRun.completed"} for r in watched
    ] + [{"workflowRunId": r, "type": "workflowRun.failed"} for r in [*unwatched, "WRUN-none"]]

    async with aiohttp.ClientSession() as session:

        async def flood(url: str, count: int) -> list[int]:
            statuses = []
            for i in range(count):
                async with session.post(url, json=forged[i % len(forged)]) as response:
                    statuses.append(response.status)
            return statuses

        before_wrong = sum(rig.fake.get_count(r) for r in watched)
        wrong_statuses = await flood(wrong, 1000)
        after_wrong = sum(rig.fake.get_count(r) for r in watched)
        right_statuses = await flood(rig.url, 1000)
        await asyncio.sleep(0.05)
        at_once = [rig.fake.get_count(r) for r in watched]
        rig.clock.advance(1)
        await until(lambda: all(rig.fake.get_count(r) == 3 for r in watched), "deferred wakes")
        rig.clock.advance(1)  # nothing more was asked for
        await asyncio.sleep(0.05)

    after = [rig.fake.get_count(r) for r in watched]
    done = [w.done() for w in waits]
    for w in waits:
        w.cancel()
    await asyncio.gather(*waits, return_exceptions=True)

    assert ({404}, {204}) == (set(wrong_statuses), set(right_statuses))
    assert before_wrong == after_wrong  # a wrong-token flood costs no GET
    assert [2] * 10 == at_once  # the first poll, and one woken poll at once
    assert [3] * 10 == after  # and one deferred to the end of the second, then no more
    assert [0] * 5 == [rig.fake.get_count(r) for r in unwatched]
    assert [False] * 10 == done


@pytest.mark.asyncio
async def test_cancelling_a_woken_wait_leaves_nothing_behind(rig: Rig) -> None:
    """Cancel a wait mid-pause: no registration, no task of the wait, no connection in use."""
    run_id = (await rig.client.start_run(WF, {})).id
    before = asyncio.all_tasks()
    wait = asyncio.create_task(
        rig.client.poll_until_done(WF, run_id, webhooks=rig.receiver, sleep=rig.sleep)
    )
    await until(
        lambda: rig.fake.get_count(run_id) == 1 and run_id in rig.receiver._waiters, "poll"
    )
    await asyncio.sleep(0.01)

    wait.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wait
    await asyncio.sleep(0)

    left = [t for t in asyncio.all_tasks() - before if _not_a_server_connection(t)]
    assert ({}, []) == (rig.receiver._waiters, left)
    assert 0 == len(rig.client._session.connector._acquired)  # type: ignore[union-attr]


def _not_a_server_connection(task: asyncio.Task[Any]) -> bool:
    # aiohttp's server keeps a task per keep-alive connection: the fake's, not the wait's.
    return "RequestHandler" not in getattr(task.get_coro(), "__qualname__", "")


# -- client.subscribe ----------------------------------------------------------------------


@pytest_asyncio.fixture
async def fake_client() -> AsyncIterator[tuple[FakeCopyAI, CopyAIClient]]:
    """A fake and a client that does not retry (so a faulted DELETE fails at once)."""
    async with (
        FakeCopyAI() as fake,
        CopyAIClient(
            api_key=fake.api_key, base_url=fake.base_url, retry=RetryPolicy(attempts=1)
        ) as client,
    ):
        yield fake, client


async def hooks_of(client: CopyAIClient) -> list[tuple[str, str, Any]]:
    return sorted(
        [(h["url"], h["eventType"], h["workflowId"]) async for h in client.list_webhooks()]
    )


@pytest.mark.asyncio
async def test_subscribe_registers_each_event_and_deletes_on_exit(
    fake_client: tuple[FakeCopyAI, CopyAIClient],
) -> None:
    """One webhook per event type while the block runs, none after it."""
    _, client = fake_client
    url = "http://127.0.0.1:9/hook"
    async with client.subscribe(url, workflow_id=WF) as hooks:
        inside = await hooks_of(client)

    assert [
        (url, "workflowRun.completed", WF),
        (url, "workflowRun.failed", WF),
    ] == inside
    assert ["workflowRun.completed", "workflowRun.failed"] == [h["eventType"] for h in hooks]
    assert [] == await hooks_of(client)


@pytest.mark.asyncio
async def test_subscribe_deletes_when_the_block_raises_or_is_cancelled(
    fake_client: tuple[FakeCopyAI, CopyAIClient],
) -> None:
    """An exception or a cancellation inside the block still deletes every webhook."""
    _, client = fake_client
    entered = asyncio.Event()

    async def hold() -> None:
        async with client.subscribe("http://127.0.0.1:9/a", events=["workflowRun.started"]):
            entered.set()
            await asyncio.Event().wait()

    with pytest.raises(LookupError, match="inside"):
        async with client.subscribe("http://127.0.0.1:9/b"):
            raise LookupError("inside")
    task = asyncio.create_task(hold())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert [] == await hooks_of(client)


@pytest.mark.asyncio
async def test_subscribe_takes_a_webhook_already_gone_calmly(
    fake_client: tuple[FakeCopyAI, CopyAIClient],
) -> None:
    """A webhook deleted by someone else meanwhile (404 on delete) is not an error."""
    _, client = fake_client
    async with client.subscribe("http://127.0.0.1:9/hook") as hooks:
        await client.delete_webhook(hooks[0]["id"])

    assert [] == await hooks_of(client)


@pytest.mark.asyncio
async def test_a_failed_registration_deletes_the_ones_made(
    fake_client: tuple[FakeCopyAI, CopyAIClient],
) -> None:
    """If the second event cannot be registered, the first is deleted and the error raised."""
    _, client = fake_client
    events = ["workflowRun.completed", "workflowRun.nonsense"]

    with pytest.raises(BadRequestError, match=r"422|eventType"):
        async with client.subscribe("http://127.0.0.1:9/hook", events=events):
            pytest.fail("the block must not run")

    assert [] == await hooks_of(client)


@pytest.mark.asyncio
async def test_a_failed_delete_is_raised_only_after_a_clean_block(
    fake_client: tuple[FakeCopyAI, CopyAIClient], caplog: pytest.LogCaptureFixture
) -> None:
    """A DELETE that fails is raised after a clean block, logged (not raised) after an error."""
    from copyai_poll import ServerError
    from copyai_poll.testing import Fault

    fake, client = fake_client
    fake.add_faults("delete_webhook", Fault.server_error(500))
    with pytest.raises(ServerError):
        async with client.subscribe("http://127.0.0.1:9/a"):
            pass
    left_after_clean = len(await hooks_of(client))
    fake.add_faults("delete_webhook", Fault.server_error(500))
    with pytest.raises(KeyError, match="mine"):
        async with client.subscribe("http://127.0.0.1:9/b"):
            raise KeyError("mine")

    assert 1 == left_after_clean  # the other one was still deleted
    assert "could not delete webhook" in caplog.text


@pytest.mark.asyncio
async def test_json_of_a_delivery_is_what_the_fake_sends(rig: Rig) -> None:
    """The fake's two shapes both name the run in a way the receiver reads (204)."""
    rig.fake.set_script(Script.completes(("PROCESSING", 1)))
    for shape in ("run", "documented"):
        rig.fake.set_delivery_plan(DeliveryPlan(shape=shape))
        await rig.client.start_run(WF, {})
        rig.clock.advance(1)
        await rig.fake.flush_webhooks()

    bodies = [json.loads(json.dumps(dict(d.payload))) for d in rig.fake.deliveries]
    assert [204, 204] == [d.status for d in rig.fake.deliveries]
    assert "status" in bodies[0]
    assert {"type", "workflowId", "workflowRunId", "result", "metadata"} == set(bodies[1])
