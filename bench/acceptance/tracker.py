"""Acceptance checks of the tracker issue over real sockets: one client, the HTTP fake.

Usage::

    python bench/acceptance/tracker.py [fleet] [handles]

``fleet``
    1,000 runs started within a (fake) minute, 5 s to 10 min with a median of 30 s, 5%
    failing, tracked per run, with ``learn=True`` and with ``sweep=True``. The fake and the
    tracker share a fast clock (``--speed`` fake seconds per real second, 5 by default),
    so the fleet takes about two minutes of real time per mode; a faster clock also
    multiplies every real delay (a page read, a busy CPU) into fake lag. Requests are
    counted by the fake server; lag is in fake seconds. ``--seeds N`` runs N fleets per
    mode and pools their lags: one fleet's p95 moves by a few tenths of a second from seed
    to seed. Expected: sweeps at most 2.0 requests a run at a p95 lag no worse than
    per-run polling's; learning at least 20% fewer requests at a p95 lag no worse; every
    run in its true end state with its changes exactly once, in order.

``handles``
    10,000 runs tracked at once through one ``CopyAIClient`` on the wall clock (runs of
    5 to 15 s). Expected: all resolve; reading every handle's ``status`` and ``last_run``
    sends no request; after the block, no task is left and no connection is in use.

The exit status is 0 when every point holds, else 1.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from copyai_poll import CopyAIClient, PollPolicy, RunFailedError, RunTracker, StatusChange
from copyai_poll.testing import FakeCopyAI, Script

WF = "WCFG-acceptance"
_RANK = {"NEW": 0, "WAITING": 1, "PROCESSING": 2, "RETRYING": 2, "COMPLETE": 3, "FAILED": 3}


def _fast_clock(speed: float) -> tuple[Callable[[], float], Callable[[float], Any]]:
    origin = time.monotonic()

    def clock() -> float:
        return (time.monotonic() - origin) * speed

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds / speed)

    return clock, sleep


def _durations(count: int, seed: int) -> list[float]:
    rand = random.Random(seed)
    return [min(600.0, max(5.0, rand.lognormvariate(math.log(30.0), 0.9))) for _ in range(count)]


async def fleet(mode: str, runs: int, speed: float, seed: int) -> dict[str, Any]:
    """Start and track one fleet; return its cost, lag and what went wrong."""
    clock, sleep = _fast_clock(speed)
    lengths = _durations(runs, seed)
    rand = random.Random(seed + 1)
    options = {"per-run": {}, "learn": {"learn": True}, "sweep": {"sweep": True}}[mode]
    ends: dict[str, float] = {}
    finished: dict[str, float] = {}
    logs: dict[str, list[str]] = {}
    wrong: list[str] = []
    async with FakeCopyAI(clock=clock, api_key="acceptance") as fake:
        async with CopyAIClient(api_key="acceptance", base_url=fake.base_url) as client:
            async with RunTracker(client, sleep=sleep, clock=clock, **options) as tracker:  # type: ignore[arg-type]
                handles = []
                for n, length in enumerate(lengths):
                    final = "FAILED" if rand.random() < 0.05 else "COMPLETE"
                    steps = (("NEW", 0.5), ("WAITING", 1.5), ("PROCESSING", length - 2.0))
                    fake.queue_scripts(Script(steps=steps, final=final))
                    run = await client.start_run(WF, {"n": str(n)})
                    ends[run.id] = clock() + length
                    log = logs.setdefault(run.id, [])

                    def changed(c: StatusChange, log: list[str] = log, rid: str = run.id) -> None:
                        log.append(c.current)
                        if c.current.is_terminal:
                            finished[rid] = clock()

                    handles.append(tracker.track(WF, run.id, on_status_change=changed))
                    target = (n + 1) * 60.0 / runs
                    if clock() < target:
                        await sleep(target - clock())
                async for _ in tracker.as_completed():
                    pass
            for handle in handles:
                truth = fake.run(handle.run_id)["status"]
                try:
                    status = (await handle).status
                except RunFailedError as exc:
                    status = exc.run.status
                except Exception as exc:
                    wrong.append(f"{handle.run_id}: {exc!r}")
                    continue
                statuses = logs[handle.run_id]
                if status != truth or not statuses or statuses[-1] != truth:
                    wrong.append(f"{handle.run_id}: reported {status}, is {truth}")
                if any(a == b or _RANK[a] > _RANK[b] for a, b in itertools.pairwise(statuses)):
                    wrong.append(f"{handle.run_id}: changes {statuses}")
        records = [r for r in fake.requests if r.method == "GET"]
    lags = sorted(finished[i] - ends[i] for i in finished)
    return {
        "mode": mode,
        "requests/run": len(records) / runs,
        "gets": sum(r.route == "get_run" for r in records),
        "pages": sum(r.route == "list_runs" for r in records),
        "lags": lags,
        "wrong": wrong,
    }


async def handles(count: int) -> list[str]:
    """Track ``count`` runs at once through one client; return what went wrong."""
    problems = []
    async with FakeCopyAI(api_key="acceptance") as fake:
        client = CopyAIClient(api_key="acceptance", base_url=fake.base_url)
        async with client:
            rand = random.Random(5)
            ids = []
            for _ in range(count):
                fake.queue_scripts(Script(steps=(("PROCESSING", 5 + 10 * rand.random()),)))
                ids.append((await client.start_run(WF, {"x": "y"})).id)
            before = asyncio.all_tasks()
            policy = PollPolicy(initial=2.0, maximum=5.0)
            async with RunTracker(client, policy=policy) as tracker:
                tracked = [tracker.track(WF, run_id) for run_id in ids]
                await asyncio.sleep(4)
                sent = len(fake.requests)
                seen = {(h.status, h.last_run is not None) for h in tracked}
                if len(fake.requests) != sent:
                    problems.append(f"reading handles sent {len(fake.requests) - sent} requests")
                print(f"  handles read: {seen}, requests meanwhile: {len(fake.requests) - sent}")
                finals = await asyncio.gather(*(_await(h) for h in tracked))
                done = sum(f.status == "COMPLETE" for f in finals)
                print(f"  resolved: {done} of {count}")
                if done != count:
                    problems.append(f"only {done} of {count} resolved")
            # The fake shares this loop: its tasks serving the pool's open connections
            # are the server's, not the tracker's.
            left = {
                task
                for task in asyncio.all_tasks() - before
                if "RequestHandler.start" not in repr(task.get_coro())
            }
            connector = client._session.connector if client._session else None
            in_use = len(getattr(connector, "_acquired", ()))
            print(f"  after the block: {len(left)} tasks left, {in_use} connections in use")
            if left or in_use:
                problems.append(f"left behind: {len(left)} tasks, {in_use} connections")
    return problems


async def _await(handle: Any) -> Any:
    return await handle


def _pooled(fleets: list[Any]) -> dict[str, Any]:
    """Run each fleet (one after the other); add up their requests, pool their lags."""
    done = [asyncio.run(one) for one in fleets]
    lags = sorted(lag for row in done for lag in row["lags"])
    return {
        "requests/run": sum(r["requests/run"] for r in done) / len(done),
        "gets": sum(r["gets"] for r in done),
        "pages": sum(r["pages"] for r in done),
        "p95": lags[min(len(lags) - 1, math.ceil(0.95 * len(lags)) - 1)],
        "wrong": [w for r in done for w in r["wrong"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checks", nargs="*", default=["fleet", "handles"])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--speed", type=float, default=5.0)
    parser.add_argument("--seeds", type=int, default=1, help="fleets per mode, lags pooled")
    parser.add_argument("--handles", type=int, default=10_000)
    args = parser.parse_args()
    failures: list[str] = []
    if "fleet" in args.checks:
        rows = {}
        for mode in ("per-run", "learn", "sweep"):
            started = time.monotonic()
            row = _pooled([fleet(mode, args.runs, args.speed, s) for s in range(args.seeds)])
            rows[mode] = row
            print(
                f"{mode:8} {row['requests/run']:.2f} requests/run ({row['gets']} GETs, "
                f"{row['pages']} pages), p95 lag {row['p95']:.2f} s, "
                f"{len(row['wrong'])} wrong, {time.monotonic() - started:.0f} s real"
            )
            failures.extend(row["wrong"][:5])
        if rows["sweep"]["requests/run"] > 2.0:
            failures.append("sweeps cost more than 2.0 requests a run")
        if rows["sweep"]["p95"] > rows["per-run"]["p95"]:
            failures.append("sweeps' p95 lag is worse than per-run polling's")
        if rows["learn"]["requests/run"] > 0.8 * rows["per-run"]["requests/run"]:
            failures.append("learning saved less than 20%")
        if rows["learn"]["p95"] > rows["per-run"]["p95"]:
            failures.append("learning's p95 lag is worse than per-run polling's")
    if "handles" in args.checks:
        started = time.monotonic()
        print(f"{args.handles} handles through one client:")
        failures.extend(asyncio.run(handles(args.handles)))
        print(f"  {time.monotonic() - started:.0f} s real")
    print("PASS" if not failures else "FAIL:\n  " + "\n  ".join(failures))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
