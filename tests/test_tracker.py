"""RunTracker and RunHandle: a registry of runs in flight, swept and learned."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from bench.tracking import QUIRKS, WF, InMemoryClient, VirtualTime, fleet, fleets
from copyai_poll import (
    PollPolicy,
    PollTimeoutError,
    RateLimitError,
    RunFailedError,
    RunHandle,
    RunStatus,
    RunTracker,
    ServerError,
    StatusChange,
    WebhookReceiver,
    WorkflowRun,
)
from copyai_poll.testing import Quirks, Script
from copyai_poll.testing._state import FakeState

T = Any


def _on_virtual_time(
    body: Callable[[VirtualTime, FakeState, InMemoryClient], Coroutine[Any, Any, T]],
) -> T:
    random.seed(7)  # the policies' jitter: the same schedule on every run
    time = VirtualTime()
    state = FakeState(clock=time, seed=7)
    return time.run(lambda: body(time, state, InMemoryClient(state)))


def _start(state: FakeState, *steps: tuple[str, float], final: str = "COMPLETE") -> str:
    state.queue_scripts([Script(steps=steps, final=final)])
    return state.start_run(WF, {"startVariables": {}})


def test_track_returns_the_same_handle_at_once_and_asks_nothing() -> None:
    """track() returns at once, once per run; reading a handle costs no request."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        run_id = _start(state, ("PROCESSING", 30))
        async with RunTracker(client, sleep=time.sleep, clock=time) as tracker:
            handle = tracker.track(WF, run_id)
            assert handle is tracker.track(WF, run_id)
            assert (None, None, (), False) == (
                handle.last_run,
                handle.status,
                handle.history,
                handle.done(),
            )
            await time.sleep(5)
            gets = client.gets
            for _ in range(100):
                assert RunStatus.PROCESSING == handle.status
                assert handle.last_run is not None
            assert gets == client.gets
            final = await handle
            assert RunStatus.COMPLETE == final.status
            assert [None, RunStatus.PROCESSING] == [c.previous for c in handle.history]

    _on_virtual_time(body)


def test_many_awaiters_share_one_wait() -> None:
    """Ten tasks awaiting one handle cost the requests of one wait, and get one result."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        alone = _start(state, ("PROCESSING", 20))
        steady = PollPolicy(jitter=0)  # both waits poll at the same moments of their runs
        async with RunTracker(client, policy=steady, sleep=time.sleep, clock=time) as tracker:
            await tracker.track(WF, alone)
            gets_alone = client.gets
            shared = _start(state, ("PROCESSING", 20))
            handle = tracker.track(WF, shared)
            results = await asyncio.gather(*(_await(handle) for _ in range(10)))
        assert 1 == len({id(run) for run in results})
        assert {shared} == {run.id for run in results}
        assert 2 * gets_alone == client.gets

    _on_virtual_time(body)


async def _await(handle: RunHandle) -> WorkflowRun:
    return await handle


def test_changes_replays_history_then_follows_live() -> None:
    """changes() yields what happened so far, then each change as it comes, then ends."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        run_id = _start(state, ("NEW", 2), ("PROCESSING", 20), final="FAILED")
        async with RunTracker(client, sleep=time.sleep, clock=time) as tracker:
            handle = tracker.track(WF, run_id)
            await time.sleep(5)  # NEW and PROCESSING already seen
            seen = [change.current async for change in handle.changes()]
            again = [change.current async for change in handle.changes()]
        assert [RunStatus.NEW, RunStatus.PROCESSING, RunStatus.FAILED] == seen
        assert seen == again
        with pytest.raises(RunFailedError):
            await handle

    _on_virtual_time(body)


def test_callbacks_see_each_change_once_in_order() -> None:
    """on_status_change and changes() agree with history: once each, in order."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        run_id = _start(state, ("NEW", 1), ("WAITING", 3), ("PROCESSING", 9))
        called: list[StatusChange] = []
        async with RunTracker(client, sleep=time.sleep, clock=time) as tracker:
            handle = tracker.track(WF, run_id, on_status_change=called.append)
            live = [change async for change in handle.changes()]
        assert list(handle.history) == called == live
        assert [RunStatus.NEW, RunStatus.WAITING, RunStatus.PROCESSING, RunStatus.COMPLETE] == [
            c.current for c in called
        ]

    _on_virtual_time(body)


def test_a_callback_error_is_what_awaiting_raises() -> None:
    """A callback's exception ends that wait and is raised, unchanged, by the handle."""

    class Boom(Exception):
        pass

    def explode(change: StatusChange) -> None:
        raise Boom(change.current)

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        run_id = _start(state, ("PROCESSING", 5))
        async with RunTracker(client, sleep=time.sleep, clock=time) as tracker:
            handle = tracker.track(WF, run_id, on_status_change=explode)
            with pytest.raises(Boom):
                await handle
            assert handle.done()

    _on_virtual_time(body)


def test_timeout_ends_the_handle_and_its_changes() -> None:
    """A run past the tracker's timeout raises PollTimeoutError from await and changes()."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        run_id = _start(state, ("PROCESSING", 600))
        async with RunTracker(client, timeout=30, sleep=time.sleep, clock=time) as tracker:
            handle = tracker.track(WF, run_id)
            with pytest.raises(PollTimeoutError):
                await handle
            with pytest.raises(PollTimeoutError):
                async for _ in handle.changes():
                    pass
            assert RunStatus.PROCESSING == handle.status

    _on_virtual_time(body)


def test_cancel_stops_one_run_only() -> None:
    """handle.cancel() ends that wait (await raises CancelledError); others go on."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        first, second = _start(state, ("PROCESSING", 60)), _start(state, ("PROCESSING", 60))
        async with RunTracker(client, sleep=time.sleep, clock=time) as tracker:
            one, other = tracker.track(WF, first), tracker.track(WF, second)
            await time.sleep(3)
            one.cancel()
            with pytest.raises(asyncio.CancelledError):
                await one
            gets = client.gets
            assert RunStatus.COMPLETE == (await other).status
            assert one.done()
        assert client.gets > gets

    _on_virtual_time(body)


def test_a_cancelled_awaiter_does_not_cancel_the_handle() -> None:
    """Cancelling a task that awaits a handle leaves the handle's wait running."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        run_id = _start(state, ("PROCESSING", 20))
        async with RunTracker(client, sleep=time.sleep, clock=time) as tracker:
            handle = tracker.track(WF, run_id)
            waiter = asyncio.create_task(_await(handle))
            await time.sleep(2)
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            assert not handle.done()
            assert RunStatus.COMPLETE == (await handle).status

    _on_virtual_time(body)


def test_as_completed_yields_in_finishing_order_including_later_runs() -> None:
    """as_completed() yields handles as they end, runs tracked meanwhile included."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        slow, fast = _start(state, ("PROCESSING", 60)), _start(state, ("PROCESSING", 5))
        order: list[str] = []
        async with RunTracker(client, sleep=time.sleep, clock=time) as tracker:
            tracker.track(WF, slow)
            tracker.track(WF, fast)
            async for handle in tracker.as_completed():
                order.append(handle.run_id)
                if handle.run_id == fast:
                    later = _start(state, ("PROCESSING", 10))
                    tracker.track(WF, later)
        assert [fast, later, slow] == order

    _on_virtual_time(body)


def test_leaving_the_block_cancels_everything() -> None:
    """Leaving the block cancels waits still running, leaves no task, and closes track()."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        ids = [_start(state, ("PROCESSING", 600)) for _ in range(20)]
        before = asyncio.all_tasks()
        async with RunTracker(client, sweep=True, sleep=time.sleep, clock=time) as tracker:
            handles = [tracker.track(WF, run_id) for run_id in ids]
            await time.sleep(30)
        assert before == asyncio.all_tasks()
        assert all(handle.done() for handle in handles)
        with pytest.raises(RuntimeError, match="closed"):
            tracker.track(WF, ids[0])

    _on_virtual_time(body)


def test_sweep_needs_a_client_that_lists() -> None:
    """sweep=True with a fetcher that cannot list runs is a TypeError at once."""

    class OnlyGets:
        async def get_run(self, workflow_id: str, run_id: str) -> WorkflowRun:
            raise AssertionError("not called")

    with pytest.raises(TypeError, match="CopyAIClient"):
        RunTracker(OnlyGets(), sweep=True)


def test_resuming_after_a_restart_needs_only_the_run_id() -> None:
    """A new tracker given only the ids of a previous one's runs finds each run's end."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        ids = [_start(state, ("PROCESSING", 40)) for _ in range(3)]
        async with RunTracker(client, sleep=time.sleep, clock=time) as first:
            for run_id in ids:
                first.track(WF, run_id)
            await time.sleep(10)
        async with RunTracker(client, sleep=time.sleep, clock=time) as second:
            finals = [await second.track(WF, run_id) for run_id in ids]
        assert [RunStatus.COMPLETE] * 3 == [run.status for run in finals]

    _on_virtual_time(body)


class _ListAhead(InMemoryClient):
    """A list that claims runs are COMPLETE while GET still shows them in progress."""

    async def list_page(
        self, workflow_id: str, page: int, *, page_size: int = 100
    ) -> tuple[int | None, list[Any]]:
        total, items = await super().list_page(workflow_id, page, page_size=page_size)
        return total, [{**item, "status": "COMPLETE"} for item in items]


def test_a_listed_end_is_confirmed_by_get_and_a_lying_list_is_dropped() -> None:
    """A run the list calls COMPLETE is reported only when GET agrees; such a list is dropped."""

    async def body(time: VirtualTime, state: FakeState, _: InMemoryClient) -> None:
        client = _ListAhead(state)
        ids = [_start(state, ("PROCESSING", 120)) for _ in range(10)]
        async with RunTracker(client, sweep=True, sleep=time.sleep, clock=time) as tracker:
            handles = [tracker.track(WF, run_id) for run_id in ids]
            await time.sleep(60)
            assert not any(handle.done() for handle in handles)
            pages = client.pages
            finals = [await handle for handle in handles]
        assert all(final.status is RunStatus.COMPLETE for final in finals)
        assert all(h.history[-1].elapsed >= 120 for h in handles)
        assert pages == client.pages  # fell back to polling each run

    _on_virtual_time(body)


def test_a_list_going_backwards_is_no_observation() -> None:
    """A frozen list is outrun by the runs' own GETs, and its statuses behind them ignored."""

    class Behind(InMemoryClient):
        async def list_page(
            self, workflow_id: str, page: int, *, page_size: int = 100
        ) -> tuple[int | None, list[Any]]:
            total, items = await super().list_page(workflow_id, page, page_size=page_size)
            return total, [{**item, "status": "NEW"} for item in items]

    async def body(time: VirtualTime, state: FakeState, _: InMemoryClient) -> None:
        client = Behind(state)
        ids = [_start(state, ("PROCESSING", 300)) for _ in range(5)]
        async with RunTracker(client, sweep=True, sleep=time.sleep, clock=time) as tracker:
            handles = [tracker.track(WF, run_id) for run_id in ids]
            await time.sleep(200)  # the list froze at NEW; GETs showed PROCESSING
            assert {(RunStatus.NEW, RunStatus.PROCESSING)} == {
                tuple(c.current for c in h.history) for h in handles
            }
            await asyncio.gather(*(_await(h) for h in handles))
        assert all(
            [RunStatus.NEW, RunStatus.PROCESSING, RunStatus.COMPLETE]
            == [c.current for c in h.history]
            for h in handles
        )

    _on_virtual_time(body)


def test_learn_holds_the_first_poll_of_later_runs() -> None:
    """With learn=True, a run started after others finished is first polled near their length."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        async with RunTracker(client, learn=True, sleep=time.sleep, clock=time) as tracker:
            await tracker.track(WF, _start(state, ("NEW", 1), ("PROCESSING", 20)))
            learned = client.gets
            later = tracker.track(WF, _start(state, ("NEW", 1), ("PROCESSING", 20)))
            await time.sleep(15)
            assert later.last_run is None
            await later
        assert client.gets - learned < learned

    _on_virtual_time(body)


@pytest.mark.parametrize(
    "quirk", ["shuffled", "no status on half", "stale by 5 s", "20% dropped", "all together"]
)
def test_sweeps_report_every_run_right_under_list_quirks(quirk: str) -> None:
    """Whatever the list does, every run ends in its true state, each change once, in order."""
    swept = fleet(runs=150, sweep=True, quirks=QUIRKS[quirk], seed=3)
    alone = fleet(runs=150, quirks=QUIRKS[quirk], seed=3)

    assert () == swept.wrong
    assert swept.gets + swept.pages <= 1.1 * (alone.gets + alone.pages)


@pytest.mark.parametrize("quirk", ["none (oldest first)", "newest first"])
def test_sweeps_cost_less_than_polling_each_run(quirk: str) -> None:
    """Sweeps read at most the pages the GETs they replace would cost, and far fewer here."""
    swept = fleet(runs=150, sweep=True, quirks=QUIRKS[quirk], seed=3)
    alone = fleet(runs=150, quirks=QUIRKS[quirk], seed=3)

    assert () == swept.wrong
    assert swept.gets + swept.pages < 0.5 * (alone.gets + alone.pages)


def test_a_fleet_of_a_thousand_at_two_requests_a_run() -> None:
    """1,000 runs swept cost at most 2 requests a run, at no worse p95 lag than polling."""
    swept = fleet(runs=1000, sweep=True)
    alone = fleet(runs=1000)

    assert () == swept.wrong
    assert swept.requests_per_run <= 2.0
    assert swept.p95_lag <= alone.p95_lag


def test_learning_saves_a_fifth_of_the_requests() -> None:
    """learn=True makes 20% fewer requests than polling alone, at no worse p95 lag (5 x 1,000)."""
    learned = fleets(range(5), runs=1000, learn=True)
    alone = fleets(range(5), runs=1000)

    assert () == learned.wrong
    assert learned.requests_per_run <= 0.8 * alone.requests_per_run
    assert learned.p95_lag <= alone.p95_lag


def test_ten_thousand_handles_resolve_without_requests_for_queries() -> None:
    """10,000 tracked runs all resolve; asking each for its status sends nothing."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        ids = [_start(state, ("PROCESSING", 20 + n % 40)) for n in range(10_000)]
        before = asyncio.all_tasks()
        policy = PollPolicy(initial=2, maximum=10)
        async with RunTracker(client, policy=policy, sleep=time.sleep, clock=time) as tracker:
            handles = [tracker.track(WF, run_id) for run_id in ids]
            await time.sleep(10)
            gets = client.gets
            statuses = {handle.status for handle in handles}
            assert gets == client.gets
            assert {RunStatus.PROCESSING} == statuses
            finals = await asyncio.gather(*(_await(h) for h in handles))
        assert before == asyncio.all_tasks()
        assert 10_000 == sum(final.status is RunStatus.COMPLETE for final in finals)

    _on_virtual_time(body)


def test_repr_names_the_run_and_where_it_is() -> None:
    """A handle's repr says which run, its status, and whether it is done."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        run_id = _start(state, ("PROCESSING", 5))
        async with RunTracker(client, sleep=time.sleep, clock=time) as tracker:
            handle = tracker.track(WF, run_id)
            assert f"<RunHandle {run_id} of {WF}: not seen yet (tracking)>" == repr(handle)
            await handle
            assert f"<RunHandle {run_id} of {WF}: COMPLETE (done)>" == repr(handle)
            assert "1 finished" in repr(tracker)

    _on_virtual_time(body)


@pytest.mark.parametrize("sweep", [False, True])
def test_a_delivery_ends_a_tracked_wait_at_once(sweep: bool) -> None:
    """With webhooks=, a delivery makes the run GET at once; the safety net polls little."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        receiver = WebhookReceiver()
        ids = [_start(state, ("PROCESSING", 30)) for _ in range(3)]
        async with RunTracker(
            client, webhooks=receiver, sweep=sweep, sleep=time.sleep, clock=time
        ) as tracker:
            handles = [tracker.track(WF, run_id) for run_id in ids]
            await time.sleep(30)
            assert not any(handle.done() for handle in handles)
            for run_id in ids:
                delivery = {"type": "workflowRun.completed", "workflowRunId": run_id}
                assert 204 == receiver._deliver(json.dumps(delivery).encode())
            await time.sleep(0.001)
            assert all(handle.done() for handle in handles)
        assert all(RunStatus.COMPLETE == h.status for h in handles)
        assert client.requests <= 3 * len(ids)  # a first look, the woken GET, a spare

    _on_virtual_time(body)


def test_forged_deliveries_never_resolve_a_tracked_run() -> None:
    """A flood of deliveries for an unfinished run costs at most one GET a second."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        receiver = WebhookReceiver()
        run_id = _start(state, ("PROCESSING", 60))
        async with RunTracker(client, webhooks=receiver, sleep=time.sleep, clock=time) as tracker:
            handle = tracker.track(WF, run_id)
            await time.sleep(1)
            before = client.gets
            forged = json.dumps({"type": "workflowRun.completed", "id": run_id}).encode()
            for _ in range(10):
                for _ in range(100):
                    receiver._deliver(forged)
                await time.sleep(1)
            assert not handle.done()
            assert client.gets - before <= 11
            assert RunStatus.COMPLETE == (await handle).status

    _on_virtual_time(body)


def test_a_failing_list_leaves_the_runs_to_their_own_gets() -> None:
    """When every page fails, the runs that were due GET for themselves and still resolve."""

    class Broken(InMemoryClient):
        async def list_page(
            self, workflow_id: str, page: int, *, page_size: int = 100
        ) -> tuple[int | None, list[Any]]:
            self.pages += 1
            raise ServerError("the list is down", status=503)

    async def body(time: VirtualTime, state: FakeState, _: InMemoryClient) -> None:
        client = Broken(state)
        ids = [_start(state, ("PROCESSING", 40)) for _ in range(5)]
        async with RunTracker(client, sweep=True, sleep=time.sleep, clock=time) as tracker:
            finals = [await tracker.track(WF, run_id) for run_id in ids]
        assert [RunStatus.COMPLETE] * 5 == [final.status for final in finals]
        assert client.pages <= 3  # it stops trying once pages cost more than they save

    _on_virtual_time(body)


def test_a_run_not_visible_yet_is_swept_within_the_404_grace() -> None:
    """A swept run that answers 404 for its first seconds is polled again, not failed."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        run_id = _start(state, ("PROCESSING", 20))
        state.set_quirks(Quirks(not_found_for=8), run_id=run_id)
        async with RunTracker(client, sweep=True, sleep=time.sleep, clock=time) as tracker:
            final = await tracker.track(WF, run_id)
        assert RunStatus.COMPLETE == final.status

    _on_virtual_time(body)


def test_as_completed_ends_when_the_tracker_closes() -> None:
    """A task iterating as_completed() ends, rather than hangs, when the tracker closes."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        seen: list[RunHandle] = []

        async def follow(tracker: RunTracker) -> None:
            async for handle in tracker.as_completed():
                seen.append(handle)

        async with RunTracker(client, sleep=time.sleep, clock=time) as tracker:
            tracker.track(WF, _start(state, ("PROCESSING", 600)))
            follower = asyncio.create_task(follow(tracker))
            await time.sleep(5)
        await follower
        assert [] == seen

    _on_virtual_time(body)


def test_tracking_a_cancelled_run_again_starts_a_new_wait() -> None:
    """After handle.cancel(), track() of the same run returns a new, running handle."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        run_id = _start(state, ("PROCESSING", 20))
        async with RunTracker(client, sleep=time.sleep, clock=time) as tracker:
            first = tracker.track(WF, run_id)
            await time.sleep(1)
            first.cancel()
            await asyncio.sleep(0)
            second = tracker.track(WF, run_id)
            assert second is not first
            assert RunStatus.COMPLETE == (await second).status
            assert second is tracker.track(WF, run_id)

    _on_virtual_time(body)


def test_only_the_latest_finished_runs_are_remembered() -> None:
    """Past keep_finished, the oldest finished handles are forgotten; tracking one starts anew."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        ids = [_start(state, ("PROCESSING", 10 * n + 5)) for n in range(5)]
        async with RunTracker(client, keep_finished=2, sleep=time.sleep, clock=time) as tracker:
            handles = [tracker.track(WF, run_id) for run_id in ids]
            await asyncio.gather(*(_await(h) for h in handles))
            assert 2 == len(tracker.handles())
            assert handles[-1] is tracker.track(WF, ids[-1])
            again = tracker.track(WF, ids[0])
            assert again is not handles[0]
            assert RunStatus.COMPLETE == (await again).status

    _on_virtual_time(body)


def test_a_delivery_cuts_a_learned_head_start_short() -> None:
    """A run held by learn=True is polled at once when a delivery for it arrives."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        receiver = WebhookReceiver()
        async with RunTracker(
            client, webhooks=receiver, learn=True, sleep=time.sleep, clock=time
        ) as tracker:
            await tracker.track(WF, _start(state, ("NEW", 1), ("PROCESSING", 60)))
            fast = _start(state, ("PROCESSING", 5))
            handle = tracker.track(WF, fast)
            await time.sleep(6)
            assert handle.last_run is None  # held: the first run took a minute
            receiver._deliver(json.dumps({"type": "workflowRun.completed", "id": fast}).encode())
            await time.sleep(0.001)
            assert RunStatus.COMPLETE == handle.status

    _on_virtual_time(body)


def test_the_waits_a_head_start_spends() -> None:
    """A head start spends the policy's waits that fit in it, jitter aside."""
    from copyai_poll._tracker import _waits_within

    policy = PollPolicy()  # 1, 1.5, 2.25, 3.375, 5.06, 7.59, then 10 s each
    assert [0, 1, 2, 2, 6, 13] == [_waits_within(policy, s) for s in (0, 1, 2.5, 4.7, 21, 100)]


def test_a_workflow_that_got_faster_is_learned() -> None:
    """Runs first seen already finished after a head start shorten the next head starts."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        async with RunTracker(client, learn=True, sleep=time.sleep, clock=time) as tracker:
            await tracker.track(WF, _start(state, ("NEW", 1), ("PROCESSING", 39)))
            firsts = []
            for _ in range(4):
                started = time()
                handle = tracker.track(WF, _start(state, ("PROCESSING", 2)))
                await handle
                firsts.append(handle.history[0].elapsed)
                assert time() - started == handle.history[-1].elapsed
        assert firsts == sorted(firsts, reverse=True)
        assert firsts[-1] < firsts[0] / 4  # 36 s, 18 s, 9 s, 4.5 s

    _on_virtual_time(body)


def test_a_head_start_is_never_longer_than_twelve_maximums() -> None:
    """However long a workflow's runs take, a run is first looked at within 12 maximums."""

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        policy = PollPolicy(initial=1, maximum=5)
        async with RunTracker(
            client, policy=policy, learn=True, sleep=time.sleep, clock=time
        ) as tracker:
            await tracker.track(WF, _start(state, ("PROCESSING", 600)))
            later = tracker.track(WF, _start(state, ("PROCESSING", 600)))
            await time.sleep(61)
            assert RunStatus.PROCESSING == later.status

    _on_virtual_time(body)


def test_sweeps_run_outside_any_one_run_s_deadline() -> None:
    """The sweeps' requests do not carry the deadline of the run whose wait started them."""
    from copyai_poll._deadline import time_left

    seen: list[object] = []

    class Watching(InMemoryClient):
        async def list_page(
            self, workflow_id: str, page: int, *, page_size: int = 100
        ) -> tuple[int | None, list[Any]]:
            seen.append(time_left.get())
            return await super().list_page(workflow_id, page, page_size=page_size)

    async def body(time: VirtualTime, state: FakeState, _: InMemoryClient) -> None:
        client = Watching(state)
        async with RunTracker(
            client, sweep=True, timeout=30, sleep=time.sleep, clock=time
        ) as tracker:
            await tracker.track(WF, _start(state, ("PROCESSING", 10)))
        assert seen
        assert {None} == set(seen)

    _on_virtual_time(body)


def test_a_delivery_does_not_cut_a_swept_run_s_retry_after_short() -> None:
    """A swept run told by a 429 to wait 5 s does not GET sooner for a delivery."""

    async def body(time: VirtualTime, state: FakeState, _: InMemoryClient) -> None:
        gets: list[float] = []

        class Throttled(InMemoryClient):
            async def get_run(self, workflow_id: str, run_id: str) -> WorkflowRun:
                gets.append(time())
                if len(gets) == 1:
                    raise RateLimitError("slow down", status=429, retry_after=5.0)
                return await super().get_run(workflow_id, run_id)

            async def list_page(
                self, workflow_id: str, page: int, *, page_size: int = 100
            ) -> tuple[int | None, list[Any]]:
                return 0, []  # the list never shows it: the run GETs for itself

        receiver = WebhookReceiver()
        run_id = _start(state, ("PROCESSING", 60))
        async with RunTracker(
            Throttled(state), webhooks=receiver, sweep=True, sleep=time.sleep, clock=time
        ) as tracker:
            tracker.track(WF, run_id)
            while not gets:
                await time.sleep(0.1)
            await time.sleep(0.5)
            receiver._deliver(json.dumps({"id": run_id}).encode())
            await time.sleep(3)
            assert 1 == len(gets)
            await time.sleep(3)
            assert 2 == len(gets)
            assert gets[1] - gets[0] >= 5

    _on_virtual_time(body)


def test_a_callback_error_of_an_unawaited_handle_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A callback that raises ends its wait, and the error is logged even if nobody awaits."""

    def broken(change: StatusChange) -> None:
        raise ZeroDivisionError("oops")

    async def body(time: VirtualTime, state: FakeState, client: InMemoryClient) -> None:
        async with RunTracker(client, sleep=time.sleep, clock=time) as tracker:
            handle = tracker.track(WF, _start(state, ("PROCESSING", 5)), on_status_change=broken)
            await time.sleep(1)
            assert handle.done()

    with caplog.at_level("ERROR", logger="copyai_poll"):
        _on_virtual_time(body)
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert isinstance(record.exc_info[1], ZeroDivisionError)  # type: ignore[index]
