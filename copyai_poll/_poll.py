"""Waiting for runs to finish: `poll_until_done`, `watch` and `poll_many`.

One `_Poller` per wait holds the state (status so far, polls made, the deadline) and
drives a fresh tenacity `AsyncRetrying` that polls until the run is terminal. The public
functions only dispatch what it observes.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing
from typing import Any, Protocol, TypedDict, Unpack

import attrs
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, retry_if_result

from ._errors import NotFoundError, PollTimeoutError, RunFailedError
from ._models import RunStatus, StatusChange, WorkflowRun, note_unknown_status
from ._policy import PollPolicy, time_left

logger = logging.getLogger("copyai_poll")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class RunFetcher(Protocol):
    """Anything that can fetch a run; `CopyAIClient` is one."""

    async def get_run(self, workflow_id: str, run_id: str) -> WorkflowRun: ...


class PollOptions(TypedDict, total=False):
    """The keyword arguments of `poll_until_done`, for functions that pass them on."""

    on_status_change: Callable[[StatusChange], Any] | None
    on_poll: Callable[[WorkflowRun], Any] | None
    policy: PollPolicy
    timeout: float | None
    sleep: Sleep
    clock: Clock


_DEFAULT_POLICY = PollPolicy()


async def poll_until_done(
    fetcher: RunFetcher,
    workflow_id: str,
    run_id: str,
    *,
    on_status_change: Callable[[StatusChange], Any] | None = None,
    on_poll: Callable[[WorkflowRun], Any] | None = None,
    policy: PollPolicy = _DEFAULT_POLICY,
    timeout: float | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> WorkflowRun:
    """Poll a run until it is COMPLETE, and return it.

    Args:
        fetcher: Anything with ``async get_run(workflow_id, run_id)``, e.g. a client.
        workflow_id: The run's workflow.
        run_id: The run.
        on_status_change: Called (sync or async) once per observed change of status,
            in order, the first observation included, the terminal one before return.
        on_poll: Called (sync or async) with the run after every successful poll.
        policy: When to poll next.
        timeout: Seconds for the whole wait, requests and sleeps included; None waits
            for ever.
        sleep: How to wait between polls (tests pass a fake that does not wait).
        clock: The monotonic clock the deadline and ``elapsed`` are measured on.

    Returns:
        The COMPLETE run.

    Raises:
        RunFailedError: The run reached FAILED (``.run``, ``.history``).
        PollTimeoutError: ``timeout`` passed (``.last_run``, ``.history``).
        CopyAIError: The fetcher failed for good (after its own retries).
    """
    poller = _Poller(fetcher, workflow_id, run_id, policy, timeout, sleep, clock)
    async with aclosing(poller.observations()) as observations:
        async for run, change in observations:
            if change is not None and on_status_change is not None:
                await _call(on_status_change, change)
            if on_poll is not None:
                await _call(on_poll, run)
    return poller.result()


async def watch(
    fetcher: RunFetcher,
    workflow_id: str,
    run_id: str,
    *,
    policy: PollPolicy = _DEFAULT_POLICY,
    timeout: float | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> AsyncIterator[StatusChange]:
    """Yield each observed `StatusChange` of a run, ending after the terminal one.

    A FAILED run is the last value here, not an exception.

    Raises:
        PollTimeoutError: ``timeout`` passed first.
    """
    poller = _Poller(fetcher, workflow_id, run_id, policy, timeout, sleep, clock)
    async with aclosing(poller.observations()) as observations:
        async for _run, change in observations:
            if change is not None:
                yield change


@attrs.frozen(kw_only=True)
class RunOutcome:
    """How one run of `poll_many` ended.

    ``run`` is the last observed run (None if none was); ``error`` is None when the run
    completed, else the exception that ended its poll (`RunFailedError`, ...).
    """

    workflow_id: str
    run_id: str
    run: WorkflowRun | None
    error: Exception | None

    @property
    def ok(self) -> bool:
        """True when the run completed."""
        return self.error is None


async def poll_many(
    fetcher: RunFetcher,
    runs: Iterable[tuple[str, str] | WorkflowRun],
    *,
    concurrency: int | None = None,
    **poll_options: Unpack[PollOptions],
) -> AsyncIterator[RunOutcome]:
    """Poll many runs at once and yield a `RunOutcome` as each one finishes.

    One run's failure never stops the others. Leaving the loop early cancels the polls
    still running.

    Args:
        fetcher: Shared by every poll.
        runs: ``(workflow_id, run_id)`` pairs, or `WorkflowRun` objects.
        concurrency: How many runs are polled at a time; None polls all at once.
        poll_options: Passed to `poll_until_done` for every run.
    """
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"concurrency must be >= 1 or None, got {concurrency!r}")
    limit = math.inf if concurrency is None else concurrency
    waiting = iter(runs)
    tasks: set[asyncio.Task[RunOutcome]] = set()
    try:
        while True:
            while len(tasks) < limit and (pair := next(waiting, None)) is not None:
                workflow_id, run_id = _ids(pair)
                tasks.add(
                    asyncio.create_task(_outcome(fetcher, workflow_id, run_id, poll_options))
                )
            if not tasks:
                return
            done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                yield task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _ids(item: tuple[str, str] | WorkflowRun) -> tuple[str, str]:
    if isinstance(item, WorkflowRun):
        if item.workflow_id is None:
            raise ValueError(f"run {item.id} does not name its workflow")
        return item.workflow_id, item.id
    workflow_id, run_id = item
    return workflow_id, run_id


async def _outcome(
    fetcher: RunFetcher, workflow_id: str, run_id: str, options: PollOptions
) -> RunOutcome:
    seen: list[WorkflowRun] = []  # the last run observed, kept whatever ends the poll
    user_on_poll = options.get("on_poll")

    async def on_poll(polled: WorkflowRun) -> None:
        seen[:] = [polled]
        if user_on_poll is not None:
            await _call(user_on_poll, polled)

    def outcome(run: WorkflowRun | None, error: Exception | None) -> RunOutcome:
        return RunOutcome(workflow_id=workflow_id, run_id=run_id, run=run, error=error)

    watched: PollOptions = {**options, "on_poll": on_poll}
    try:
        run = await poll_until_done(fetcher, workflow_id, run_id, **watched)
    except RunFailedError as exc:
        return outcome(exc.run, exc)
    except Exception as exc:
        return outcome(seen[0] if seen else None, exc)
    return outcome(run, None)


async def _call(callback: Callable[[Any], Any], arg: Any) -> None:
    result = callback(arg)
    if inspect.isawaitable(result):
        await result


class _Poller:
    """The state of one wait for one run."""

    def __init__(
        self,
        fetcher: RunFetcher,
        workflow_id: str,
        run_id: str,
        policy: PollPolicy,
        timeout: float | None,
        sleep: Sleep,
        clock: Clock,
    ) -> None:
        if timeout is not None and not (timeout >= 0):
            raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}")
        self._fetcher = fetcher
        self._workflow_id = workflow_id
        self._run_id = run_id
        self._policy = policy
        self._sleep = sleep
        self._clock = clock
        self._started = clock()
        self._deadline = None if timeout is None else self._started + timeout
        self._waits = 0  # waits since polling began or the status last changed
        self._polls = 0
        self._last_run: WorkflowRun | None = None
        self._history: list[StatusChange] = []

    async def observations(self) -> AsyncGenerator[tuple[WorkflowRun, StatusChange | None]]:
        """Poll until the run is terminal, yielding each run seen and its change, if any."""
        retrying = AsyncRetrying(
            sleep=self._sleep,
            wait=self._next_wait,
            retry=retry_if_result(_in_progress) | retry_if_exception(self._not_visible_yet),
            reraise=True,
        )
        async for attempt in retrying:
            if self._time_left() <= 0:
                raise self._timeout_error("the deadline passed")
            with attempt:
                run = await self._fetch()
            if not attempt.retry_state.outcome or attempt.retry_state.outcome.failed:
                continue
            attempt.retry_state.set_result(run)
            yield run, self._observe(run)

    def result(self) -> WorkflowRun:
        """The final run, or `RunFailedError` if it failed."""
        run = self._last_run
        assert run is not None, "result() before the first poll"
        assert run.is_terminal, "result() before the run finished"
        if run.status is RunStatus.FAILED:
            raise RunFailedError(
                f"run {run.id} of workflow {self._workflow_id} failed: {_short(run.error)}",
                run=run,
                history=self._history,
            )
        return run

    async def _fetch(self) -> WorkflowRun:
        self._polls += 1
        left = None if self._deadline is None else self._time_left()
        token = time_left.set(None if left is None else self._time_left)
        try:
            async with asyncio.timeout(left) as scope:
                return await self._fetcher.get_run(self._workflow_id, self._run_id)
        except PollTimeoutError as exc:  # the client's retry would outlast the deadline
            raise self._timeout_error(str(exc)) from exc
        except TimeoutError as exc:
            if scope.expired():
                raise self._timeout_error("the deadline passed during a request") from exc
            raise
        finally:
            time_left.reset(token)

    def _observe(self, run: WorkflowRun) -> StatusChange | None:
        note_unknown_status(run)
        self._last_run = run
        logger.debug(
            "poll %d of run %s (workflow %s): %s",
            self._polls,
            self._run_id,
            self._workflow_id,
            run.raw_status or "no status",
            extra={"run_id": self._run_id, "workflow_id": self._workflow_id},
        )
        previous = self._history[-1].current if self._history else None
        if run.status is None or run.status is previous:
            return None
        change = StatusChange(
            run=run,
            previous=previous,
            current=run.status,
            elapsed=self._clock() - self._started,
            polls=self._polls,
        )
        self._history.append(change)
        if self._policy.reset_on_change:
            self._waits = 0
        logger.info(
            "run %s (workflow %s): %s -> %s after %.1fs",
            self._run_id,
            self._workflow_id,
            previous or "start",
            run.status,
            change.elapsed,
            extra={"run_id": self._run_id, "workflow_id": self._workflow_id},
        )
        return change

    def _next_wait(self, _state: RetryCallState) -> float:
        wait = self._policy.wait(self._waits)
        self._waits += 1
        return max(0.0, min(wait, self._time_left()))

    def _not_visible_yet(self, exc: BaseException) -> bool:
        elapsed = self._clock() - self._started
        if not isinstance(exc, NotFoundError) or elapsed > self._policy.not_found_grace:
            return False
        logger.debug(
            "poll %d of run %s (workflow %s): not visible yet (404)",
            self._polls,
            self._run_id,
            self._workflow_id,
            extra={"run_id": self._run_id, "workflow_id": self._workflow_id},
        )
        return True

    def _time_left(self) -> float:
        return math.inf if self._deadline is None else self._deadline - self._clock()

    def _timeout_error(self, why: str) -> PollTimeoutError:
        status = self._last_run.raw_status if self._last_run else "never seen"
        return PollTimeoutError(
            f"gave up on run {self._run_id} of workflow {self._workflow_id} "
            f"after {self._clock() - self._started:.1f}s ({why}); last status: {status}",
            last_run=self._last_run,
            history=self._history,
        )


def _in_progress(run: WorkflowRun) -> bool:
    return not run.is_terminal


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
