"""poll_until_done, watch and poll_many against scripted fetchers on a virtual clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from copyai_poll import (
    NotFoundError,
    PollPolicy,
    PollTimeoutError,
    RunFailedError,
    RunOutcome,
    RunStatus,
    ServerError,
    StatusChange,
    WorkflowRun,
    poll_many,
    poll_until_done,
    watch,
)
from tests.helpers import RUN, WF, FakeClock, ScriptedFetcher, run

FIXED = PollPolicy(initial=1.0, maximum=8.0, multiplier=2.0, jitter=0.0, reset_on_change=False)
NOT_FOUND = NotFoundError("not yet", status=404, error_code="NOT_FOUND")


async def poll(fetcher: Any, clock: FakeClock, **options: Any) -> WorkflowRun:
    options.setdefault("policy", FIXED)
    return await poll_until_done(fetcher, WF, RUN, sleep=clock.sleep, clock=clock, **options)


@pytest.mark.asyncio
async def test_resolves_with_the_complete_run(clock: FakeClock) -> None:
    """Returns the final run once it is COMPLETE."""
    fetcher = ScriptedFetcher([run("NEW"), run("PROCESSING"), run("COMPLETE", output={"a": 1})])

    final = await poll(fetcher, clock)

    assert RunStatus.COMPLETE == final.status
    assert {"a": 1} == dict(final.output)
    assert 3 == fetcher.calls


@pytest.mark.asyncio
async def test_failed_run_raises_with_run_and_history(clock: FakeClock) -> None:
    """Raises RunFailedError carrying the failed run and the status history."""
    fetcher = ScriptedFetcher([run("PROCESSING"), run("FAILED", error="boom")])

    with pytest.raises(RunFailedError) as info:
        await poll(fetcher, clock)

    assert "boom" == info.value.run.error
    assert [RunStatus.PROCESSING, RunStatus.FAILED] == [c.current for c in info.value.history]
    assert "boom" in str(info.value)


@pytest.mark.asyncio
async def test_first_poll_is_immediate_then_backoff_grows_to_maximum(clock: FakeClock) -> None:
    """Waits min(maximum, initial * multiplier**n) between polls, none before the first."""
    fetcher = ScriptedFetcher([run("PROCESSING")] * 6 + [run("COMPLETE")])

    await poll(fetcher, clock)

    assert [1.0, 2.0, 4.0, 8.0, 8.0, 8.0] == clock.sleeps


@pytest.mark.asyncio
async def test_reset_on_change_restarts_from_initial(clock: FakeClock) -> None:
    """A status change starts the intervals again from `initial`."""
    policy = PollPolicy(initial=1.0, maximum=8.0, multiplier=2.0, jitter=0.0)
    answers = [run("NEW"), run("NEW"), run("NEW"), run("PROCESSING"), run("PROCESSING")]
    fetcher = ScriptedFetcher([*answers, run("COMPLETE")])

    await poll(fetcher, clock, policy=policy)

    assert [1.0, 2.0, 4.0, 1.0, 2.0] == clock.sleeps


@pytest.mark.asyncio
async def test_jitter_spreads_waits_within_bounds(clock: FakeClock) -> None:
    """Jittered waits stay within the jitter fraction of the nominal interval."""
    policy = PollPolicy(initial=1.0, maximum=1.0, multiplier=1.0, jitter=0.5)
    fetcher = ScriptedFetcher([run("PROCESSING")] * 50 + [run("COMPLETE")])

    await poll(fetcher, clock, policy=policy)

    assert all(0.5 <= s <= 1.5 for s in clock.sleeps)
    assert len(set(clock.sleeps)) > 1


@pytest.mark.asyncio
async def test_status_changes_fire_once_each_in_order(clock: FakeClock) -> None:
    """on_status_change sees every change once, in order, starting from previous=None."""
    statuses = ["NEW", "NEW", "WAITING", "PROCESSING", "RETRYING", "PROCESSING", "COMPLETE"]
    fetcher = ScriptedFetcher([run(s) for s in statuses])
    seen: list[StatusChange] = []

    await poll(fetcher, clock, on_status_change=seen.append)

    expected = [
        (None, "NEW"),
        ("NEW", "WAITING"),
        ("WAITING", "PROCESSING"),
        ("PROCESSING", "RETRYING"),
        ("RETRYING", "PROCESSING"),
        ("PROCESSING", "COMPLETE"),
    ]
    assert expected == [(c.previous and c.previous.value, c.current.value) for c in seen]
    assert [1, 3, 4, 5, 6, 7] == [c.polls for c in seen]


@pytest.mark.asyncio
async def test_async_callbacks_are_awaited(clock: FakeClock) -> None:
    """Async callbacks are awaited, the terminal change before the poll returns."""
    fetcher = ScriptedFetcher([run("PROCESSING"), run("COMPLETE")])
    seen: list[str] = []

    async def on_change(change: StatusChange) -> None:
        await asyncio.sleep(0)
        seen.append(f"change {change.current.value}")

    async def on_poll(polled: WorkflowRun) -> None:
        await asyncio.sleep(0)
        seen.append(f"poll {polled.raw_status}")

    await poll(fetcher, clock, on_status_change=on_change, on_poll=on_poll)

    expected = ["change PROCESSING", "poll PROCESSING", "change COMPLETE", "poll COMPLETE"]
    assert expected == seen


@pytest.mark.asyncio
async def test_terminal_change_fires_before_failure_is_raised(clock: FakeClock) -> None:
    """The FAILED change reaches the callback before RunFailedError is raised."""
    fetcher = ScriptedFetcher([run("FAILED")])
    seen: list[RunStatus] = []

    with pytest.raises(RunFailedError):
        await poll(fetcher, clock, on_status_change=lambda c: seen.append(c.current))

    assert [RunStatus.FAILED] == seen


@pytest.mark.asyncio
async def test_callback_exception_ends_the_poll_unchanged(clock: FakeClock) -> None:
    """An exception from a callback propagates as is and stops polling."""
    fetcher = ScriptedFetcher([run("NEW"), run("PROCESSING"), run("COMPLETE")])
    boom = LookupError("from the callback")

    def on_change(change: StatusChange) -> None:
        if change.current is RunStatus.PROCESSING:
            raise boom

    with pytest.raises(LookupError) as info:
        await poll(fetcher, clock, on_status_change=on_change)

    assert boom is info.value
    assert 2 == fetcher.calls


@pytest.mark.asyncio
async def test_unknown_and_missing_status_reach_on_poll_only(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Unknown or missing statuses count as in progress and never fire a change."""
    answers = [run("QUEUED_POLL_TEST"), run(None), run("PROCESSING"), run("COMPLETE")]
    fetcher = ScriptedFetcher(answers)
    changes: list[StatusChange] = []
    polled: list[str] = []

    with caplog.at_level(logging.WARNING, logger="copyai_poll"):
        await poll(
            fetcher,
            clock,
            on_status_change=changes.append,
            on_poll=lambda r: polled.append(r.raw_status),
        )

    assert ["QUEUED_POLL_TEST", "", "PROCESSING", "COMPLETE"] == polled
    assert [c.previous for c in changes] == [None, RunStatus.PROCESSING]
    assert 1 == sum("QUEUED_POLL_TEST" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_not_found_within_grace_is_polled_again(clock: FakeClock) -> None:
    """A 404 soon after polling began means "not visible yet" and counts as a poll."""
    fetcher = ScriptedFetcher([NOT_FOUND, NOT_FOUND, run("COMPLETE")])
    seen: list[StatusChange] = []

    await poll(fetcher, clock, on_status_change=seen.append)

    assert 3 == seen[0].polls
    assert 3.0 == seen[0].elapsed


@pytest.mark.asyncio
async def test_not_found_after_grace_is_raised(clock: FakeClock) -> None:
    """A 404 once not_found_grace has passed is a NotFoundError."""
    policy = PollPolicy(initial=1.0, maximum=1.0, jitter=0.0, not_found_grace=2.5)
    fetcher = ScriptedFetcher([NOT_FOUND])

    with pytest.raises(NotFoundError):
        await poll(fetcher, clock, policy=policy)

    assert 4 == fetcher.calls  # at 0, 1, 2 s inside the grace; the one at 3 s is final


@pytest.mark.asyncio
async def test_other_fetch_errors_end_the_poll(clock: FakeClock) -> None:
    """An error the fetcher gives up on propagates; polling does not retry it again."""
    error = ServerError("down", status=503)
    fetcher = ScriptedFetcher([run("PROCESSING"), error])

    with pytest.raises(ServerError) as info:
        await poll(fetcher, clock)

    assert error is info.value


@pytest.mark.asyncio
async def test_timeout_raises_poll_timeout_with_last_run(clock: FakeClock) -> None:
    """PollTimeoutError (a TimeoutError) carries the last run once the deadline passes."""
    fetcher = ScriptedFetcher([run("NEW"), run("PROCESSING")])

    with pytest.raises(TimeoutError) as info:
        await poll(fetcher, clock, timeout=10.0)

    assert isinstance(info.value, PollTimeoutError)
    assert RunStatus.PROCESSING == info.value.last_run.status
    assert [RunStatus.NEW, RunStatus.PROCESSING] == [c.current for c in info.value.history]
    assert 10.0 == sum(clock.sleeps)  # the last sleep was clamped to the deadline
    assert 1010.0 == clock.now


@pytest.mark.asyncio
async def test_timeout_bounds_an_in_flight_request() -> None:
    """A request that never answers is cut off by the deadline, with last_run None."""

    class Hanging:
        async def get_run(self, workflow_id: str, run_id: str) -> WorkflowRun:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    with pytest.raises(PollTimeoutError) as info:
        await poll_until_done(Hanging(), WF, RUN, timeout=0.05)

    assert info.value.last_run is None


@pytest.mark.asyncio
async def test_fetcher_timeout_error_is_not_mistaken_for_the_deadline(clock: FakeClock) -> None:
    """A TimeoutError raised by a custom fetcher itself propagates unchanged."""
    error = TimeoutError("the fetcher's own")
    fetcher = ScriptedFetcher([error])

    with pytest.raises(TimeoutError) as info:
        await poll(fetcher, clock, timeout=100.0)

    assert error is info.value


@pytest.mark.asyncio
async def test_zero_timeout_gives_up_before_polling(clock: FakeClock) -> None:
    """timeout=0 raises PollTimeoutError without a request."""
    fetcher = ScriptedFetcher([run("COMPLETE")])

    with pytest.raises(PollTimeoutError):
        await poll(fetcher, clock, timeout=0)

    assert 0 == fetcher.calls


@pytest.mark.parametrize("timeout", [-1.0, float("nan")])
@pytest.mark.asyncio
async def test_nonsense_timeout_is_a_value_error(clock: FakeClock, timeout: float) -> None:
    """A negative or NaN timeout is a ValueError."""
    with pytest.raises(ValueError, match="timeout"):
        await poll(ScriptedFetcher([run("COMPLETE")]), clock, timeout=timeout)


@pytest.mark.asyncio
async def test_cancellation_propagates_promptly() -> None:
    """Cancelling the task stops the poll and re-raises CancelledError."""
    fetcher = ScriptedFetcher([run("PROCESSING")])
    task = asyncio.create_task(poll_until_done(fetcher, WF, RUN, policy=FIXED))
    while fetcher.calls == 0:
        await asyncio.sleep(0)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert 1 == fetcher.calls


@pytest.mark.asyncio
async def test_task_group_sibling_failure_cancels_the_poll() -> None:
    """A failing sibling in a TaskGroup cancels the poll; no task of ours stays pending."""
    fetcher = ScriptedFetcher([run("PROCESSING")])
    poll_task: asyncio.Task[WorkflowRun] | None = None

    async def failing_sibling() -> None:
        while fetcher.calls == 0:
            await asyncio.sleep(0)
        raise LookupError("sibling")

    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.TaskGroup() as group:
            poll_task = group.create_task(poll_until_done(fetcher, WF, RUN, policy=FIXED))
            group.create_task(failing_sibling())

    assert info.value.subgroup(LookupError) is not None
    assert poll_task is not None
    assert poll_task.cancelled()
    assert {asyncio.current_task()} == asyncio.all_tasks()


@pytest.mark.asyncio
async def test_watch_yields_changes_and_ends_with_failed(clock: FakeClock) -> None:
    """watch yields each change and ends with FAILED as a value, not an exception."""
    fetcher = ScriptedFetcher([run("NEW"), run("PROCESSING"), run("FAILED")])

    changes = [
        c async for c in watch(fetcher, WF, RUN, policy=FIXED, sleep=clock.sleep, clock=clock)
    ]

    assert [RunStatus.NEW, RunStatus.PROCESSING, RunStatus.FAILED] == [c.current for c in changes]


@pytest.mark.asyncio
async def test_watch_timeout_is_poll_timeout_error(clock: FakeClock) -> None:
    """watch raises PollTimeoutError when its timeout passes."""
    fetcher = ScriptedFetcher([run("PROCESSING")])
    seen: list[StatusChange] = []

    with pytest.raises(PollTimeoutError):
        async for change in watch(
            fetcher, WF, RUN, policy=FIXED, timeout=5, sleep=clock.sleep, clock=clock
        ):
            seen.append(change)

    assert [RunStatus.PROCESSING] == [c.current for c in seen]


class ByRunFetcher:
    """Answers per run id: run ids name their terminal state, e.g. "ok-1", "fail-2"."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0

    async def get_run(self, workflow_id: str, run_id: str) -> WorkflowRun:
        self.calls[run_id] = self.calls.get(run_id, 0) + 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0)
        self.in_flight -= 1
        if run_id.startswith("boom"):
            raise ServerError("down", status=500)
        done = self.calls[run_id] > int(run_id.rsplit("-", 1)[1])
        status = ("FAILED" if run_id.startswith("fail") else "COMPLETE") if done else "PROCESSING"
        return WorkflowRun.from_api({"id": run_id, "workflowId": workflow_id, "status": status})


@pytest.mark.asyncio
async def test_poll_many_yields_each_outcome_and_isolates_failures(clock: FakeClock) -> None:
    """poll_many yields one outcome per run; failures never stop the others."""
    fetcher = ByRunFetcher()
    pairs = [(WF, "ok-3"), (WF, "fail-1"), (WF, "boom-0"), (WF, "ok-0")]

    outcomes = [
        o async for o in poll_many(fetcher, pairs, policy=FIXED, sleep=clock.sleep, clock=clock)
    ]

    by_id = {o.run_id: o for o in outcomes}
    assert {"ok-3", "fail-1", "boom-0", "ok-0"} == set(by_id)
    assert by_id["ok-3"].ok
    assert RunStatus.COMPLETE == by_id["ok-3"].run.status
    assert isinstance(by_id["fail-1"].error, RunFailedError)
    assert RunStatus.FAILED == by_id["fail-1"].run.status
    assert isinstance(by_id["boom-0"].error, ServerError)  # after the outage grace
    assert by_id["boom-0"].run is None
    assert "boom-0" == outcomes[-1].run_id  # it gave up only after the outage grace


@pytest.mark.asyncio
async def test_poll_many_respects_concurrency(clock: FakeClock) -> None:
    """No more than `concurrency` runs are polled at a time."""
    fetcher = ByRunFetcher()
    pairs = [(WF, f"ok-{i % 3}") for i in range(20)]

    outcomes = [
        o
        async for o in poll_many(
            fetcher, pairs, concurrency=3, policy=FIXED, sleep=clock.sleep, clock=clock
        )
    ]

    assert 20 == len(outcomes)
    assert fetcher.max_in_flight <= 3


@pytest.mark.asyncio
async def test_poll_many_accepts_runs_and_cancels_the_rest_on_break(clock: FakeClock) -> None:
    """WorkflowRun items work as inputs; leaving early cancels the polls still running."""
    fetcher = ByRunFetcher()
    started = [WorkflowRun.from_api({"id": i, "workflowId": WF}) for i in ("ok-0", "ok-1000000")]

    async with contextlib.aclosing(
        poll_many(fetcher, started, policy=FIXED, sleep=clock.sleep, clock=clock)
    ) as outcomes:
        first = await anext(outcomes)

    assert isinstance(first, RunOutcome)
    assert "ok-0" == first.run_id
    assert {asyncio.current_task()} == asyncio.all_tasks()


@pytest.mark.asyncio
async def test_poll_many_rejects_bad_concurrency() -> None:
    """concurrency below 1 is a ValueError."""
    with pytest.raises(ValueError, match="concurrency"):
        async for _ in poll_many(ByRunFetcher(), [(WF, "ok-0")], concurrency=0):
            pass


@pytest.mark.asyncio
async def test_logs_debug_per_poll_and_info_per_change_with_ids(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Each poll logs at DEBUG and each change at INFO, naming the run and workflow."""
    fetcher = ScriptedFetcher([run("PROCESSING"), run("PROCESSING"), run("COMPLETE")])

    with caplog.at_level(logging.DEBUG, logger="copyai_poll"):
        await poll(fetcher, clock)

    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    info = [r for r in caplog.records if r.levelno == logging.INFO]
    assert 3 == len(debug)
    assert 2 == len(info)
    assert all(RUN in r.getMessage() and WF in r.getMessage() for r in debug + info)


# -- generators, pipelines and the last run seen -------------------------------------


def test_watch_and_poll_many_are_async_generators() -> None:
    """watch and poll_many return async generators, which contextlib.aclosing accepts."""
    import collections.abc

    fetcher = ScriptedFetcher([run("COMPLETE")])
    for gen in (watch(fetcher, WF, RUN), poll_many(fetcher, [(WF, RUN)])):
        assert isinstance(gen, collections.abc.AsyncGenerator)
        assert isinstance(contextlib.aclosing(gen), contextlib.aclosing)


@pytest.mark.asyncio
async def test_poll_many_watches_each_run_of_an_async_iterable_as_it_arrives(
    clock: FakeClock,
) -> None:
    """poll_many takes an async iterable: each run is watched as soon as it arrives."""
    fetcher = ByRunFetcher()
    gate = asyncio.Event()
    yielded: list[str] = []

    async def started() -> Any:
        yield (WF, "ok-0")
        yielded.append("ok-0")
        await gate.wait()  # the source is slow; the first run is finished meanwhile
        yield (WF, "ok-1")
        yielded.append("ok-1")

    seen: list[str] = []
    async with contextlib.aclosing(
        poll_many(fetcher, started(), policy=FIXED, sleep=clock.sleep, clock=clock)
    ) as outcomes:
        async for outcome in outcomes:
            seen.append(outcome.run_id)
            gate.set()

    assert ["ok-0", "ok-1"] == seen == yielded


@pytest.mark.asyncio
async def test_poll_many_async_source_failure_propagates(clock: FakeClock) -> None:
    """An async source that raises makes poll_many raise it, cancelling the polls."""

    async def broken() -> Any:
        yield (WF, "ok-5")
        raise LookupError("the source broke")

    with pytest.raises(LookupError, match="source broke"):
        async for _ in poll_many(ByRunFetcher(), broken(), sleep=clock.sleep, clock=clock):
            pass
    assert {asyncio.current_task()} == asyncio.all_tasks()


@pytest.mark.asyncio
async def test_poll_many_outcome_run_is_current_when_a_status_callback_raises(
    clock: FakeClock,
) -> None:
    """RunOutcome.run is the run whose change the raising callback was handed, not older."""
    fetcher = ScriptedFetcher([run("NEW"), run("PROCESSING"), run("COMPLETE")])

    def explode_on_processing(change: StatusChange) -> None:
        if change.current is RunStatus.PROCESSING:
            raise RuntimeError("callback bug")

    outcomes = [
        o
        async for o in poll_many(
            fetcher,
            [(WF, RUN)],
            on_status_change=explode_on_processing,
            sleep=clock.sleep,
            clock=clock,
        )
    ]

    assert isinstance(outcomes[0].error, RuntimeError)
    assert RunStatus.PROCESSING == outcomes[0].run.status  # type: ignore[union-attr]
