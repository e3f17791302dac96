"""Tracking many runs in a long-lived service: `RunTracker` and `RunHandle`.

A tracker owns one task per tracked run. Each task is a `_TrackedPoller`, the same
poller as `poll_until_done` (cadence, deadline, outages, 404 grace, webhooks), with two
additions: a learned head start (``learn=True``), and, with ``sweep=True``, a
`_Sweeper` per workflow that watches its runs through pages of the list endpoint and
tells each poller what the list showed, or to GET for itself (see `_sweep`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Generator
from typing import TYPE_CHECKING, Any

from ._errors import CopyAIError, RunFailedError
from ._models import RunStatus, StatusChange, WorkflowRun
from ._policy import PollPolicy
from ._poll import DEFAULT_TIMEOUT, Clock, RunFetcher, Sleep, _call, _Poller
from ._sweep import Sweeper

if TYPE_CHECKING:
    from ._webhooks import WebhookReceiver

logger = logging.getLogger("copyai_poll")

#: How many finished runs a tracker remembers (for `track` to return their handle).
KEEP_FINISHED = 10_000
#: The longest head start, in ``PollPolicy.maximum``s (2 minutes by default).
MAX_HOLD_MAXIMUMS = 12
#: How many recent durations per workflow ``learn=True`` keeps.
_LEARNED = 64
#: The head start is this share of the shortest duration seen: a run a bit faster than
#: any before it is still seen soon after it finishes.
_HEAD_START_SHARE = 0.9


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class _TrackedPoller(_Poller):
    """A `_Poller` that may start late (a learned head start) or be swept."""

    __slots__ = (
        "_held_waits",
        "_hold",
        "confirming",
        "due",
        "got_at",
        "held",
        "listed",
        "not_before",
        "sweeper",
        "unfinished_at",
        "where",
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
        webhooks: WebhookReceiver | None,
        *,
        hold: float,
        sweeper: Sweeper | None,
    ) -> None:
        super().__init__(fetcher, workflow_id, run_id, policy, timeout, sleep, clock, webhooks)
        self._hold = hold
        self.held = hold  # the head start it was given, for the tracker to learn from
        self.unfinished_at = 0.0  # seconds into the wait it was last seen unfinished
        # After a head start, the schedule goes on about where it would be had the run
        # been polled since it began (one wait short of it: a first sighting often finds
        # the run just moved), rather than from the start.
        self._held_waits = max(0, _waits_within(self._policy, hold) - 1) if hold else 0
        self.sweeper = sweeper
        # When the next observation is due: for a swept run, what the sweeper goes by.
        # Its first one waits a little (``initial``), so that runs started together
        # are seen by the same sweep.
        first = self._policy.initial if sweeper is not None else 0.0
        self.due = self._started + max(hold, first)
        self.got_at = self._started  # when its last GET came back (a swept run's)
        self.not_before = self._started  # no GET before: a Retry-After's end
        self.confirming: RunStatus | None = None  # the end the list showed, GET to confirm
        # Where a sweep last saw it: (index in the list, the list's total then).
        self.where: tuple[int, int | None] | None = None
        # What the list last showed of it, and in which sweep.
        self.listed: tuple[RunStatus | None, int] = (None, 0)

    @property
    def run_id(self) -> str:
        return self._run_id

    def _observe(self, run: WorkflowRun) -> StatusChange | None:
        if not run.is_terminal:
            self.unfinished_at = self._clock() - self._started
        change = super()._observe(run)
        if change is not None and change.previous is None and self._held_waits:
            # The first sighting is not a move of the run (reset_on_change is for
            # those): polls go on at the pace of a run this old.
            self._waits, self._held_waits = self._held_waits, 0
        return change

    @property
    def history(self) -> list[StatusChange]:
        return self._history

    def wake(self) -> None:
        """A webhook delivery: a swept run GETs at once (at most once a second)."""
        if self.sweeper is None:
            super().wake()
        else:
            self.sweeper.wake(self)

    async def _poll(self) -> WorkflowRun | None:
        sweeper = self.sweeper
        if sweeper is not None and not sweeper.gave_up:
            listed = await sweeper.instruction(self)
            if listed is not None:  # an observation without a request
                self._failure = self._retry_after = None
                return listed
            run = await super()._poll()
            sweeper.confirmed(self, run)
            return run
        self.sweeper = None
        if self._hold:
            hold, self._hold = self._hold, 0.0
            left = max(0.0, min(hold - (self._clock() - self._started), self._time_left()))
            if self._receiver is None:
                await self._sleep(left)
            else:  # a delivery ends the head start at once
                await self._woken_pause(left, 0.0)
        return await super()._poll()

    async def _pause(self) -> None:
        if self.sweeper is None or self.sweeper.gave_up:
            self.sweeper = None
            await super()._pause()
            return
        # The sweeper waits for ``due``; this only says when that is.
        now = self._clock()
        self.due = now + self._next_wait()
        self.not_before = now + (self._retry_after or 0.0)


class RunHandle:
    """One tracked run: ask where it is at any time, or await its end.

    Made by `RunTracker.track`, never directly. Awaiting a handle starts no request,
    and any number of tasks may await it.
    """

    __slots__ = ("_changed", "_future", "_on_poll", "_on_status_change", "_poller", "_task")

    def __init__(
        self,
        poller: _TrackedPoller,
        on_status_change: Callable[[StatusChange], Any] | None,
        on_poll: Callable[[WorkflowRun], Any] | None,
    ) -> None:
        self._poller = poller
        self._on_status_change = on_status_change
        self._on_poll = on_poll
        self._future: asyncio.Future[WorkflowRun] = asyncio.get_running_loop().create_future()
        # Whoever reads `history` learns of an error by awaiting: no "never retrieved".
        self._future.add_done_callback(_retrieve)
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def workflow_id(self) -> str:
        """The run's workflow."""
        return self._poller._workflow_id

    @property
    def run_id(self) -> str:
        """The run."""
        return self._poller._run_id

    @property
    def last_run(self) -> WorkflowRun | None:
        """The latest observation of the run, or None before the first."""
        return self._poller.last_run

    @property
    def status(self) -> RunStatus | None:
        """The latest observation's status, or None before the first (or if unknown)."""
        run = self._poller.last_run
        return None if run is None else run.status

    @property
    def history(self) -> tuple[StatusChange, ...]:
        """Every change of status observed so far, in order."""
        return tuple(self._poller.history)

    def done(self) -> bool:
        """True once the wait ended: COMPLETE, FAILED, timed out, cancelled or failed."""
        return self._future.done()

    def cancel(self) -> None:
        """Stop watching the run; awaiting the handle then raises `CancelledError`."""
        if self._task is not None:
            self._task.cancel()
        self._future.cancel()

    def __await__(self) -> Generator[Any, None, WorkflowRun]:
        """The COMPLETE run; or `RunFailedError`, `PollTimeoutError`, `CopyAIError`.

        A task that awaits and is cancelled does not cancel the handle.
        """
        return asyncio.shield(self._future).__await__()

    async def changes(self) -> AsyncGenerator[StatusChange]:
        """Each change of status: those so far first, then live, ending after the last.

        A FAILED run is the last value here, not an exception; a wait that ended
        otherwise (timeout, error, cancel) raises as awaiting the handle does.
        """
        sent = 0
        while True:
            history = self._poller.history
            while sent < len(history):
                sent += 1
                yield history[sent - 1]
            future = self._future
            if future.done():
                # FAILED was the last change; anything else ends as awaiting does
                # (COMPLETE returns; a timeout, an error or a cancel raises).
                if future.cancelled() or not isinstance(future.exception(), RunFailedError):
                    await self
                return
            event = self._changed
            await event.wait()

    def __repr__(self) -> str:
        state = "done" if self.done() else "tracking"
        status = self.status
        return (
            f"<RunHandle {self.run_id} of {self.workflow_id}: "
            f"{'not seen yet' if status is None else status} ({state})>"
        )

    # The tracker's side.

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def _changed_to(self, change: StatusChange) -> None:
        self._notify()
        if self._on_status_change is not None:
            await _call(self._on_status_change, change)

    async def _run(self) -> None:
        try:
            run = await self._poller.wait(self._changed_to, self._on_poll)
        except asyncio.CancelledError:
            self._future.cancel()
            raise
        except Exception as exc:
            if not isinstance(exc, CopyAIError):  # a callback's own error, most likely
                logger.error(
                    "tracking run %s (workflow %s) ended with an error of its own",
                    self.run_id,
                    self.workflow_id,
                    exc_info=exc,
                    extra={"run_id": self.run_id, "workflow_id": self.workflow_id},
                )
            if not self._future.done():
                self._future.set_exception(exc)
        else:
            if not self._future.done():
                self._future.set_result(run)
        finally:
            self._notify()


def _waits_within(policy: PollPolicy, seconds: float) -> int:
    """How many of the policy's waits (without jitter) fit in ``seconds``."""
    count, spent = 0, 0.0
    while True:
        wait = policy.wait(count, rand=lambda: 0.5)  # 0.5: no spread either way
        if wait >= policy.maximum:  # every wait from here is the maximum
            return count + int((seconds - spent) // policy.maximum)
        if spent + wait > seconds:
            return count
        spent += wait
        count += 1


def _default_policy(webhooks: WebhookReceiver | None) -> PollPolicy:
    """What `_Poller` takes when no policy is given: the safety net with webhooks."""
    return PollPolicy() if webhooks is None else type(webhooks).SAFETY_NET


def _retrieve(future: asyncio.Future[WorkflowRun]) -> None:
    if not future.cancelled():
        future.exception()


class RunTracker:
    """A registry of runs in flight: track them, ask about them, await them.

    Use it as an async context manager around a service's life or a batch; leaving the
    block cancels every wait still running.

    Args:
        client: Fetches the runs; a `CopyAIClient` (required for ``sweep=True``) or any
            fetcher with ``async get_run(workflow_id, run_id)``.
        policy: When to poll each run; None for `PollPolicy()` (or, with ``webhooks``,
            `WebhookReceiver.SAFETY_NET`).
        timeout: Seconds each run may take from when it is tracked; None for ever.
        webhooks: A `WebhookReceiver`: a delivery makes that run's wait poll at once.
        sweep: Watch each workflow's runs through pages of its list rather than one GET
            per run per cycle; a terminal status is still confirmed by one GET.
        learn: Learn each workflow's durations from the runs seen to finish, and hold
            the first poll of a new run until about the shortest of them.
        keep_finished: How many finished runs are remembered, so that `track` returns
            their handle; older ones are forgotten (tracking one again starts anew).
        sleep: How to wait (tests pass a fake).
        clock: The monotonic clock schedules and deadlines are measured on.
    """

    def __init__(
        self,
        client: RunFetcher,
        *,
        policy: PollPolicy | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        webhooks: WebhookReceiver | None = None,
        sweep: bool = False,
        learn: bool = False,
        keep_finished: int = KEEP_FINISHED,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
    ) -> None:
        if timeout is not None and not (timeout >= 0):
            raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}")
        if keep_finished < 0:
            raise ValueError(f"keep_finished must be >= 0, got {keep_finished!r}")
        if sweep and not callable(getattr(client, "list_page", None)):
            raise TypeError("sweep=True needs a CopyAIClient, which can list a workflow's runs")
        self._client = client
        self._policy = policy
        self._timeout = timeout
        self._webhooks = webhooks
        self._sweep = sweep
        self._learn = learn
        self._keep_finished = keep_finished
        self._sleep = asyncio.sleep if sleep is None else sleep
        self._clock = time.monotonic if clock is None else clock
        self._state = _State.UNOPENED
        self._handles: dict[tuple[str, str], RunHandle] = {}
        self._finished: deque[RunHandle] = deque()
        self._in_flight: set[RunHandle] = set()
        self._sweepers: dict[str, Sweeper] = {}
        self._durations: dict[str, deque[float]] = {}
        # `as_completed` iterations; None tells one the tracker closed.
        self._finish_listeners: list[asyncio.Queue[RunHandle | None]] = []

    async def __aenter__(self) -> RunTracker:
        if self._state is not _State.UNOPENED:
            raise RuntimeError("a RunTracker can be entered once")
        self._state = _State.OPEN
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Cancel every wait still running and the sweeps; `track` is then an error."""
        self._state = _State.CLOSED
        for queue in self._finish_listeners:
            queue.put_nowait(None)
        tasks = [h._task for h in self._in_flight if h._task is not None]
        for handle in list(self._in_flight):
            handle.cancel()
        sweepers = list(self._sweepers.values())
        for sweeper in sweepers:
            sweeper.close()
        await asyncio.gather(*tasks, *(s.closed() for s in sweepers), return_exceptions=True)
        self._sweepers.clear()

    def track(
        self,
        workflow_id: str,
        run_id: str,
        *,
        on_status_change: Callable[[StatusChange], Any] | None = None,
        on_poll: Callable[[WorkflowRun], Any] | None = None,
    ) -> RunHandle:
        """Start watching a run (at once, in the background) and return its handle.

        Tracking a run already tracked returns the same handle (its callbacks stay the
        ones given first), unless that handle was cancelled. A run id is all it takes to
        resume after a restart.

        Raises:
            RuntimeError: The tracker is not open (before ``async with`` or after it).
        """
        if self._state is not _State.OPEN:
            raise RuntimeError(
                f"this RunTracker is {self._state.value}; track runs inside its block"
            )
        key = (workflow_id, run_id)
        handle = self._handles.get(key)
        if handle is not None and not handle._future.cancelled():
            return handle  # a cancelled handle is not a wait: tracking again starts one
        poller = _TrackedPoller(
            self._client,
            workflow_id,
            run_id,
            self._policy,
            self._timeout,
            self._sleep,
            self._clock,
            self._webhooks,
            hold=self._head_start(workflow_id),
            sweeper=self._sweeper_for(workflow_id) if self._sweep else None,
        )
        handle = RunHandle(poller, on_status_change, on_poll)
        self._handles[key] = handle
        self._in_flight.add(handle)
        handle._task = task = asyncio.create_task(handle._run(), name=f"track {run_id}")
        task.add_done_callback(lambda _: self._finished_one(key, handle))
        return handle

    def handles(self) -> list[RunHandle]:
        """The handles of the runs in flight and of those remembered after finishing."""
        return list(self._handles.values())

    async def as_completed(self) -> AsyncGenerator[RunHandle]:
        """Yield handles as their waits end, those already ended first.

        Runs tracked while this iterates are included; it ends once no tracked run is
        in flight.
        """
        queue: asyncio.Queue[RunHandle | None] = asyncio.Queue()
        self._finish_listeners.append(queue)
        try:
            for finished in list(self._finished):
                yield finished
            while self._in_flight or not queue.empty():
                handle = await queue.get()
                if handle is None:  # the tracker closed
                    return
                yield handle
        finally:
            self._finish_listeners.remove(queue)

    def __repr__(self) -> str:
        return (
            f"<RunTracker {self._state.value}: {len(self._in_flight)} in flight, "
            f"{len(self._finished)} finished{', sweeping' if self._sweep else ''}>"
        )

    def _finished_one(self, key: tuple[str, str], handle: RunHandle) -> None:
        self._in_flight.discard(handle)
        if handle._future.cancelled() and self._state is _State.CLOSED:
            return
        self._finished.append(handle)
        self._learn_from(handle)
        while len(self._finished) > self._keep_finished:
            old = self._finished.popleft()
            old_key = (old.workflow_id, old.run_id)
            if self._handles.get(old_key) is old:  # not a newer wait of the same run
                del self._handles[old_key]
        for queue in self._finish_listeners:
            queue.put_nowait(handle)

    def _sweeper_for(self, workflow_id: str) -> Sweeper:
        sweeper = self._sweepers.get(workflow_id)
        if sweeper is None:
            sweeper = Sweeper(
                self._client,  # type: ignore[arg-type]  # checked in __init__
                workflow_id,
                policy=self._policy or _default_policy(self._webhooks),
                sleep=self._sleep,
                clock=self._clock,
            )
            self._sweepers[workflow_id] = sweeper
        return sweeper

    def _head_start(self, workflow_id: str) -> float:
        durations = self._durations.get(workflow_id) if self._learn else None
        if not durations:
            return 0.0
        policy = self._policy or _default_policy(self._webhooks)
        # Never longer than a swept run goes without its own GET: a service asking
        # "where is run X?" hears "not seen yet" for at most that long.
        hold = min(_HEAD_START_SHARE * min(durations), MAX_HOLD_MAXIMUMS * policy.maximum)
        return hold if self._timeout is None else min(hold, self._timeout)

    def _learn_from(self, handle: RunHandle) -> None:
        history = handle._poller.history
        if not self._learn or not history or not history[-1].current.is_terminal:
            return
        learned = self._durations.setdefault(handle.workflow_id, deque(maxlen=_LEARNED))
        if len(history) >= 2:
            # It ended between the last look that found it unfinished and the one that
            # found it ended: the middle, not the end plus the poll's lag.
            learned.append((handle._poller.unfinished_at + history[-1].elapsed) / 2)
        elif handle._poller.held:
            # First seen already finished after a head start: the runs got faster than
            # the hold, by how much is unknown. Half the hold, so the next ones look
            # sooner (again and again, while they keep finishing before the first look).
            learned.append(handle._poller.held / _HEAD_START_SHARE / 2)
        # (A run first seen finished without a hold was tracked late: it tells nothing.)
