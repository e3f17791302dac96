"""Waits woken by deliveries: `webhooks=` on the polling functions, in virtual time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from copyai_poll import (
    PollPolicy,
    PollTimeoutError,
    RateLimitError,
    RunStatus,
    StatusChange,
    WebhookReceiver,
    WorkflowRun,
    poll_many,
    poll_until_done,
    watch,
)
from tests.helpers import RUN, WF, ScriptedFetcher, run


class GatedClock:
    """Virtual time that moves only on `advance`; `sleep` waits for it, cancellably."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.sleeping_tasks: list[asyncio.Task[Any] | None] = []
        self._waiting: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.sleeping_tasks.append(asyncio.current_task())
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        entry = (self.now + seconds, future)
        self._waiting.append(entry)
        try:
            await future
        finally:
            if entry in self._waiting:
                self._waiting.remove(entry)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for target, future in list(self._waiting):
            if target <= self.now and not future.done():
                future.set_result(None)

    @property
    def pending(self) -> int:
        """Sleeps in progress."""
        return sum(not future.done() for _, future in self._waiting)


async def settle() -> None:
    """Let every ready task run until none is (no I/O here, so a few rounds suffice)."""
    for _ in range(50):
        await asyncio.sleep(0)


def deliver(receiver: WebhookReceiver, body: Any) -> int:
    """Hand ``body`` to the receiver as an HTTP delivery would."""
    return receiver._deliver(json.dumps(body).encode())


class GatedFetcher:
    """A fetcher whose answers are released one at a time by the test."""

    def __init__(self, *statuses: str) -> None:
        self.statuses = list(statuses)
        self.calls = 0
        self.gate = asyncio.Semaphore(0)

    async def get_run(self, workflow_id: str, run_id: str) -> WorkflowRun:
        self.calls += 1
        await self.gate.acquire()
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return run(status)


def start(
    fetcher: Any, receiver: WebhookReceiver | None, clock: GatedClock, **options: Any
) -> asyncio.Task[WorkflowRun]:
    return asyncio.create_task(
        poll_until_done(
            fetcher, WF, RUN, webhooks=receiver, sleep=clock.sleep, clock=clock, **options
        )
    )


@pytest.mark.asyncio
async def test_a_delivery_cuts_the_pause_short() -> None:
    """A delivery makes the wait poll at once, without waiting for the schedule."""
    clock, receiver = GatedClock(), WebhookReceiver()
    fetcher = ScriptedFetcher([run("PROCESSING"), run("COMPLETE")])
    task = start(fetcher, receiver, clock)
    await settle()
    before = fetcher.calls

    assert 204 == deliver(receiver, {"id": RUN, "type": "workflowRun.completed"})
    final = await task

    assert (1, 2, 0.0) == (before, fetcher.calls, clock.now)
    assert RunStatus.COMPLETE is final.status


@pytest.mark.asyncio
async def test_the_documented_shape_wakes_too() -> None:
    """A delivery naming the run by workflowRunId (the documented shape) wakes its wait."""
    clock, receiver = GatedClock(), WebhookReceiver()
    fetcher = ScriptedFetcher([run("PROCESSING"), run("FAILED", error="boom")])
    task = start(fetcher, receiver, clock)
    await settle()
    body = {"type": "workflowRun.failed", "workflowId": WF, "workflowRunId": RUN}

    deliver(receiver, {**body, "result": None, "metadata": None})

    with pytest.raises(Exception, match="boom"):
        await task
    assert 2 == fetcher.calls


@pytest.mark.asyncio
async def test_woken_polls_are_a_second_apart_and_a_burst_is_deferred_not_dropped() -> None:
    """However many deliveries arrive, one woken poll at once, then one at the second's end."""
    clock, receiver = GatedClock(), WebhookReceiver()
    fetcher = ScriptedFetcher([run("PROCESSING")])
    task = start(fetcher, receiver, clock)
    await settle()

    deliver(receiver, {"id": RUN})
    await settle()
    after_first = fetcher.calls
    for _ in range(100):
        deliver(receiver, {"id": RUN})
    await settle()
    during_blackout = fetcher.calls
    clock.advance(0.99)
    await settle()
    still = fetcher.calls
    clock.advance(0.01)
    await settle()
    deferred = fetcher.calls
    clock.advance(10)
    await settle()
    quiet = fetcher.calls
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert (2, 2, 2, 3, 3) == (after_first, during_blackout, still, deferred, quiet)


@pytest.mark.asyncio
async def test_a_wake_during_a_poll_makes_one_poll_follow_it() -> None:
    """A delivery while a GET is in flight is answered by one more poll right after it."""
    clock, receiver = GatedClock(), WebhookReceiver()
    fetcher = GatedFetcher("PROCESSING", "COMPLETE")
    task = start(fetcher, receiver, clock)
    await settle()
    assert 1 == fetcher.calls  # the first GET hangs at the gate

    deliver(receiver, {"id": RUN})
    deliver(receiver, {"id": RUN})
    fetcher.gate.release()  # it answers PROCESSING, read before the run finished
    await settle()
    fetcher.gate.release()

    assert RunStatus.COMPLETE is (await task).status
    assert (2, 0.0) == (fetcher.calls, clock.now)


@pytest.mark.asyncio
async def test_a_scheduled_poll_answers_a_deferred_wake() -> None:
    """A poll on schedule inside the second after a woken poll satisfies a deferred wake."""
    clock, receiver = GatedClock(), WebhookReceiver()
    fetcher = ScriptedFetcher([run("PROCESSING")])
    policy = PollPolicy(initial=0.5, maximum=0.5, jitter=0.0)
    task = start(fetcher, receiver, clock, policy=policy)
    await settle()
    deliver(receiver, {"id": RUN})  # woken poll at 0
    await settle()
    deliver(receiver, {"id": RUN})  # deferred to 1.0
    await settle()

    clock.advance(0.5)  # the scheduled poll
    await settle()
    at_half = fetcher.calls
    clock.advance(0.4)
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert (3, 3) == (at_half, fetcher.calls)


@pytest.mark.asyncio
async def test_a_forged_delivery_never_resolves_a_wait() -> None:
    """A delivery claiming COMPLETE costs one GET; the wait goes on while the GET says otherwise."""
    clock, receiver = GatedClock(), WebhookReceiver()
    fetcher = ScriptedFetcher([run("PROCESSING")])
    task = start(fetcher, receiver, clock)
    await settle()

    deliver(receiver, {"id": RUN, "status": "COMPLETE", "output": {"forged": True}})
    await settle()

    assert (False, 2) == (task.done(), fetcher.calls)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_duplicates_still_give_exactly_once_changes() -> None:
    """Callbacks see each change once, in order, however often the run is announced."""
    clock, receiver = GatedClock(), WebhookReceiver()
    fetcher = ScriptedFetcher([run("PROCESSING"), run("PROCESSING"), run("COMPLETE")])
    changes: list[tuple[RunStatus | None, RunStatus]] = []
    task = start(
        fetcher,
        receiver,
        clock,
        on_status_change=lambda c: changes.append((c.previous, c.current)),
    )
    await settle()
    for _ in range(3):
        deliver(receiver, {"id": RUN, "type": "workflowRun.started"})
    await settle()
    clock.advance(1)
    for _ in range(3):
        deliver(receiver, {"id": RUN, "type": "workflowRun.completed"})

    await task

    assert [(None, RunStatus.PROCESSING), (RunStatus.PROCESSING, RunStatus.COMPLETE)] == changes


@pytest.mark.asyncio
async def test_a_retry_after_holds_a_woken_poll_back() -> None:
    """After a poll answered with Retry-After, a delivery does not poll before it passed."""
    clock, receiver = GatedClock(), WebhookReceiver()
    throttled = RateLimitError("slow down", status=429, retry_after=5.0)
    fetcher = ScriptedFetcher([throttled, run("COMPLETE")])
    task = start(fetcher, receiver, clock)
    await settle()

    deliver(receiver, {"id": RUN})
    await settle()
    held = fetcher.calls
    clock.advance(5)
    await task

    assert (1, 2) == (held, fetcher.calls)


@pytest.mark.asyncio
async def test_the_safety_net_is_the_default_policy_with_webhooks() -> None:
    """With webhooks= and no policy the first pause is SAFETY_NET's; without, PollPolicy()'s."""
    woken, plain = GatedClock(), GatedClock()
    tasks = [
        start(ScriptedFetcher([run("PROCESSING")]), WebhookReceiver(), woken),
        start(ScriptedFetcher([run("PROCESSING")]), None, plain),
    ]
    await settle()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    assert 36.0 <= woken.sleeps[0] <= 44.0
    assert plain.sleeps[0] <= 1.1


def test_the_safety_net_makes_a_30_second_run_cost_two_gets() -> None:
    """SAFETY_NET's first wait outlasts a 30 s run, jitter included, and the next is longer."""
    policy = WebhookReceiver.SAFETY_NET
    shortest = policy.wait(0, rand=lambda: 0.0)
    longest = policy.wait(0, rand=lambda: 0.999999)

    assert 36.0 == pytest.approx(shortest)
    assert longest <= 44.0
    assert policy.wait(1, rand=lambda: 0.0) > shortest


@pytest.mark.asyncio
async def test_without_webhooks_the_pause_is_the_sleep_itself() -> None:
    """Without a receiver the poll sleeps in its own task (no task per pause); with one, in another."""
    plain, woken = GatedClock(), GatedClock()
    plain_task = start(ScriptedFetcher([run("PROCESSING")]), None, plain)
    woken_task = start(ScriptedFetcher([run("PROCESSING")]), WebhookReceiver(), woken)
    await settle()
    for task in (plain_task, woken_task):
        task.cancel()
    await asyncio.gather(plain_task, woken_task, return_exceptions=True)

    assert plain_task is plain.sleeping_tasks[0]
    assert woken_task is not woken.sleeping_tasks[0]


@pytest.mark.asyncio
async def test_cancelling_a_woken_wait_leaves_nothing_behind() -> None:
    """Cancel a wait mid-pause: no task, no sleep and no registration with the receiver remain."""
    clock, receiver = GatedClock(), WebhookReceiver()
    task = start(ScriptedFetcher([run("PROCESSING")]), receiver, clock)
    await settle()
    registered = dict(receiver._waiters)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert [RUN] == list(registered)
    assert ({}, 0) == (receiver._waiters, clock.pending)
    assert {asyncio.current_task()} == asyncio.all_tasks()


@pytest.mark.asyncio
async def test_cancelling_with_the_real_sleep_leaves_nothing_behind() -> None:
    """With asyncio.sleep (no injected sleep), a cancelled woken wait leaves no task behind."""
    receiver = WebhookReceiver()
    task = asyncio.create_task(
        poll_until_done(ScriptedFetcher([run("PROCESSING")]), WF, RUN, webhooks=receiver)
    )
    await settle()
    assert 3 == len(asyncio.all_tasks())  # this test, the wait, and its sleep beside it

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert {} == receiver._waiters
    assert {asyncio.current_task()} == asyncio.all_tasks()


@pytest.mark.asyncio
async def test_the_deadline_ends_a_woken_pause() -> None:
    """A wait with webhooks still times out at its deadline, and detaches."""
    clock, receiver = GatedClock(), WebhookReceiver()
    task = start(ScriptedFetcher([run("PROCESSING")]), receiver, clock, timeout=10.0)
    await settle()

    clock.advance(10)

    with pytest.raises(PollTimeoutError):
        await task
    assert {} == receiver._waiters


@pytest.mark.asyncio
async def test_watch_is_woken() -> None:
    """watch(webhooks=...) polls at once on a delivery, and detaches when it ends."""
    clock, receiver = GatedClock(), WebhookReceiver()
    fetcher = ScriptedFetcher([run("PROCESSING"), run("COMPLETE")])
    seen: list[StatusChange] = []

    async def consume() -> None:
        async for change in watch(
            fetcher, WF, RUN, webhooks=receiver, sleep=clock.sleep, clock=clock
        ):
            seen.append(change)

    task = asyncio.create_task(consume())
    await settle()
    deliver(receiver, {"id": RUN})
    await task

    assert [RunStatus.PROCESSING, RunStatus.COMPLETE] == [c.current for c in seen]
    assert ({}, 0.0) == (receiver._waiters, clock.now)


class ManyRuns:
    """A fetcher of several runs, each PROCESSING until the test finishes it."""

    def __init__(self) -> None:
        self.finished: set[str] = set()
        self.calls: dict[str, int] = {}

    async def get_run(self, workflow_id: str, run_id: str) -> WorkflowRun:
        self.calls[run_id] = self.calls.get(run_id, 0) + 1
        status = "COMPLETE" if run_id in self.finished else "PROCESSING"
        return WorkflowRun.from_api({"id": run_id, "workflowId": workflow_id, "status": status})


@pytest.mark.asyncio
async def test_poll_many_wakes_only_the_run_delivered() -> None:
    """poll_many(webhooks=...): a delivery wakes its own run's wait and no other."""
    clock, receiver = GatedClock(), WebhookReceiver()
    fetcher = ManyRuns()
    runs = [(WF, "WRUN-a"), (WF, "WRUN-b")]
    outcomes = poll_many(fetcher, runs, webhooks=receiver, sleep=clock.sleep, clock=clock)
    first = asyncio.ensure_future(anext(outcomes))
    await settle()

    fetcher.finished.add("WRUN-a")
    deliver(receiver, {"workflowRunId": "WRUN-a"})
    outcome = await first
    await outcomes.aclose()

    assert ("WRUN-a", True) == (outcome.run_id, outcome.ok)
    assert {"WRUN-a": 2, "WRUN-b": 1} == fetcher.calls
    assert {} == receiver._waiters


@pytest.mark.asyncio
async def test_a_waiter_that_fails_to_wake_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A waiter raising in wake() is logged; the other waiters of the run are still woken."""
    receiver = WebhookReceiver()
    woken: list[str] = []

    class Broken:
        def wake(self) -> None:
            raise RuntimeError("broken waiter")

    class Counting:
        def wake(self) -> None:
            woken.append("yes")

    receiver._attach(RUN, Broken())
    detach: Callable[[], None] = receiver._attach(RUN, Counting())

    status = deliver(receiver, {"id": RUN})
    detach()
    detach()  # idempotent

    assert (204, ["yes"]) == (status, woken)
    assert "broken waiter" in caplog.text
    assert 1 == len(receiver._waiters[RUN])
