"""Waiting for runs to finish: `poll_until_done`, `watch` and `poll_many`.

One `_Poller` per wait holds the state (status so far, polls made, the deadline, an
outage in progress) and polls until the run is terminal. The public functions only
dispatch what it observes.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from contextlib import aclosing
from typing import Any, Protocol, TypedDict, Unpack

import attrs

from . import _otel
from ._deadline import time_left
from ._errors import CopyAIError, NotFoundError, PollTimeoutError, RunFailedError, is_transient
from ._models import RunStatus, StatusChange, WorkflowRun
from ._policy import PollPolicy
from ._webhooks import WebhookReceiver

logger = logging.getLogger("copyai_poll")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

#: Seconds a wait may last when the caller does not say: a run stuck for an hour must
#: not hold a task of a service for ever.
DEFAULT_TIMEOUT = 3600.0

#: Seconds between a waiter's woken polls at least, however many deliveries arrive.
WAKE_INTERVAL = 1.0


class RunFetcher(Protocol):
    """Anything that can fetch a run; `CopyAIClient` is one."""

    async def get_run(self, workflow_id: str, run_id: str) -> WorkflowRun: ...


class PollOptions(TypedDict, total=False):
    """The keyword arguments of `poll_until_done`, for functions that pass them on."""

    on_status_change: Callable[[StatusChange], Any] | None
    on_poll: Callable[[WorkflowRun], Any] | None
    policy: PollPolicy | None
    timeout: float | None
    webhooks: WebhookReceiver | None
    sleep: Sleep | None
    clock: Clock | None


_DEFAULT_POLICY = PollPolicy()


async def poll_until_done(
    fetcher: RunFetcher,
    workflow_id: str,
    run_id: str,
    *,
    on_status_change: Callable[[StatusChange], Any] | None = None,
    on_poll: Callable[[WorkflowRun], Any] | None = None,
    policy: PollPolicy | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    webhooks: WebhookReceiver | None = None,
    sleep: Sleep | None = None,
    clock: Clock | None = None,
) -> WorkflowRun:
    """Poll a run until it is COMPLETE, and return it.

    A poll that fails transiently (server trouble, throttling, a garbled answer, a
    connection failure other than TLS) does not end the wait: the next poll follows the
    schedule, until polls have failed for longer than ``policy.outage_grace``.

    Args:
        fetcher: Anything with ``async get_run(workflow_id, run_id)``, e.g. a client.
        workflow_id: The run's workflow.
        run_id: The run.
        on_status_change: Called (sync or async) once per observed change of status,
            in order, the first observation included, the terminal one before return.
        on_poll: Called (sync or async) with the run after every successful poll.
        policy: When to poll next; None for `PollPolicy()`, or with ``webhooks`` for
            `WebhookReceiver.SAFETY_NET`.
        timeout: Seconds for the whole wait, requests and sleeps included; None waits
            for ever.
        webhooks: A `WebhookReceiver`: a delivery for this run makes the wait poll at
            once (at most once a second); the status still comes from that GET.
        sleep: How to wait between polls (tests pass a fake that does not wait).
        clock: The monotonic clock the deadline and ``elapsed`` are measured on.

    Returns:
        The COMPLETE run.

    Raises:
        RunFailedError: The run reached FAILED (``.run``, ``.history``).
        PollTimeoutError: ``timeout`` passed (``.last_run``, ``.history``; its
            ``__cause__`` is the last failed poll's error, if polls were failing).
        CopyAIError: The fetcher failed for good: an error that is not transient, or
            transient errors for longer than ``policy.outage_grace``.
    """
    poller = _Poller(fetcher, workflow_id, run_id, policy, timeout, sleep, clock, webhooks)
    return await poller.wait(on_status_change, on_poll)


async def watch(
    fetcher: RunFetcher,
    workflow_id: str,
    run_id: str,
    *,
    policy: PollPolicy | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    webhooks: WebhookReceiver | None = None,
    sleep: Sleep | None = None,
    clock: Clock | None = None,
) -> AsyncGenerator[StatusChange]:
    """Yield each observed `StatusChange` of a run, ending after the terminal one.

    A FAILED run is the last value here, not an exception. Closing the generator (or
    leaving an ``async with contextlib.aclosing(...)`` block) stops the poll at once.
    ``webhooks=`` wakes it as in `poll_until_done`.

    Raises:
        PollTimeoutError: ``timeout`` passed first.
        CopyAIError: The fetcher failed for good, as in `poll_until_done`.
    """
    poller = _Poller(fetcher, workflow_id, run_id, policy, timeout, sleep, clock, webhooks)
    observed = poller.observations()
    if _otel.active is not None:  # off: nothing more in the wait's path
        observed = _otel.active.observe(poller, observed)
    async with aclosing(observed) as observations:
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
    runs: Iterable[tuple[str, str] | WorkflowRun] | AsyncIterable[tuple[str, str] | WorkflowRun],
    *,
    concurrency: int | None = None,
    **poll_options: Unpack[PollOptions],
) -> AsyncGenerator[RunOutcome]:
    """Poll many runs at once and yield a `RunOutcome` as each one finishes.

    One run's failure never stops the others. Closing the generator early (or leaving an
    ``async with contextlib.aclosing(...)`` block) cancels the polls still running.

    Args:
        fetcher: Shared by every poll.
        runs: ``(workflow_id, run_id)`` pairs, or `WorkflowRun` objects, from an iterable
            or an async iterable (so that runs can be started and watched in one
            pipeline: each is watched as soon as it arrives).
        concurrency: How many runs are polled at a time; None polls all at once.
        poll_options: Passed to `poll_until_done` for every run.

    Raises:
        ValueError: ``concurrency`` is below 1, or an item names no workflow.
    """
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"concurrency must be >= 1 or None, got {concurrency!r}")
    slots = None if concurrency is None else asyncio.Semaphore(concurrency)
    finished: asyncio.Queue[asyncio.Task[Any]] = asyncio.Queue()
    tasks: set[asyncio.Task[RunOutcome]] = set()

    def launch(item: tuple[str, str] | WorkflowRun) -> None:
        workflow_id, run_id = _ids(item)
        task = asyncio.create_task(_outcome(fetcher, workflow_id, run_id, poll_options))
        tasks.add(task)
        task.add_done_callback(finished.put_nowait)

    feeding = asyncio.create_task(_feed(runs, slots, launch))
    feeding.add_done_callback(finished.put_nowait)
    feeder: asyncio.Task[None] | None = feeding
    try:
        while feeder is not None or tasks:
            task = await finished.get()
            if task is feeder:
                feeder = None
                task.result()  # the source of runs failed: so does this generator
                continue
            tasks.discard(task)
            if slots is not None:
                slots.release()
            yield task.result()
    finally:
        pending = [t for t in (feeder, *tasks) if t is not None]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _feed(
    runs: Iterable[tuple[str, str] | WorkflowRun] | AsyncIterable[tuple[str, str] | WorkflowRun],
    slots: asyncio.Semaphore | None,
    launch: Callable[[tuple[str, str] | WorkflowRun], None],
) -> None:
    """Start a poll per run as runs arrive, no more at a time than ``slots`` allows."""
    if isinstance(runs, AsyncIterable):
        iterator = aiter(runs)
        while True:
            if slots is not None:
                await slots.acquire()
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                return
            launch(item)
    for item in runs:
        if slots is not None:
            await slots.acquire()
        launch(item)


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
    poller = _Poller(
        fetcher,
        workflow_id,
        run_id,
        options.get("policy"),
        options.get("timeout", DEFAULT_TIMEOUT),
        options.get("sleep"),
        options.get("clock"),
        options.get("webhooks"),
    )
    try:
        run = await poller.wait(options.get("on_status_change"), options.get("on_poll"))
    except RunFailedError as exc:
        error: Exception = exc
        run = exc.run
    except Exception as exc:
        error, last = exc, poller.last_run  # the last run seen, whatever ended the poll
        return RunOutcome(workflow_id=workflow_id, run_id=run_id, run=last, error=error)
    else:
        return RunOutcome(workflow_id=workflow_id, run_id=run_id, run=run, error=None)
    return RunOutcome(workflow_id=workflow_id, run_id=run_id, run=run, error=error)


async def _call(callback: Callable[[Any], Any], arg: Any) -> None:
    result = callback(arg)
    if inspect.isawaitable(result):
        await result


class _Poller:
    """The state of one wait for one run."""

    # Thousands of waits at once: no per-instance dict.
    __slots__ = (
        "_clock",
        "_deadline",
        "_failing_since",
        "_failure",
        "_fetcher",
        "_history",
        "_policy",
        "_polls",
        "_receiver",
        "_retry_after",
        "_run_id",
        "_scoped",
        "_sleep",
        "_started",
        "_waits",
        "_wake_due",
        "_wakeup",
        "_woken_at",
        "_workflow_id",
        "last_run",
    )

    def __init__(
        self,
        fetcher: RunFetcher,
        workflow_id: str,
        run_id: str,
        policy: PollPolicy | None,
        timeout: float | None,
        sleep: Sleep | None,
        clock: Clock | None,
        webhooks: WebhookReceiver | None = None,
    ) -> None:
        if timeout is not None and not (timeout >= 0):
            raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}")
        self._fetcher = fetcher
        self._workflow_id = workflow_id
        self._run_id = run_id
        if policy is None:
            policy = _DEFAULT_POLICY if webhooks is None else WebhookReceiver.SAFETY_NET
        self._policy = policy
        self._sleep = asyncio.sleep if sleep is None else sleep
        self._clock = time.monotonic if clock is None else clock
        self._started = self._clock()
        self._deadline = None if timeout is None else self._started + timeout
        self._waits = 0  # waits since polling began or the status last changed
        self._polls = 0
        self.last_run: WorkflowRun | None = None
        self._history: list[StatusChange] = []
        self._failure: CopyAIError | None = None  # the last poll's error, while failing
        self._retry_after: float | None = None  # what the last poll's error asked for
        self._scoped = False  # inside `wait`'s deadline scope
        self._failing_since = 0.0
        # Deliveries (see `wake`): None without a receiver, and then never looked at.
        self._receiver = webhooks
        self._wakeup: asyncio.Future[None] | None = None  # ends the woken pause under way
        self._wake_due: float | None = None  # when the next woken poll may begin
        self._woken_at = -math.inf  # when the last woken poll began

    async def wait(
        self,
        on_status_change: Callable[[StatusChange], Any] | None,
        on_poll: Callable[[WorkflowRun], Any] | None,
    ) -> WorkflowRun:
        """Poll to the end, calling the callbacks; the COMPLETE run, or the error.

        With a receiver, deliveries for the run wake the wait while it lasts.
        """
        if _otel.active is not None:  # off: nothing more in the wait's path
            return await _otel.active.wait(self, self._attached_wait, on_status_change, on_poll)
        return await self._attached_wait(on_status_change, on_poll)

    async def _attached_wait(
        self,
        on_status_change: Callable[[StatusChange], Any] | None,
        on_poll: Callable[[WorkflowRun], Any] | None,
    ) -> WorkflowRun:
        """`_wait`, registered with the receiver (if any) while it lasts."""
        if self._receiver is None:
            return await self._wait(on_status_change, on_poll)
        detach = self._receiver._attach(self._run_id, self)
        try:
            return await self._wait(on_status_change, on_poll)
        finally:
            detach()

    def wake(self) -> None:
        """Poll once at once, cutting the pause under way short.

        Woken polls are at least `WAKE_INTERVAL` apart: a wake sooner after the last
        one is deferred to the end of that interval, never dropped. A wake while a poll
        is in flight makes one more poll follow it (that poll may have been answered
        before whatever the delivery announced). Any poll that begins satisfies every
        wake before it. Only a poll made with a receiver (``webhooks=``) can be woken.
        """
        due = max(self._clock(), self._woken_at + WAKE_INTERVAL)
        if self._wake_due is not None and self._wake_due <= due:
            return  # an earlier (or the same) woken poll is already due: coalesced
        self._wake_due = due
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _wait(
        self,
        on_status_change: Callable[[StatusChange], Any] | None,
        on_poll: Callable[[WorkflowRun], Any] | None,
    ) -> WorkflowRun:
        """`wait` without the receiver's registration.

        One deadline scope bounds the whole wait (requests, sleeps and callbacks), rather
        than one timer per request.
        """
        if self._deadline is None:
            return await self._loop(on_status_change, on_poll)
        token = time_left.set(self._time_left)
        self._scoped = True
        try:
            async with asyncio.timeout(self._time_left()) as scope:
                return await self._loop(on_status_change, on_poll)
        except TimeoutError as exc:
            if scope.expired():
                raise self._timeout_error("the deadline passed") from (self._failure or exc)
            raise
        finally:
            self._scoped = False
            time_left.reset(token)

    async def _loop(
        self,
        on_status_change: Callable[[StatusChange], Any] | None,
        on_poll: Callable[[WorkflowRun], Any] | None,
    ) -> WorkflowRun:
        # The same loop as `observations`, without an async generator in every poll's path.
        while True:
            run = await self._poll()
            if run is not None:
                change = self._observe(run)
                if change is not None and on_status_change is not None:
                    await _call(on_status_change, change)
                if on_poll is not None:
                    await _call(on_poll, run)
                if run.is_terminal:
                    return self.result()
            await self._pause()

    async def observations(self) -> AsyncGenerator[tuple[WorkflowRun, StatusChange | None]]:
        """Poll until the run is terminal, yielding each run seen and its change, if any."""
        detach = None if self._receiver is None else self._receiver._attach(self._run_id, self)
        try:
            while True:
                run = await self._poll()
                if run is not None:
                    yield run, self._observe(run)
                    if run.is_terminal:
                        return
                await self._pause()
        finally:
            if detach is not None:
                detach()

    def result(self) -> WorkflowRun:
        """The final run, or `RunFailedError` if it failed."""
        run = self.last_run
        assert run is not None, "result() before the first poll"
        assert run.is_terminal, "result() before the run finished"
        if run.status is RunStatus.FAILED:
            raise RunFailedError(
                f"run {run.id} of workflow {self._workflow_id} failed: {_short(run.error)}",
                run=run,
                history=self._history,
            )
        return run

    async def _poll(self) -> WorkflowRun | None:
        """One poll: the run, or None when it failed in a way that keeps the wait going."""
        if self._time_left() <= 0:
            raise self._timeout_error("the deadline passed") from self._failure
        self._polls += 1
        self._retry_after = None  # only the latest poll's answer says how long to wait
        began = self._clock()
        try:
            run = await self._fetch()
        except NotFoundError:
            if began - self._started > self._policy.not_found_grace:
                raise
            self._log_debug("not visible yet (404)")
            return None
        except CopyAIError as exc:
            if not is_transient(exc):
                raise
            if self._failure is None:
                self._failing_since = began
            self._failure = exc
            self._retry_after = getattr(exc, "retry_after", None)
            grace = self._policy.outage_grace
            if grace is not None and self._clock() - self._failing_since > grace:
                raise
            logger.warning(
                "poll %d of run %s (workflow %s) failed (%s); polling again on schedule",
                self._polls,
                self._run_id,
                self._workflow_id,
                exc,
                extra={"run_id": self._run_id, "workflow_id": self._workflow_id},
            )
            return None
        self._failure = None
        return run

    async def _fetch(self) -> WorkflowRun:
        if self._deadline is None or self._scoped:  # no deadline, or `wait` bounds it all
            return await self._fetcher.get_run(self._workflow_id, self._run_id)
        token = time_left.set(self._time_left)
        try:
            async with asyncio.timeout(self._time_left()) as scope:
                return await self._fetcher.get_run(self._workflow_id, self._run_id)
        except TimeoutError as exc:
            if scope.expired():
                raise self._timeout_error("the deadline passed during a request") from (
                    self._failure or exc
                )
            raise
        finally:
            time_left.reset(token)

    async def _pause(self) -> None:
        """Sleep until the next poll is due, never past the deadline."""
        wait = self._next_wait()
        delay = max(0.0, min(wait, self._time_left()))
        if self._receiver is None:
            await self._sleep(delay)
        else:
            await self._woken_pause(delay, self._retry_after or 0.0)

    def _next_wait(self) -> float:
        """Seconds until the next poll: the policy's, or the server's ``Retry-After``.

        Raises:
            PollTimeoutError: The server asked for a wait that would pass the deadline.
        """
        wait = self._policy.wait(self._waits)
        self._waits += 1
        retry_after = self._retry_after
        if retry_after is not None:
            if retry_after >= self._time_left():
                raise self._timeout_error(
                    f"the server asked to wait {retry_after:g}s, past the deadline"
                ) from self._failure
            wait = max(wait, retry_after)
        return wait

    async def _woken_pause(self, delay: float, floor: float) -> None:
        """`_pause`'s sleep when deliveries may wake the wait.

        It ends after ``delay``, or earlier once a wake is due, but never before
        ``floor`` (a Retry-After) has passed. The sleep stays the injected one: it runs
        as a task, raced against the wake, and only on this path.
        """
        start = self._clock()
        end, earliest = start + delay, start + floor
        while True:
            now = self._clock()
            due = self._wake_due
            if due is not None and max(due, earliest) <= now:
                self._woken_at = now
                break
            if now >= end:
                break
            target = end if due is None else min(end, max(due, earliest))
            loop = asyncio.get_running_loop()
            self._wakeup = wakeup = loop.create_future()
            sleeper = asyncio.ensure_future(self._sleep(target - now))
            try:
                await asyncio.wait((sleeper, wakeup), return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._wakeup = None
                if not sleeper.done():
                    sleeper.cancel()
                    await asyncio.wait((sleeper,))  # gone before the wait goes on, or ends
            if not sleeper.cancelled():
                sleeper.result()  # an injected sleep that failed fails the wait
        self._wake_due = None  # the poll that follows answers every wake so far

    def _observe(self, run: WorkflowRun) -> StatusChange | None:
        self.last_run = run
        self._log_debug(run.raw_status or "no status")
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

    def _log_debug(self, what: str) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "poll %d of run %s (workflow %s): %s",
                self._polls,
                self._run_id,
                self._workflow_id,
                what,
                extra={"run_id": self._run_id, "workflow_id": self._workflow_id},
            )

    def _time_left(self) -> float:
        return math.inf if self._deadline is None else self._deadline - self._clock()

    def _timeout_error(self, why: str) -> PollTimeoutError:
        status = self.last_run.raw_status if self.last_run else "never seen"
        return PollTimeoutError(
            f"gave up on run {self._run_id} of workflow {self._workflow_id} "
            f"after {self._clock() - self._started:.1f}s ({why}); last status: {status}",
            last_run=self.last_run,
            history=self._history,
        )


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
