"""Tracking fleets of runs on virtual time: per-run polling, sweeps, a learned head start.

The fake's state (`copyai_poll.testing`'s `FakeState`, the same rules the HTTP fake
answers by, list quirks included) is called in memory and time is virtual, so 1,000
runs of up to 10 minutes take seconds, and every count is exact and repeatable. The
requests are counted where the client would send them.

Run it: ``python -m bench.tracking`` (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import math
import random
import statistics
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import attrs

from copyai_poll import (
    NotFoundError,
    PollTimeoutError,
    RunFailedError,
    RunStatus,
    RunTracker,
    StatusChange,
    WorkflowRun,
)
from copyai_poll._http import parse_page
from copyai_poll.testing import Quirks, Script
from copyai_poll.testing._state import FakeState
from copyai_poll.testing._wire import ApiFailure

T = TypeVar("T")
WF = "WCFG-fleet"
_RANK = {"NEW": 0, "WAITING": 1, "PROCESSING": 2, "RETRYING": 2, "COMPLETE": 3, "FAILED": 3}


class VirtualTime:
    """A clock and a sleep on which time moves only when every task is waiting.

    `run` drives a coroutine: it lets every ready task run, then jumps the clock to the
    earliest sleep that is due. Nothing here may wait on real I/O.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(0.0, seconds), next(self._order), future))
        await future

    def run(self, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return asyncio.run(self._drive(main))

    async def _drive(self, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
        task = asyncio.create_task(main())
        while True:
            await _settle()
            if task.done():
                return task.result()
            while self._timers and self._timers[0][2].done():  # cancelled sleeps
                heapq.heappop(self._timers)
            if not self._timers:
                raise RuntimeError("every task waits, and no sleep is due: a deadlock")
            when = self._timers[0][0]
            self.now = max(self.now, when)
            while self._timers and self._timers[0][0] <= when:
                future = heapq.heappop(self._timers)[2]
                if not future.done():
                    future.set_result(None)


async def _settle() -> None:
    """Let every task that can run, run (until the loop has nothing ready)."""
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)  # CPython's queue of ready callbacks
    for _ in range(3):
        await asyncio.sleep(0)
    while ready:  # noqa: ASYNC110 (no event to wait for: the loop's queue is the signal)
        await asyncio.sleep(0)


@attrs.define
class InMemoryClient:
    """A fetcher over a `FakeState`, counting requests: what a client would send."""

    state: FakeState
    gets: int = 0
    pages: int = 0

    async def get_run(self, workflow_id: str, run_id: str) -> WorkflowRun:
        self.gets += 1
        try:
            data = self.state.get_run(workflow_id, run_id)
        except ApiFailure as failure:
            raise NotFoundError("no such run", status=failure.status) from None
        return WorkflowRun.from_api(data, workflow_id=workflow_id)

    async def list_page(
        self, workflow_id: str, page: int, *, page_size: int = 100
    ) -> tuple[int | None, list[Any]]:
        self.pages += 1
        return parse_page(self.state.list_runs(workflow_id, page_size, page))

    @property
    def requests(self) -> int:
        return self.gets + self.pages


@attrs.frozen
class Fleet:
    """How a fleet of runs went: cost, lag, and whether every run was reported right."""

    mode: str
    runs: int
    gets: int
    pages: int
    lags: tuple[float, ...]
    wrong: tuple[str, ...]  # what was misreported, if anything

    @property
    def requests_per_run(self) -> float:
        return (self.gets + self.pages) / self.runs

    @property
    def p95_lag(self) -> float:
        return _percentile(self.lags, 0.95)

    @property
    def median_lag(self) -> float:
        return statistics.median(self.lags)


def fleets(seeds: range, **options: Any) -> Fleet:
    """`fleet` once per seed, summed: the lags pooled, the requests added up.

    One seed's p95 lag moves by about 0.1 s from seed to seed (which runs end just
    after a poll is chance); pooling a few keeps comparisons about the modes.
    """
    runs = [fleet(seed=seed, **options) for seed in seeds]
    return Fleet(
        runs[0].mode,
        sum(r.runs for r in runs),
        sum(r.gets for r in runs),
        sum(r.pages for r in runs),
        tuple(lag for r in runs for lag in r.lags),
        tuple(wrong for r in runs for wrong in r.wrong),
    )


def durations(count: int, seed: int) -> list[float]:
    """Run lengths from 5 s to 10 min, median 30 s (log-normal, clipped)."""
    rand = random.Random(seed)
    return [min(600.0, max(5.0, rand.lognormvariate(math.log(30.0), 0.9))) for _ in range(count)]


def fleet(
    *,
    runs: int = 1000,
    sweep: bool = False,
    learn: bool = False,
    quirks: Quirks | None = None,
    start_within: float = 60.0,
    seed: int = 0,
    mode: str = "",
) -> Fleet:
    """Start ``runs`` runs within ``start_within`` seconds, track them all, and report."""
    random.seed(seed)  # the policies' jitter: the same numbers on every run
    time = VirtualTime()
    lengths = durations(runs, seed)
    rand = random.Random(seed + 1)
    failing = {i for i in range(runs) if rand.random() < 0.05}

    async def main() -> Fleet:
        state = FakeState(clock=time, seed=seed)
        if quirks is not None:
            state.set_quirks(quirks, workflow_id=WF)
        client = InMemoryClient(state)
        ends: dict[str, float] = {}
        finished: dict[str, float] = {}
        seen: dict[str, list[tuple[RunStatus | None, RunStatus]]] = {}
        async with RunTracker(
            client, sweep=sweep, learn=learn, sleep=time.sleep, clock=time
        ) as tracker:
            handles = []
            gap = start_within / runs
            for i, length in enumerate(lengths):
                state.queue_scripts([_script(length, failed=i in failing)])
                run_id = state.start_run(WF, {"startVariables": {"n": i}})
                ends[run_id] = time() + length
                log = seen.setdefault(run_id, [])

                def changed(
                    change: StatusChange, log: list[Any] = log, run_id: str = run_id
                ) -> None:
                    log.append((change.previous, change.current))
                    if change.current.is_terminal:
                        finished[run_id] = time()

                handles.append(tracker.track(WF, run_id, on_status_change=changed))
                await time.sleep(gap)
            async for _ in tracker.as_completed():
                pass
        lags, wrong = [], []
        for handle in handles:
            if handle.run_id in finished:
                lags.append(finished[handle.run_id] - ends[handle.run_id])
            wrong.extend(_check(handle, state, seen[handle.run_id]))
        return Fleet(mode, runs, client.gets, client.pages, tuple(lags), tuple(wrong))

    return time.run(main)


def _script(length: float, *, failed: bool) -> Script:
    steps = (("NEW", 0.5), ("WAITING", 1.5), ("PROCESSING", length - 2.0))
    return Script(steps=steps, final="FAILED" if failed else "COMPLETE")


def _check(handle: Any, state: FakeState, log: list[tuple[Any, Any]]) -> list[str]:
    """What is wrong about one handle: its end, its changes, its callbacks."""
    problems = []
    truth = state.view(handle.run_id)["status"]
    try:
        final = handle._future.result()
    except RunFailedError as exc:
        final = exc.run
    except (PollTimeoutError, Exception) as exc:
        return [f"{handle.run_id}: {exc!r}"]
    if final.status != truth:
        problems.append(f"{handle.run_id}: reported {final.status}, is {truth}")
    changes = [(c.previous, c.current) for c in handle.history]
    if changes != log:
        problems.append(f"{handle.run_id}: callbacks {log} but history {changes}")
    statuses = [current for _, current in changes]
    if any(a == b for a, b in itertools.pairwise(statuses)):
        problems.append(f"{handle.run_id}: a change repeated: {statuses}")
    if any(_RANK[a] > _RANK[b] for a, b in itertools.pairwise(statuses)):
        problems.append(f"{handle.run_id}: changes out of order: {statuses}")
    if not statuses or statuses[-1] != truth:
        problems.append(f"{handle.run_id}: last change {statuses[-1:]} is not {truth}")
    return problems


def _percentile(values: tuple[float, ...], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


#: Other clients' runs, started at this rate in every quirk scenario: they fill the pages.
STRANGERS = 10.0

#: The list quirks of the acceptance, alone and together, each while other clients
#: start `STRANGERS` runs a second of the same workflow.
QUIRKS: dict[str, Quirks] = {
    name: attrs.evolve(quirks, foreign_runs_per_second=STRANGERS)
    for name, quirks in {
        "none (oldest first)": Quirks(),
        "newest first": Quirks(list_order="newest_first"),
        "shuffled": Quirks(list_order="shuffled"),
        "no status on half": Quirks(list_missing_status=0.5),
        "stale by 5 s": Quirks(list_lag=5.0),
        "20% dropped": Quirks(list_drop=0.2),
        "all together": Quirks(
            list_order="newest_first", list_missing_status=0.3, list_lag=5.0, list_drop=0.2
        ),
    }.items()
}


def report(runs: int, seeds: range) -> list[str]:
    """The lines of docs/performance.md's tracking section: a title, two Markdown tables."""
    lines: list[str] = []
    echo = lines.append
    rows = [
        fleets(seeds, runs=runs, mode="per-run polling"),
        fleets(seeds, runs=runs, learn=True, mode="per-run, learn=True"),
        fleets(seeds, runs=runs, sweep=True, mode="sweep=True"),
        fleets(seeds, runs=runs, sweep=True, learn=True, mode="sweep=True, learn=True"),
    ]
    echo(
        f"{runs} runs started within a minute, 5 s to 10 min (median 30 s), "
        f"{len(seeds)} times (seeds {seeds.start} to {seeds.stop - 1}), lags pooled"
    )
    echo("")
    echo("| mode | requests/run | GETs/run | pages/run | p95 lag (s) | median lag (s) | wrong |")
    echo("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        echo(_row(row.mode, row))
    echo("")
    echo(
        "| list quirk, 10 runs/s of other clients | sweeps: requests/run | per-run polling "
        "| ratio "
        "| sweeps: p95 lag (s) | per-run: p95 lag (s) | wrong |"
    )
    echo("|---|---:|---:|---:|---:|---:|---:|")
    for name, quirks in QUIRKS.items():
        swept = fleets(seeds, runs=runs, sweep=True, quirks=quirks)
        alone = fleets(seeds, runs=runs, quirks=quirks)
        ratio = swept.requests_per_run / alone.requests_per_run
        echo(
            f"| {name} | {swept.requests_per_run:.2f} | {alone.requests_per_run:.2f} | "
            f"{ratio:.2f} | {swept.p95_lag:.2f} | {alone.p95_lag:.2f} | {len(swept.wrong)} |"
        )
    return lines


def _row(mode: str, row: Fleet) -> str:
    return (
        f"| {mode} | {row.requests_per_run:.2f} | {row.gets / row.runs:.2f} | "
        f"{row.pages / row.runs:.2f} | {row.p95_lag:.2f} | {row.median_lag:.2f} | "
        f"{len(row.wrong)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=8, help="repeats, pooled (default 8)")
    args = parser.parse_args()
    print(*report(args.runs, range(args.seeds)), sep="\n")


if __name__ == "__main__":
    main()
