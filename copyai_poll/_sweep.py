"""Watching one workflow's tracked runs through pages of its list (``sweep=True``).

Each tracked run keeps its own schedule (`PollPolicy`): ``due`` is when its next
observation is due. When runs are due, the `Sweeper` reads pages of the workflow's
list, from the end where new runs are, and tells each run's poller what it saw:

- a status that moved forward (by the rank NEW < WAITING < PROCESSING = RETRYING <
  COMPLETE = FAILED) or stayed the same is an observation, made without a request;
- a terminal status, or a switch between PROCESSING and RETRYING, is only a reason to
  look: the run GETs at once, and only that GET is reported;
- a missing status, one that went backwards, or a run the pages did not show is no
  observation: a run that was due GETs for itself.

The list's order, fields and freshness are undocumented, so the order is read from
``createdAt`` on every page, a sweep never reads more pages than the runs that are due
(the GETs it replaces), and a workflow whose sweeps keep disagreeing with GET, or do not
pay for their pages, falls back to per-run polling for a while.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ._errors import CopyAIError
from ._models import RunStatus, WorkflowRun
from ._policy import PollPolicy

if TYPE_CHECKING:
    from ._poll import Clock, Sleep
    from ._tracker import _TrackedPoller

logger = logging.getLogger("copyai_poll")

PAGE_SIZE = 100
#: Sweeps in a row that disagree with GET, or read more pages than they save GETs,
#: before the workflow falls back to per-run polling.
STRIKES = 3
#: Seconds a workflow that fell back polls per run before sweeps are tried again (for
#: runs tracked from then on).
FALLBACK_SECONDS = 600.0
#: A swept run GETs for itself at least once in this many ``PollPolicy.maximum``: a list
#: that froze cannot hide a run's end for longer.
STALE_AFTER_MAXIMUMS = 12
#: A woken run (a webhook delivery) GETs at most this often.
WAKE_INTERVAL = 1.0

_RANK = {
    RunStatus.NEW: 0,
    RunStatus.WAITING: 1,
    RunStatus.PROCESSING: 2,
    RunStatus.RETRYING: 2,
    RunStatus.COMPLETE: 3,
    RunStatus.FAILED: 3,
}

Order = Literal["newest", "oldest", "shuffled"]


class Lister(Protocol):
    """What sweeps need of a client: one page of a workflow's runs."""

    async def list_page(
        self, workflow_id: str, page: int, *, page_size: int = ...
    ) -> tuple[int | None, list[Any]]: ...


class Sweeper:
    """The sweeps of one workflow's tracked runs."""

    def __init__(
        self, client: Lister, workflow_id: str, *, policy: PollPolicy, sleep: Sleep, clock: Clock
    ) -> None:
        self._client = client
        self._workflow_id = workflow_id
        self._sleep = sleep
        self._clock = clock
        # Runs due within this much of each other are read by the same sweep.
        self._window = policy.initial / 2
        self._stale_after = STALE_AFTER_MAXIMUMS * policy.maximum
        self._sweeps = 0  # sweeps settled so far
        self._waiting: dict[_TrackedPoller, asyncio.Future[WorkflowRun | None]] = {}
        self._kick = asyncio.Event()
        self._napping_until = math.inf
        self._task: asyncio.Task[None] | None = None
        self._order: Order | None = None
        self._total: int | None = None  # the list's length when a page was last read
        self._disagreed = 0  # disagreements with GET since the last sweep
        self._strikes = 0  # sweeps in a row that disagreed
        self._losses = 0  # sweeps in a row that read more pages than they saved GETs
        self._gave_up_at: float | None = None

    @property
    def gave_up(self) -> bool:
        """True while this workflow's runs are polled one by one instead."""
        if self._gave_up_at is None:
            return False
        if self._clock() - self._gave_up_at < FALLBACK_SECONDS:
            return True
        self._gave_up_at = None
        return False

    async def instruction(self, poller: _TrackedPoller) -> WorkflowRun | None:
        """Wait for the next sweep's word on a run: what the list showed, or None: GET."""
        if self.gave_up:
            return None
        future: asyncio.Future[WorkflowRun | None] = asyncio.get_running_loop().create_future()
        self._waiting[poller] = future
        if self._task is None or self._task.done():
            # A context of its own: not the deadline (nor the trace) of the run whose
            # wait happens to start the sweeps.
            self._task = asyncio.create_task(
                self._run(), name=f"sweep {self._workflow_id}", context=contextvars.Context()
            )
        elif poller.due < self._napping_until:
            self._kick.set()
        try:
            return await future
        finally:
            self._waiting.pop(poller, None)

    def wake(self, poller: _TrackedPoller) -> None:
        """A delivery for a run: it GETs at once, or a second after its last woken GET."""
        due = max(self._clock(), poller._woken_at + WAKE_INTERVAL, poller.not_before)
        if poller._wake_due is not None and poller._wake_due <= due:
            return
        poller._wake_due = due
        poller.due = min(poller.due, due)
        if poller in self._waiting and due < self._napping_until:
            self._kick.set()

    def confirmed(self, poller: _TrackedPoller, run: WorkflowRun | None) -> None:
        """A run's GET came back: does it agree with what the list showed of it?

        GET disagrees when the list said the run had ended and it has not, or when the
        list still shows an earlier status than GET (it lags or froze).
        """
        poller.got_at = self._clock()
        listed, poller.confirming = poller.confirming, None
        if run is None or run.status is None:
            return
        ended_early = listed is not None and not run.is_terminal
        # The list and a GET just after it: a run rarely moves in between, a lagging
        # or frozen list shows an earlier status every time.
        shown, sweep = poller.listed
        behind = shown is not None and sweep == self._sweeps and _RANK[shown] < _RANK[run.status]
        if ended_early or behind:
            self._disagreed += 1
        poller.listed = (None, 0)

    def close(self) -> None:
        """Stop sweeping; the runs' own tasks are the tracker's to cancel."""
        if self._task is not None:
            self._task.cancel()

    async def closed(self) -> None:
        """Return once the sweeps have stopped."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    # The sweeps.

    async def _run(self) -> None:
        try:
            while self._waiting:
                now = self._clock()
                pending = [p for p, f in self._waiting.items() if not f.done()]
                first = min((p.due for p in pending), default=math.inf)
                if first > now:  # (runs told to go on are busy until they come back)
                    await self._nap(first - now)
                    continue
                self._napping_until = -math.inf  # runs arriving now wait for the next
                await self._sweep(now)
        except Exception:  # a defect here must not strand the runs: they poll alone
            logger.warning("sweeps of workflow %s failed", self._workflow_id, exc_info=True)
            self._give_up("its sweeps failed")
        finally:
            self._napping_until = math.inf

    async def _nap(self, seconds: float) -> None:
        """Sleep until the first run is due, or a run due sooner arrives."""
        self._napping_until = self._clock() + seconds
        self._kick.clear()
        if math.isinf(seconds):
            await self._kick.wait()
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        kicked = asyncio.ensure_future(self._kick.wait())
        try:
            await asyncio.wait((sleeper, kicked), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, kicked):
                task.cancel()
            await asyncio.wait((sleeper, kicked))

    async def _sweep(self, now: float) -> None:
        waiting = [(p, f) for p, f in self._waiting.items() if not f.done()]
        due: list[_TrackedPoller] = []
        for poller, future in waiting:
            if poller._wake_due is not None and poller._wake_due <= now:
                poller._wake_due, poller._woken_at = None, now
                future.set_result(None)  # woken: GET now
            elif poller.due <= now + self._window:
                due.append(poller)
        if not due:
            return
        if self.gave_up:
            _release(due, self._waiting)
            return
        try:
            seen, pages = await self._read(due, budget=len(due))
        except CopyAIError as exc:  # the list failed: the runs that were due look alone
            logger.warning("a sweep of workflow %s failed (%s)", self._workflow_id, exc)
            seen, pages = {}, len(due)
        self._settle(due, seen, pages)

    def _settle(self, due: list[_TrackedPoller], seen: dict[str, WorkflowRun], pages: int) -> None:
        """Tell each waiting run what the sweep saw, and judge the sweep."""
        now = self._clock()
        self._sweeps += 1
        due_now = set(due)
        saved = 0
        for poller, future in list(self._waiting.items()):
            if future.done():
                continue
            verdict = self._judge(poller, seen.get(poller.run_id))
            if isinstance(verdict, WorkflowRun) and now - poller.got_at > self._stale_after:
                verdict = None  # seen only through the list for too long: GET it
                if poller not in due_now:
                    continue
            if verdict is not None:
                saved += poller in due_now
                if isinstance(verdict, WorkflowRun):
                    future.set_result(verdict)
                else:
                    poller.confirming = verdict
                    future.set_result(None)
            elif poller in due_now:
                future.set_result(None)  # not seen as it should be: its own GET
        self._losses = self._losses + 1 if pages > saved else 0
        self._strikes = self._strikes + 1 if self._disagreed else 0
        self._disagreed = 0
        if self._strikes >= STRIKES:
            self._give_up("its list keeps disagreeing with GET")
        elif self._losses >= STRIKES:
            self._give_up("its pages cost more than the GETs they save")

    def _judge(
        self, poller: _TrackedPoller, listed: WorkflowRun | None
    ) -> WorkflowRun | RunStatus | None:
        """The listed run as an observation, a status to confirm by GET, or None."""
        if listed is None or listed.status is None:
            return None
        poller.listed = (listed.status, self._sweeps)
        before = poller.last_run.status if poller.last_run is not None else None
        if before is not None:
            if _RANK[listed.status] < _RANK[before]:
                self._disagreed += 1  # the list is behind what GET already showed
                return None
            if _RANK[listed.status] == _RANK[before] and listed.status is not before:
                return listed.status  # PROCESSING <-> RETRYING: let GET tell the order
        if listed.status.is_terminal:
            return listed.status
        return listed

    async def _read(
        self, due: list[_TrackedPoller], *, budget: int
    ) -> tuple[dict[str, WorkflowRun], int]:
        """Read the pages the due runs are on, until each was seen or ``budget`` pages."""
        watched = {p.run_id: p for p in self._waiting}
        missing = {p.run_id: p for p in due}
        seen: dict[str, WorkflowRun] = {}
        visited: set[int] = set()
        pages = 0
        while missing and pages < budget:
            page = self._plan(missing.values(), visited)
            if page is None:
                break
            total, items = await self._client.list_page(
                self._workflow_id, page, page_size=PAGE_SIZE
            )
            pages += 1
            visited.add(page)
            if total is not None:
                self._total = total
            runs = list(_runs(items, self._workflow_id))
            order = _order_of(runs)
            if order is not None:
                self._order = order
            for offset, run in enumerate(runs):
                poller = watched.get(run.id)
                if poller is not None:
                    seen[run.id] = run
                    missing.pop(run.id, None)
                    poller.where = ((page - 1) * PAGE_SIZE + offset, self._total)
        return seen, pages

    def _plan(self, missing: Iterable[_TrackedPoller], visited: set[int]) -> int | None:
        """The unread page that most missing runs should be on, or the next from the new end.

        Where a run is comes from where an earlier sweep saw it: in a list that is oldest
        first, runs keep their place; newest first, they move back by the runs started
        since (``total`` grew by that many). A run never seen is near the new end.
        """
        counts: dict[int, int] = {}
        for poller in missing:
            page = self._page_of(poller, visited)
            if page is not None:
                counts[page] = counts.get(page, 0) + 1
        if counts:
            return max(counts, key=counts.__getitem__)
        return _next_page(self._order, self._total, visited)

    def _page_of(self, poller: _TrackedPoller, visited: set[int]) -> int | None:
        if self._order not in ("newest", "oldest") or self._total is None:
            return None
        if poller.where is None:
            return None  # not seen yet: the walk from the new end finds it
        index, then = poller.where
        if self._order == "newest" and then is not None:
            index += max(0, self._total - then)
        page = index // PAGE_SIZE + 1
        if page in visited and self._order == "newest":
            page += 1  # runs started since the last page read pushed it to the next
        return None if page in visited else page

    def _give_up(self, why: str) -> None:
        if self._gave_up_at is None:
            logger.warning(
                "workflow %s: polling its runs one by one for %.0fs, as %s",
                self._workflow_id,
                FALLBACK_SECONDS,
                why,
            )
        self._gave_up_at = self._clock()
        self._strikes = self._losses = 0
        _release(list(self._waiting), self._waiting)


def _release(
    pollers: Iterable[_TrackedPoller],
    waiting: dict[_TrackedPoller, asyncio.Future[WorkflowRun | None]],
) -> None:
    for poller in pollers:
        future = waiting.get(poller)
        if future is not None and not future.done():
            future.set_result(None)


def _runs(items: list[Any], workflow_id: str) -> Iterable[WorkflowRun]:
    """The items that read as runs; others are skipped, not fatal."""
    for item in items:
        try:
            yield WorkflowRun.from_api(item, workflow_id=workflow_id)
        except CopyAIError:
            continue


def _order_of(runs: list[WorkflowRun]) -> Order | None:
    """The page's order by ``createdAt``, or None if it cannot tell."""
    times = [run.created_at for run in runs if run.created_at is not None]
    pairs = list(itertools.pairwise(times))
    rising = any(a < b for a, b in pairs)
    falling = any(a > b for a, b in pairs)
    if rising and falling:
        return "shuffled"
    if rising:
        return "oldest"
    if falling:
        return "newest"
    return None


def _last_page(total: int | None) -> int | None:
    if total is None:
        return None
    return max(1, math.ceil(total / PAGE_SIZE))


def _next_page(order: Order | None, total: int | None, visited: set[int]) -> int | None:
    """The next page from the new end, not read yet, or None when none is left."""
    last = _last_page(total)
    if order == "oldest" and last is not None:
        candidates: Iterable[int] = range(last, 0, -1)
    else:
        candidates = range(1, (last or max(visited, default=0) + 1) + 1)
    return next((page for page in candidates if page not in visited), None)
