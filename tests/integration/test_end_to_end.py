"""The polling contract end to end: `CopyAIClient` against the fake server over real sockets."""

from __future__ import annotations

import asyncio
import itertools
import logging
import traceback
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from copyai_poll import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    CopyAIClient,
    CopyAIError,
    CreditLimitError,
    NotFoundError,
    PollPolicy,
    PollTimeoutError,
    RateLimitError,
    ResponseFormatError,
    RetryPolicy,
    RunFailedError,
    RunStatus,
    ServerError,
    StatusChange,
    WorkflowRun,
    poll_many,
    watch,
)
from copyai_poll.testing import FakeCopyAI, Fault, ManualClock, Quirks, Script
from tests.integration.conftest import FAST_POLL, QUICK_RETRY, SECRET_KEY, WF

S = RunStatus

LIFE = Script.completes(
    ("NEW", 1),
    ("WAITING", 1),
    ("PROCESSING", 1),
    ("RETRYING", 1),
    ("PROCESSING", 1),
    output={"Output 1": "A fine tagline.", "tags": ["a", "b"]},
)


def pairs(changes: list[StatusChange]) -> list[tuple[RunStatus | None, RunStatus]]:
    """The (previous, current) of each change."""
    return [(c.previous, c.current) for c in changes]


def get_runs(server: FakeCopyAI) -> list[Any]:
    """The get-run requests the fake received, oldest first."""
    return [r for r in server.requests if r.route == "get_run"]


async def start(client: CopyAIClient, workflow_id: str = WF) -> str:
    """Start a run and return its id."""
    return (await client.start_run(workflow_id, {"Input 1": "x"})).id


# -- resolving ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_complete_run_resolves_with_the_scripts_output(
    server: FakeCopyAI, client: CopyAIClient, manual_clock: ManualClock
) -> None:
    """poll_until_done returns the COMPLETE run carrying the output its script ends with."""
    server.set_script(LIFE)
    started = await client.start_run(WF, {"Input 1": "socks"}, metadata={"user": 7})

    final = await client.poll_until_done(
        WF, started.id, policy=FAST_POLL, on_poll=lambda _run: manual_clock.advance(0.5)
    )

    assert S.COMPLETE == final.status
    assert {"Output 1": "A fine tagline.", "tags": ["a", "b"]} == dict(final.output)
    assert {"Input 1": "socks"} == dict(final.input)
    assert {"user": 7} == dict(final.metadata)
    assert (started.id, WF, 2) == (final.id, final.workflow_id, final.credits)


@pytest.mark.asyncio
async def test_failed_run_raises_run_failed_error_with_error_and_history(
    server: FakeCopyAI, client: CopyAIClient, manual_clock: ManualClock
) -> None:
    """A FAILED run raises RunFailedError carrying the run, its error and the changes seen."""
    error = {"message": "out of tokens", "step": 3}
    server.set_script(Script.fails(("NEW", 1), ("PROCESSING", 1), error=error))
    run_id = await start(client)
    seen: list[StatusChange] = []

    with pytest.raises(RunFailedError) as caught:
        await client.poll_until_done(
            WF,
            run_id,
            policy=FAST_POLL,
            on_status_change=seen.append,
            on_poll=lambda _run: manual_clock.advance(1),
        )

    assert (S.FAILED, error, run_id) == (caught.value.run.status, caught.value.run.error, run_id)
    assert [(None, S.NEW), (S.NEW, S.PROCESSING), (S.PROCESSING, S.FAILED)] == pairs(
        list(caught.value.history)
    )
    assert seen == list(caught.value.history)


@pytest.mark.asyncio
async def test_each_status_change_fires_once_in_order_terminal_before_return(
    server: FakeCopyAI, client: CopyAIClient, manual_clock: ManualClock
) -> None:
    """on_status_change fires once per change, in order, the terminal one before returning."""
    server.set_script(LIFE)
    run_id = await start(client)
    changes: list[StatusChange] = []
    polled: list[WorkflowRun] = []

    def on_poll(run: WorkflowRun) -> None:
        polled.append(run)
        manual_clock.advance(0.5)  # every step is seen by two polls

    final = await client.poll_until_done(
        WF, run_id, policy=FAST_POLL, on_status_change=changes.append, on_poll=on_poll
    )
    at_return = list(changes)

    assert [
        (None, S.NEW),
        (S.NEW, S.WAITING),
        (S.WAITING, S.PROCESSING),
        (S.PROCESSING, S.RETRYING),
        (S.RETRYING, S.PROCESSING),
        (S.PROCESSING, S.COMPLETE),
    ] == pairs(at_return)
    assert [1, 3, 5, 7, 9, 11] == [c.polls for c in at_return]
    assert at_return[-1].run == final
    assert 11 == len(polled) == server.get_count(run_id)
    assert all(a.elapsed <= b.elapsed for a, b in itertools.pairwise(at_return))


@pytest.mark.asyncio
async def test_async_callbacks_are_awaited(
    server: FakeCopyAI, client: CopyAIClient, manual_clock: ManualClock
) -> None:
    """Async on_status_change and on_poll callbacks are awaited, in order."""
    server.set_script(Script.completes(("NEW", 1), ("PROCESSING", 1)))
    run_id = await start(client)
    events: list[str] = []

    async def on_change(change: StatusChange) -> None:
        await asyncio.sleep(0)
        events.append(f"change {change.current.value}")

    async def on_poll(run: WorkflowRun) -> None:
        await asyncio.sleep(0)
        events.append(f"poll {run.raw_status}")
        manual_clock.advance(1)

    await client.poll_until_done(
        WF, run_id, policy=FAST_POLL, on_status_change=on_change, on_poll=on_poll
    )

    assert [
        "change NEW",
        "poll NEW",
        "change PROCESSING",
        "poll PROCESSING",
        "change COMPLETE",
        "poll COMPLETE",
    ] == events


@pytest.mark.asyncio
async def test_undocumented_status_reaches_on_poll_only(
    server: FakeCopyAI,
    client: CopyAIClient,
    manual_clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A status nobody documented reaches on_poll and a WARNING, never on_status_change."""
    raw = "QUEUED-integration-e2e"  # distinct: the warning is logged once per process
    server.set_script(
        Script.completes(("NEW", 1), ("QUEUED", 1), (raw, 1), ("NEW", 1), ("PROCESSING", 1))
    )
    run_id = await start(client)
    changes: list[StatusChange] = []
    raw_seen: list[str] = []

    def on_poll(run: WorkflowRun) -> None:
        raw_seen.append(run.raw_status)
        if run.status is None:
            assert run.is_terminal is False
        manual_clock.advance(1)

    with caplog.at_level(logging.WARNING, logger="copyai_poll"):
        await client.poll_until_done(
            WF, run_id, policy=FAST_POLL, on_status_change=changes.append, on_poll=on_poll
        )

    assert ["NEW", "QUEUED", raw, "NEW", "PROCESSING", "COMPLETE"] == raw_seen
    assert [(None, S.NEW), (S.NEW, S.PROCESSING), (S.PROCESSING, S.COMPLETE)] == pairs(changes)
    assert [1, 5, 6] == [c.polls for c in changes]
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and raw in r.getMessage()
    ]
    assert 1 == len(warnings)


# -- the 404 grace and quirks ------------------------------------------------------------


@pytest.mark.asyncio
async def test_404_right_after_start_is_polled_through(
    server: FakeCopyAI, client: CopyAIClient, manual_clock: ManualClock
) -> None:
    """A run that answers 404 for a while after its start is polled until it shows up."""
    server.set_quirks(Quirks(not_found_for=5))
    run_id = await start(client)
    changes: list[StatusChange] = []

    async def reveal_after_three_polls() -> None:
        while server.get_count(run_id) < 3:
            await asyncio.sleep(0.001)
        manual_clock.advance(10)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(reveal_after_three_polls())
        final = await client.poll_until_done(
            WF, run_id, policy=FAST_POLL, on_status_change=changes.append
        )

    statuses = [r.status for r in get_runs(server)]
    assert S.COMPLETE == final.status
    assert [(None, S.COMPLETE)] == pairs(changes)
    assert 404 == statuses[0]
    assert 200 == statuses[-1]
    assert len(statuses) == changes[0].polls  # the 404s count as polls
    assert changes[0].polls >= 4


@pytest.mark.asyncio
async def test_404_after_the_grace_is_not_found_error(
    server: FakeCopyAI, client: CopyAIClient
) -> None:
    """A 404 once the grace period is over raises NotFoundError at once."""
    with pytest.raises(NotFoundError) as caught:
        await client.poll_until_done(
            WF, "WRUN-does-not-exist", policy=PollPolicy(initial=0.001, not_found_grace=0)
        )

    assert (404, "NOT_FOUND") == (caught.value.status, caught.value.error_code)
    assert 1 == len(get_runs(server))


@pytest.mark.parametrize(
    "quirks",
    [
        Quirks(credits_as_string=True),
        Quirks(metadata="missing"),
        Quirks(metadata="null"),
        Quirks(ids="id"),
        Quirks(ids="workflowRunId"),
        Quirks(created_at_ms=False),
        Quirks(output_format="json_text"),
        Quirks(
            credits_as_string=True,
            total_as_string=True,
            metadata="missing",
            ids="workflowRunId",
            created_at_ms=False,
            output_format="json_text",
        ),
    ],
    ids=repr,
)
@pytest.mark.asyncio
async def test_quirky_runs_parse(
    server: FakeCopyAI, client: CopyAIClient, manual_clock: ManualClock, quirks: Quirks
) -> None:
    """Runs in every odd shape seen in the wild parse into the same WorkflowRun."""
    output = {"Output 1": "text", "count": 3}
    server.set_script(Script.completes(("PROCESSING", 1), output=output))
    server.set_quirks(quirks)
    run_id = await start(client)
    manual_clock.advance(2)

    final = await client.poll_until_done(WF, run_id, policy=FAST_POLL)
    [listed] = [run async for run in client.list_runs(WF)]

    for run in (final, listed):
        assert (run_id, WF, S.COMPLETE, 2) == (run.id, run.workflow_id, run.status, run.credits)
        assert output == dict(run.output)
        assert {} == dict(run.metadata)
        assert run.created_at is not None
        assert timedelta(0) == run.created_at.utcoffset()
    if not quirks.created_at_ms:
        assert 0 == final.created_at.microsecond


@pytest.mark.asyncio
async def test_output_values_as_json_text_are_kept(
    server: FakeCopyAI, client: CopyAIClient, manual_clock: ManualClock
) -> None:
    """Output values sent as JSON text arrive calmly, as the text they were sent as."""
    server.set_script(Script.completes(output={"Output 1": "text", "tags": ["a", "b"]}))
    server.set_quirks(Quirks(output_format="json_values"))
    run_id = await start(client)

    final = await client.poll_until_done(WF, run_id, policy=FAST_POLL)

    assert {"Output 1": "text", "tags": '["a", "b"]'} == dict(final.output)


# -- watch, poll_many, list_runs ---------------------------------------------------------


@pytest.mark.asyncio
async def test_watch_yields_every_change_and_ends_with_failed_as_a_value(
    server: FakeCopyAI, client: CopyAIClient, manual_clock: ManualClock
) -> None:
    """watch() yields the changes in order and ends with FAILED as its last value."""
    server.set_script(
        Script.fails(("NEW", 1), ("PROCESSING", 1), ("RETRYING", 1), ("PROCESSING", 1), error="x")
    )
    run_id = await start(client)
    changes: list[StatusChange] = []

    async for change in watch(client, WF, run_id, policy=FAST_POLL):
        changes.append(change)
        manual_clock.advance(1)

    assert [
        (None, S.NEW),
        (S.NEW, S.PROCESSING),
        (S.PROCESSING, S.RETRYING),
        (S.RETRYING, S.PROCESSING),
        (S.PROCESSING, S.FAILED),
    ] == pairs(changes)
    assert "x" == changes[-1].run.error


@pytest.mark.asyncio
async def test_watch_deadline_is_poll_timeout_error(
    server: FakeCopyAI, client: CopyAIClient
) -> None:
    """watch() raises PollTimeoutError when its timeout passes first."""
    server.set_script(Script.completes(("PROCESSING", 3600)))
    run_id = await start(client)
    changes: list[StatusChange] = []

    with pytest.raises(PollTimeoutError) as caught:
        async for change in watch(client, WF, run_id, policy=FAST_POLL, timeout=0.2):
            changes.append(change)

    assert [(None, S.PROCESSING)] == pairs(changes)
    assert caught.value.last_run is not None
    assert S.PROCESSING == caught.value.last_run.status


@pytest.mark.asyncio
async def test_poll_many_reports_every_run_whatever_the_others_do(
    server: FakeCopyAI, client: CopyAIClient, manual_clock: ManualClock
) -> None:
    """poll_many yields one outcome per run: completed, failed and missing alike."""
    server.queue_scripts(
        Script.completes(("NEW", 1), output={"Output 1": "first"}),
        Script.fails(("PROCESSING", 2), error="second failed"),
        Script.completes(("PROCESSING", 1), ("RETRYING", 1), ("PROCESSING", 1)),
    )
    ok_id, failed_id, retried_id = [await start(client) for _ in range(3)]
    missing = "WRUN-missing"
    changes: list[StatusChange] = []

    async def advancer() -> None:
        for _ in range(5):
            await asyncio.sleep(0.01)
            manual_clock.advance(1)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(advancer())
        outcomes = {
            o.run_id: o
            async for o in poll_many(
                client,
                [(WF, ok_id), (WF, failed_id), (WF, missing), (WF, retried_id)],
                concurrency=2,
                policy=PollPolicy(initial=0.001, maximum=0.005, jitter=0, not_found_grace=0),
                on_status_change=changes.append,
            )
        }

    assert {ok_id, failed_id, missing, retried_id} == set(outcomes)
    assert outcomes[ok_id].ok
    assert {"Output 1": "first"} == dict(outcomes[ok_id].run.output)
    assert isinstance(outcomes[failed_id].error, RunFailedError)
    assert "second failed" == outcomes[failed_id].run.error
    assert isinstance(outcomes[missing].error, NotFoundError)
    assert outcomes[missing].run is None
    assert outcomes[retried_id].ok
    assert S.COMPLETE == outcomes[retried_id].run.status
    terminal = {c.run.id: c.current for c in changes if c.current.is_terminal}
    assert {ok_id: S.COMPLETE, failed_id: S.FAILED, retried_id: S.COMPLETE} == terminal


@pytest.mark.parametrize("total_as_string", [False, True])
@pytest.mark.asyncio
async def test_list_runs_walks_every_page(
    server: FakeCopyAI, client: CopyAIClient, total_as_string: bool
) -> None:
    """list_runs yields all 250 runs of a workflow, fetching pages 1, 2 and 3 of 100."""
    server.set_quirks(Quirks(total_as_string=total_as_string))
    for _ in range(250):
        await start(client)
    await start(client, "WCFG-other")

    listed = [run.id async for run in client.list_runs(WF)]

    assert server.run_ids(WF) == listed
    pages = [r.query for r in server.requests if r.route == "list_runs"]
    assert [{"size": "100", "page": str(n)} for n in (1, 2, 3)] == pages


# -- transient faults --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_transient_faults_on_get_are_retried_within_one_poll(
    server: FakeCopyAI, manual_clock: ManualClock
) -> None:
    """5xx, 429, an HTML 502 and a truncated 200 on GET are retried; the run still resolves."""
    faults = [
        Fault.server_error(503),
        Fault.rate_limited(),
        Fault.html(502),
        Fault.truncated(),
        Fault.server_error(500),
        Fault.server_error(504),
        Fault.rate_limited(retry_after=0),
        Fault.html(503),
    ]
    retry = RetryPolicy(attempts=len(faults) + 1, initial=0.0, maximum=0.0, jitter=0)
    async with CopyAIClient(api_key=SECRET_KEY, base_url=server.base_url, retry=retry) as client:
        run_id = await start(client)
        manual_clock.advance(10)
        server.add_faults("get_run", *faults)
        changes: list[StatusChange] = []

        final = await client.poll_until_done(
            WF, run_id, policy=FAST_POLL, on_status_change=changes.append
        )

    assert S.COMPLETE == final.status
    assert [(None, S.COMPLETE)] == pairs(changes)
    assert 1 == changes[0].polls  # retries inside one get_run are not polls
    assert [*faults, None] == [r.fault for r in get_runs(server)]
    assert [503, 429, 502, 200, 500, 504, 429, 503, 200] == [r.status for r in get_runs(server)]


@pytest.mark.asyncio
async def test_dropped_connections_on_get_are_retried(
    server: FakeCopyAI, client: CopyAIClient, manual_clock: ManualClock
) -> None:
    """Connections dropped without an answer are retried and the run still resolves."""
    run_id = await start(client)
    manual_clock.advance(10)
    server.add_faults("get_run", Fault.drop(), Fault.drop(), Fault.drop())

    final = await client.poll_until_done(WF, run_id, policy=FAST_POLL)

    assert S.COMPLETE == final.status
    assert [Fault.drop()] * 3 + [None] == [r.fault for r in get_runs(server)]


@pytest.mark.parametrize(
    ("fault", "error_class", "status"),
    [
        (Fault.server_error(503), ServerError, 503),
        (Fault.html(502), ServerError, 502),
        (Fault.rate_limited(), RateLimitError, 429),
    ],
)
@pytest.mark.asyncio
async def test_transient_answers_become_typed_errors_after_the_last_attempt(
    server: FakeCopyAI,
    client: CopyAIClient,
    fault: Fault,
    error_class: type[CopyAIError],
    status: int,
) -> None:
    """When every attempt fails, the last answer is raised as its typed error."""
    run_id = await start(client)
    server.add_faults("get_run", *[fault] * QUICK_RETRY.attempts)

    with pytest.raises(error_class) as caught:
        await client.get_run(WF, run_id)

    assert status == caught.value.status
    assert QUICK_RETRY.attempts == len(get_runs(server))


@pytest.mark.asyncio
async def test_truncated_200_on_every_attempt_is_response_format_error(
    server: FakeCopyAI, client: CopyAIClient
) -> None:
    """A 200 whose JSON is cut off is retried, then raised as ResponseFormatError."""
    run_id = await start(client)
    server.add_faults("get_run", *[Fault.truncated()] * QUICK_RETRY.attempts)

    with pytest.raises(ResponseFormatError):
        await client.get_run(WF, run_id)

    assert QUICK_RETRY.attempts == len(get_runs(server))


@pytest.mark.asyncio
async def test_retry_after_longer_than_allowed_ends_retries_at_once(
    server: FakeCopyAI,
) -> None:
    """A Retry-After above max_retry_after ends the retries with RateLimitError, no sleep."""
    retry = RetryPolicy(attempts=5, initial=0.0, maximum=0.0, max_retry_after=0.5)
    async with CopyAIClient(api_key=SECRET_KEY, base_url=server.base_url, retry=retry) as client:
        run_id = await start(client)
        server.add_faults("get_run", Fault.rate_limited(retry_after=30))

        with pytest.raises(RateLimitError) as caught:
            await client.get_run(WF, run_id)

    assert 30.0 == caught.value.retry_after
    assert 1 == len(get_runs(server))


# -- final answers -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_wrong_key_is_authentication_error_at_once(server: FakeCopyAI) -> None:
    """A 401 for a wrong key is AuthenticationError, never retried."""
    wrong = "sk-wrong-Q1w2E3r4T5y6"
    async with CopyAIClient(api_key=wrong, base_url=server.base_url, retry=QUICK_RETRY) as client:
        with pytest.raises(AuthenticationError) as on_start:
            await client.start_run(WF, {"Input 1": "x"})
        with pytest.raises(AuthenticationError) as on_poll:
            await client.poll_until_done(WF, "WRUN-1", policy=FAST_POLL)

    assert (401, "UNAUTHORIZED") == (on_start.value.status, on_start.value.error_code)
    assert (401, "UNAUTHORIZED") == (on_poll.value.status, on_poll.value.error_code)
    assert [("POST", 401), ("GET", 401)] == [(r.method, r.status) for r in server.requests]
    for caught in (on_start, on_poll):
        assert wrong not in _everything_about(caught.value)


@pytest.mark.asyncio
async def test_spent_credit_budget_is_credit_limit_error(
    manual_clock: ManualClock,
) -> None:
    """A start once the credits are spent raises CreditLimitError (a BadRequestError)."""
    async with (
        FakeCopyAI(clock=manual_clock, api_key=SECRET_KEY, credit_budget=4) as server,
        CopyAIClient(api_key=SECRET_KEY, base_url=server.base_url, retry=QUICK_RETRY) as client,
    ):
        await start(client)
        await start(client)
        with pytest.raises(CreditLimitError) as caught:
            await start(client)

    assert isinstance(caught.value, BadRequestError)
    assert (400, "WORKFLOW_CREDIT_LIMIT_REACHED") == (caught.value.status, caught.value.error_code)
    assert 4 == server.credits_used
    assert 3 == len([r for r in server.requests if r.route == "start_run"])


@pytest.mark.parametrize(
    ("fault", "error_class"),
    [
        (Fault.server_error(503), ServerError),
        (Fault.server_error(503, after_handling=True), ServerError),
        (Fault.server_error(500), ServerError),
        (Fault.html(502), ServerError),
        (Fault.drop(), APIConnectionError),
        (Fault.drop(after_handling=True), APIConnectionError),
    ],
)
@pytest.mark.asyncio
async def test_start_run_is_sent_exactly_once_whatever_the_answer(
    server: FakeCopyAI,
    client: CopyAIClient,
    fault: Fault,
    error_class: type[CopyAIError],
) -> None:
    """A start_run meeting a 5xx or a dropped connection is final, never resent."""
    server.add_faults("start_run", fault, fault, fault)

    with pytest.raises(error_class):
        await client.start_run(WF, {"Input 1": "x"})

    assert 1 == len([r for r in server.requests if r.route == "start_run"])
    assert (1 if fault.after_handling else 0) == len(server.run_ids())


@pytest.mark.asyncio
async def test_start_run_timing_out_is_sent_exactly_once(server: FakeCopyAI) -> None:
    """A start_run that gets no answer within request_timeout is final, never resent."""
    server.add_faults("start_run", Fault.slow(5), Fault.slow(5))
    async with CopyAIClient(
        api_key=SECRET_KEY, base_url=server.base_url, retry=QUICK_RETRY, request_timeout=0.2
    ) as client:
        with pytest.raises(APIConnectionError):
            await client.start_run(WF, {"Input 1": "x"})

    assert 1 == len([r for r in server.requests if r.route == "start_run"])


# -- deadlines and request timeouts ------------------------------------------------------


@pytest.mark.asyncio
async def test_hanging_poll_is_cut_by_the_deadline(
    server: FakeCopyAI, client: CopyAIClient
) -> None:
    """A GET that never gets an answer ends in PollTimeoutError at the poll's deadline."""
    server.set_script(Script.completes(("PROCESSING", 3600)))
    run_id = await start(client)
    hung = False

    def hang_next_poll(_run: WorkflowRun) -> None:
        nonlocal hung
        if not hung:
            hung = True
            server.add_faults("get_run", Fault.hang())

    with pytest.raises(PollTimeoutError) as caught:
        await client.poll_until_done(
            WF, run_id, policy=FAST_POLL, on_poll=hang_next_poll, timeout=0.5
        )

    assert isinstance(caught.value, TimeoutError)
    assert caught.value.last_run is not None
    assert S.PROCESSING == caught.value.last_run.status
    assert [(None, S.PROCESSING)] == pairs(list(caught.value.history))
    assert [None, Fault.hang()] == [r.fault for r in get_runs(server)]


@pytest.mark.asyncio
async def test_hanging_first_poll_times_out_without_a_last_run(
    server: FakeCopyAI, client: CopyAIClient
) -> None:
    """A poll whose very first GET hangs raises PollTimeoutError with last_run None."""
    run_id = await start(client)
    server.add_faults("get_run", Fault.hang())

    with pytest.raises(PollTimeoutError) as caught:
        await client.poll_until_done(WF, run_id, policy=FAST_POLL, timeout=0.5)

    assert caught.value.last_run is None
    assert () == caught.value.history


@pytest.mark.asyncio
async def test_slow_answers_past_request_timeout_are_retried_then_connection_error(
    server: FakeCopyAI,
) -> None:
    """Answers slower than request_timeout are retried, then raised as APIConnectionError."""
    retry = RetryPolicy(attempts=3, initial=0.0, maximum=0.0, jitter=0)
    async with CopyAIClient(
        api_key=SECRET_KEY, base_url=server.base_url, retry=retry, request_timeout=0.2
    ) as client:
        run_id = await start(client)
        server.add_faults("get_run", *[Fault.slow(1)] * 3)
        with pytest.raises(APIConnectionError):
            await client.get_run(WF, run_id)

    assert [Fault.slow(1)] * 3 == [r.fault for r in get_runs(server)]


@pytest.mark.asyncio
async def test_slow_answers_then_a_prompt_one_resolve(
    server: FakeCopyAI, manual_clock: ManualClock
) -> None:
    """A poll whose GETs time out twice and then succeed still resolves."""
    retry = RetryPolicy(attempts=3, initial=0.0, maximum=0.0, jitter=0)
    async with CopyAIClient(
        api_key=SECRET_KEY, base_url=server.base_url, retry=retry, request_timeout=0.2
    ) as client:
        run_id = await start(client)
        manual_clock.advance(10)
        server.add_faults("get_run", Fault.slow(1), Fault.slow(1))
        final = await client.poll_until_done(WF, run_id, policy=FAST_POLL)

    assert S.COMPLETE == final.status
    assert [Fault.slow(1), Fault.slow(1), None] == [r.fault for r in get_runs(server)]


# -- the key stays secret ----------------------------------------------------------------


def _everything_about(exc: BaseException) -> str:
    """The traceback, chain included, and the repr of an exception."""
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.args)


@pytest.mark.asyncio
async def test_api_key_is_never_in_the_request_log_nor_any_error(
    manual_clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The key is redacted in the fake's log and absent from every error, log line and repr."""
    errors: list[BaseException] = []

    async def expect(error_class: type[BaseException], coro: Any) -> None:
        with pytest.raises(error_class) as caught:
            await coro
        errors.append(caught.value)

    retry = RetryPolicy(attempts=2, initial=0.0, maximum=0.0, jitter=0)
    caplog.set_level(logging.DEBUG, logger="copyai_poll")
    async with (
        FakeCopyAI(clock=manual_clock, api_key=SECRET_KEY, credit_budget=4) as server,
        CopyAIClient(
            api_key=SECRET_KEY, base_url=server.base_url, retry=retry, request_timeout=0.3
        ) as client,
    ):
        server.set_script(Script.fails(("PROCESSING", 1), error="boom"))
        run_id = await start(client)
        server.add_faults("start_run", Fault.server_error(503))
        await expect(ServerError, client.start_run(WF, {}))
        server.add_faults("get_run", Fault.rate_limited(), Fault.rate_limited())
        await expect(RateLimitError, client.get_run(WF, run_id))
        server.add_faults("get_run", Fault.truncated(), Fault.truncated())
        await expect(ResponseFormatError, client.get_run(WF, run_id))
        server.add_faults("get_run", *[Fault.drop()] * 4)
        await expect(APIConnectionError, client.get_run(WF, run_id))
        server.clear_faults()
        server.add_faults("get_run", Fault.slow(5), Fault.slow(5))
        await expect(APIConnectionError, client.get_run(WF, run_id))
        await expect(NotFoundError, client.get_run(WF, "WRUN-nope"))
        await expect(
            PollTimeoutError, client.poll_until_done(WF, run_id, policy=FAST_POLL, timeout=0.05)
        )
        manual_clock.advance(2)
        await expect(RunFailedError, client.poll_until_done(WF, run_id, policy=FAST_POLL))
        await start(client)
        await expect(CreditLimitError, start(client))
        client_repr = repr(client)

    assert 9 == len(errors)
    for error in errors:
        assert SECRET_KEY not in _everything_about(error)
    assert SECRET_KEY not in client_repr
    assert SECRET_KEY not in caplog.text
    assert all(r.headers["x-copy-ai-api-key"] == "***" for r in server.requests)
    assert SECRET_KEY not in repr(server.requests)


# -- cancellation ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cancelled_poll_leaves_no_task_nor_connection(server: FakeCopyAI) -> None:
    """Cancelling a poll whose GET hangs re-raises CancelledError and frees its connection."""
    server.add_faults("get_run", Fault.hang())
    async with (
        aiohttp.ClientSession() as session,
        CopyAIClient(api_key=SECRET_KEY, base_url=server.base_url, session=session) as client,
    ):
        run_id = await start(client)
        poll = asyncio.create_task(client.poll_until_done(WF, run_id, policy=FAST_POLL))
        while not get_runs(server):
            await asyncio.sleep(0.001)
        poll.cancel()
        with pytest.raises(asyncio.CancelledError):
            await poll
        acquired = len(session.connector._acquired)  # no public count of them

    assert 0 == acquired
    # The fake's own handler of the hanging GET lives on until the fake closes.
    client_side = {
        t
        for t in asyncio.all_tasks()
        if not t.get_coro().__qualname__.startswith("RequestHandler.")
    }
    assert {asyncio.current_task()} == client_side
