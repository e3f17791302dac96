"""Waits that survive: transient failures, outage grace, Retry-After and the deadline."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aioresponses import aioresponses

from copyai_poll import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    CopyAIClient,
    CopyAIError,
    PollPolicy,
    PollTimeoutError,
    RateLimitError,
    ResponseFormatError,
    RetryPolicy,
    RunStatus,
    ServerError,
    StatusChange,
    WorkflowRun,
    poll_many,
    poll_until_done,
)
from tests.helpers import KEY, RUN, RUN_URL, WF, FakeClock, ScriptedFetcher, body, run

FIXED = PollPolicy(initial=1.0, maximum=1.0, jitter=0.0)


def tls_failure() -> APIConnectionError:
    error = APIConnectionError("TLS failure talking to the API: certificate verify failed")
    error._tls = True
    return error


TRANSIENT = [
    ServerError("GET answered 503", status=503),
    RateLimitError("GET answered 429", status=429),
    ResponseFormatError("response body is not JSON"),
    APIConnectionError("could not connect to the API"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
async def test_transient_failures_do_not_end_the_wait(
    clock: FakeClock, error: CopyAIError, caplog: pytest.LogCaptureFixture
) -> None:
    """A poll failing transiently is logged, reaches no callback, counts, and the wait goes on."""
    fetcher = ScriptedFetcher([run("PROCESSING"), error, error, run("COMPLETE")])
    changes: list[StatusChange] = []
    polled: list[WorkflowRun] = []

    with caplog.at_level(logging.WARNING, logger="copyai_poll"):
        final = await poll_until_done(
            fetcher,
            WF,
            RUN,
            policy=FIXED,
            on_status_change=changes.append,
            on_poll=polled.append,
            sleep=clock.sleep,
            clock=clock,
        )

    assert RunStatus.COMPLETE == final.status
    assert [None, RunStatus.PROCESSING] == [c.previous for c in changes]
    assert [1, 4] == [c.polls for c in changes]  # the failed polls count
    assert 2 == len(polled)
    assert [1.0, 1.0, 1.0] == clock.sleeps  # the schedule went on as planned
    failures = [r for r in caplog.records if "polling again" in r.getMessage()]
    assert 2 == len(failures)
    assert {RUN} == {r.run_id for r in failures}  # type: ignore[attr-defined]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "error",
    [
        tls_failure(),
        AuthenticationError("GET answered 401", status=401),
        BadRequestError("GET answered 400", status=400),
        CopyAIError("something else"),
    ],
    ids=["tls", "auth", "bad-request", "other"],
)
async def test_other_failures_end_the_wait_at_once(clock: FakeClock, error: CopyAIError) -> None:
    """TLS failures and final answers end the wait on the first poll that meets them."""
    fetcher = ScriptedFetcher([run("PROCESSING"), error, run("COMPLETE")])

    with pytest.raises(type(error)) as raised:
        await poll_until_done(fetcher, WF, RUN, policy=FIXED, sleep=clock.sleep, clock=clock)

    assert error is raised.value
    assert 2 == fetcher.calls


@pytest.mark.asyncio
async def test_outage_longer_than_the_grace_ends_with_its_error(clock: FakeClock) -> None:
    """Polls failing with no success for longer than outage_grace end the wait with the error."""
    error = ServerError("GET answered 503", status=503)
    fetcher = ScriptedFetcher([run("PROCESSING"), error])
    policy = PollPolicy(initial=1.0, maximum=1.0, jitter=0.0, outage_grace=10.0)

    with pytest.raises(ServerError) as raised:
        await poll_until_done(fetcher, WF, RUN, policy=policy, sleep=clock.sleep, clock=clock)

    assert error is raised.value
    # The outage began at the second poll (t=1); the first failure past t=11 ends it.
    assert 13 == fetcher.calls


@pytest.mark.asyncio
async def test_a_success_restarts_the_outage_count(clock: FakeClock) -> None:
    """A successful poll between failures means the outage grace starts again."""
    error = APIConnectionError("could not connect to the API")
    answers: list[Any] = [run("PROCESSING")]
    for _ in range(5):
        answers += [error] * 8 + [run("PROCESSING")]  # 8 s of failure, then one success
    answers.append(run("COMPLETE"))
    fetcher = ScriptedFetcher(answers)
    policy = PollPolicy(initial=1.0, maximum=1.0, jitter=0.0, outage_grace=10.0)

    final = await poll_until_done(fetcher, WF, RUN, policy=policy, sleep=clock.sleep, clock=clock)

    assert RunStatus.COMPLETE == final.status
    assert len(answers) == fetcher.calls


@pytest.mark.asyncio
async def test_outage_past_the_deadline_is_a_timeout_caused_by_the_last_error(
    clock: FakeClock,
) -> None:
    """With outage_grace=None an outage lasts until the deadline: PollTimeoutError from it."""
    errors = [ServerError(f"GET answered 503 ({i})", status=503) for i in range(100)]
    fetcher = ScriptedFetcher([run("PROCESSING"), *errors])
    policy = PollPolicy(initial=1.0, maximum=1.0, jitter=0.0, outage_grace=None)

    with pytest.raises(PollTimeoutError) as raised:
        await poll_until_done(
            fetcher, WF, RUN, policy=policy, timeout=30, sleep=clock.sleep, clock=clock
        )

    assert errors[fetcher.calls - 2] is raised.value.__cause__  # the last error seen
    assert RunStatus.PROCESSING == raised.value.last_run.status  # type: ignore[union-attr]
    assert pytest.approx(30.0) == sum(clock.sleeps)


class Timeline:
    """A fetcher whose answer depends on the virtual time: failing in [down, up), done at end."""

    def __init__(self, clock: FakeClock, down: float, up: float, end: float) -> None:
        self.clock, self.start = clock, clock.now
        self.down, self.up, self.end = down, up, end
        self.calls = 0

    async def get_run(self, workflow_id: str, run_id: str) -> WorkflowRun:
        self.calls += 1
        elapsed = self.clock.now - self.start
        if self.down <= elapsed < self.up:
            raise ServerError("GET answered 502", status=502)
        return run("COMPLETE" if elapsed >= self.end else "PROCESSING")


@pytest.mark.asyncio
async def test_default_grace_rides_out_a_long_outage(clock: FakeClock) -> None:
    """The default policy and timeout survive 100 s of failing polls."""
    fetcher = Timeline(clock, down=5, up=105, end=200)

    final = await poll_until_done(fetcher, WF, RUN, sleep=clock.sleep, clock=clock)

    assert RunStatus.COMPLETE == final.status


@pytest.mark.asyncio
async def test_default_grace_gives_up_after_two_minutes(clock: FakeClock) -> None:
    """The default policy ends the wait with the error once polls failed for over 120 s."""
    fetcher = Timeline(clock, down=5, up=10_000, end=10_000)

    with pytest.raises(ServerError):
        await poll_until_done(fetcher, WF, RUN, sleep=clock.sleep, clock=clock)

    assert 125 < clock.now - fetcher.start < 140


@pytest.mark.asyncio
async def test_retry_after_stretches_the_next_wait(clock: FakeClock) -> None:
    """After a failed poll whose error asks for 42 s, the next poll waits at least that long."""
    throttled = RateLimitError("GET answered 429", status=429, retry_after=42.0)
    fetcher = ScriptedFetcher([run("PROCESSING"), throttled, run("COMPLETE")])

    await poll_until_done(fetcher, WF, RUN, policy=FIXED, sleep=clock.sleep, clock=clock)

    assert [1.0, 42.0] == clock.sleeps


@pytest.mark.asyncio
async def test_retry_after_past_the_deadline_fails_fast(clock: FakeClock) -> None:
    """A Retry-After that would fall past the deadline is a PollTimeoutError at once, no sleep."""
    throttled = ServerError("GET answered 503", status=503, retry_after=600.0)
    fetcher = ScriptedFetcher([run("PROCESSING"), throttled])

    with pytest.raises(PollTimeoutError) as raised:
        await poll_until_done(
            fetcher, WF, RUN, policy=FIXED, timeout=60, sleep=clock.sleep, clock=clock
        )

    assert throttled is raised.value.__cause__
    assert [1.0] == clock.sleeps


@pytest.mark.asyncio
async def test_retry_after_above_the_clients_limit_is_waited_out_by_the_poll(
    clock: FakeClock,
) -> None:
    """A 503 asking for more than max_retry_after ends the request, and the poll waits it out."""
    with aioresponses() as mocked:
        mocked.get(RUN_URL, payload=body("PROCESSING"))
        mocked.get(RUN_URL, status=503, headers={"Retry-After": "300"})
        mocked.get(RUN_URL, payload=body("COMPLETE"))
        async with CopyAIClient(KEY, retry=RetryPolicy(max_retry_after=60)) as client:
            client._sleep = clock.sleep
            final = await poll_until_done(
                client, WF, RUN, policy=FIXED, timeout=None, sleep=clock.sleep, clock=clock
            )

    assert RunStatus.COMPLETE == final.status
    assert [1.0, 300.0] == clock.sleeps


@pytest.mark.asyncio
async def test_default_timeout_ends_a_stuck_run_after_an_hour(clock: FakeClock) -> None:
    """A run stuck in PROCESSING ends in PollTimeoutError after the default 3600 s."""
    fetcher = ScriptedFetcher([run("PROCESSING")])
    start = clock.now

    with pytest.raises(PollTimeoutError):
        await poll_until_done(fetcher, WF, RUN, sleep=clock.sleep, clock=clock)

    assert pytest.approx(3600.0) == clock.now - start


@pytest.mark.asyncio
async def test_forty_waits_survive_a_five_second_outage_together(clock: FakeClock) -> None:
    """40 concurrent 20 s runs, every poll failing from t=8 to t=13, all complete (defaults)."""
    start = clock.now
    kinds = [
        ServerError("GET answered 503", status=503),
        APIConnectionError("could not connect to the API"),
        ResponseFormatError("response body is not JSON"),
    ]

    class Outage:
        calls = 0

        async def get_run(self, workflow_id: str, run_id: str) -> WorkflowRun:
            self.calls += 1
            await asyncio.sleep(0)
            elapsed = clock.now - start
            if 8 <= elapsed < 13:
                raise kinds[self.calls % len(kinds)]
            status = "COMPLETE" if elapsed >= 20 else "PROCESSING"
            return WorkflowRun.from_api(
                {"id": run_id, "workflowId": workflow_id, "status": status}
            )

    fetcher = Outage()
    pairs = [(WF, f"WRUN-{i}") for i in range(40)]

    outcomes = [
        o async for o in poll_many(fetcher, pairs, timeout=60, sleep=clock.sleep, clock=clock)
    ]

    assert 40 == len(outcomes)
    assert [] == [o for o in outcomes if not o.ok]


@pytest.mark.asyncio
async def test_a_retry_after_is_honoured_once_not_again_after_a_404(clock: FakeClock) -> None:
    """Only the latest poll's Retry-After counts: a 404 after it does not repeat the wait."""
    from copyai_poll import NotFoundError

    throttled = RateLimitError("GET answered 429", status=429, retry_after=20.0)
    not_yet = NotFoundError("GET answered 404", status=404)
    fetcher = ScriptedFetcher([throttled, not_yet, run("COMPLETE")])

    final = await poll_until_done(
        fetcher, WF, RUN, policy=FIXED, timeout=30, sleep=clock.sleep, clock=clock
    )

    assert RunStatus.COMPLETE == final.status
    assert [20.0, 1.0] == clock.sleeps
