"""Acceptance checks of the webhooks issue, over real sockets.

Usage::

    python bench/acceptance/webhooks.py [scenario ...] [--runs 200] [--scale 10]

Scenarios (all when none is named):

``clean``
    ``--runs`` runs of 25 to 35 s (every tenth one FAILED) on a `FakeCopyAI` whose clock
    runs ``--scale`` times faster than the wall (so 30 s take 3 s); the waits sleep on
    the same fast clock. One `CopyAIClient`, one `WebhookReceiver` served on 127.0.0.1,
    ``client.subscribe(url)``, ``poll_many(..., webhooks=receiver)`` with the default
    safety net. Expected: a median of at most 2 GETs per run, at most 3 for every run,
    p95 lag from the delivery reaching the receiver to the caller knowing (the terminal
    ``on_status_change``) under 100 ms (wall time), every run in its true terminal state.

``faults``
    The same with 10% of deliveries dropped and 10% sent twice (`DeliveryPlan`, seeded).
    Expected: every run in its true terminal state with exactly-once changes
    (``[(None, PROCESSING), (PROCESSING, final)]``); runs that met no fault cost at most 3.

``dropped``
    Every delivery dropped. Expected: every run resolves through the safety net.

``forged``
    On the wall clock: 20 watched runs that do not finish and 10 unwatched ones; 1,000
    forged deliveries with the right token (claiming COMPLETE for watched runs, FAILED for
    unwatched and unknown ones) and 1,000 with a wrong token. Expected: no wait resolves;
    the watched runs pay at most one extra GET per run per second of the flood (plus the
    one at its start); unwatched runs and the wrong-token flood cost no GET at all.

``bad-bodies``
    Not JSON, an array, 10 MB, deeply nested, missing ids, wrong types, ... Expected: each
    its 4xx, and no exception (nor ERROR) in any log.

``cancel``
    50 waits with the receiver attached, cancelled mid-pause, and a ``subscribe`` block
    cancelled. Expected: no registration with the receiver, no task of theirs, no
    connection in use, and no webhook left registered on the fake.

The lag stamps come from a waiter attached beside each wait (``receiver._attach``); all
else is the public API. The exit status is 0 when every acceptance point holds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from outages import Result, report  # this folder's scripts run from it: a sibling

from copyai_poll import CopyAIClient, RunStatus, StatusChange, WebhookReceiver, poll_many
from copyai_poll.testing import DeliveryPlan, FakeCopyAI, Script

WF = "WCFG-acceptance-webhooks"


class ErrorLog(logging.Handler):
    """Every record at ERROR or with an exception, from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.bad.append(f"{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def watching_logs() -> Any:
    handler = ErrorLog()
    root = logging.getLogger()
    root.addHandler(handler)
    level, root.level = root.level, logging.DEBUG
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.level = level


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait until ``condition`` holds, looking every 5 ms; TimeoutError after ``seconds``."""
    for _ in range(int(seconds / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise TimeoutError("the condition did not come true")


def fast(scale: float) -> tuple[Callable[[], float], Callable[[float], Any]]:
    """A clock ``scale`` times faster than the wall, and a sleep on it."""
    origin = time.monotonic()

    def clock() -> float:
        return (time.monotonic() - origin) * scale

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds / scale)

    return clock, sleep


class Stamp:
    """Beside a wait: when the first delivery for its run reached the receiver (wall)."""

    def __init__(self) -> None:
        self.at: float | None = None

    def wake(self) -> None:
        if self.at is None:
            self.at = time.monotonic()


@contextlib.asynccontextmanager
async def rig(
    clock: Callable[[], float], plan: DeliveryPlan
) -> AsyncIterator[tuple[FakeCopyAI, CopyAIClient, WebhookReceiver, str]]:
    receiver = WebhookReceiver()
    async with (
        FakeCopyAI(clock=clock, tick=0.002) as fake,
        CopyAIClient(api_key=fake.api_key, base_url=fake.base_url) as client,
        receiver.serve() as url,
        client.subscribe(url, workflow_id=WF),
    ):
        fake.set_delivery_plan(plan)
        yield fake, client, receiver, url


def truth(i: int) -> RunStatus:
    return RunStatus.FAILED if i % 10 == 9 else RunStatus.COMPLETE


async def many_runs(name: str, runs: int, scale: float, plan: DeliveryPlan) -> Result:
    clock, sleep = fast(scale)
    async with rig(clock, plan) as (fake, client, receiver, _):
        fake.queue_scripts(
            *(
                (Script.fails if truth(i) is RunStatus.FAILED else Script.completes)(
                    ("PROCESSING", 25 + 10 * (i * 7919 % runs) / runs)
                )
                for i in range(runs)
            )
        )
        ids = [(await client.start_run(WF, {"i": i})).id for i in range(runs)]
        stamps = {run_id: Stamp() for run_id in ids}
        for run_id, stamp in stamps.items():
            receiver._attach(run_id, stamp)
        changes: dict[str, list[tuple[Any, Any]]] = {run_id: [] for run_id in ids}
        known: dict[str, float] = {}

        def record(change: StatusChange) -> None:
            changes[change.run.id].append((change.previous, change.current))
            if change.current.is_terminal:
                known[change.run.id] = time.monotonic()

        finals: dict[str, Any] = {}
        began = time.monotonic()
        async for outcome in poll_many(
            client,
            [(WF, r) for r in ids],
            webhooks=receiver,
            on_status_change=record,
            sleep=sleep,
            clock=clock,
        ):
            finals[outcome.run_id] = outcome.run.status if outcome.run else outcome.error
        wall = time.monotonic() - began
        await fake.flush_webhooks()
        deliveries = fake.deliveries

    gets = [fake.get_count(r) for r in ids]
    faulted = {d.run_id for d in deliveries if d.dropped}
    counts: dict[str, int] = {}
    for d in deliveries:
        if not d.dropped:
            counts[d.run_id] = counts.get(d.run_id, 0) + 1
    duplicated = {r for r, n in counts.items() if n > 1}
    lags = sorted(
        (known[r] - stamps[r].at) * 1000
        for r in ids
        if stamps[r].at is not None and r in known and r not in faulted
    )
    true_states = sum(finals[r] is truth(i) for i, r in enumerate(ids))
    right = true_states == runs
    once = all(
        changes[r] == [(None, RunStatus.PROCESSING), (RunStatus.PROCESSING, truth(i))]
        for i, r in enumerate(ids)
    )
    clean_gets = [g for r, g in zip(ids, gets, strict=True) if r not in faulted]
    median = statistics.median(gets)
    p95 = lags[max(0, math.ceil(0.95 * len(lags)) - 1)] if lags else math.nan
    ok = right and once and max(clean_gets, default=0) <= 3
    if name == "clean":
        ok = ok and median <= 2 and p95 < 100
    if name == "dropped":
        ok = ok and len(faulted) == runs
    summary = (
        f"{runs} runs in {wall:.1f}s wall ({scale:g}x clock): {true_states}/{runs} "
        f"true terminal state, exactly-once changes: {once}; GETs/run median {median:g}, "
        f"max {max(gets)} (max {max(clean_gets, default=0)} without a fault)"
    )
    details = [
        f"deliveries: {len(deliveries)} ({len(faulted)} dropped, {len(duplicated)} runs "
        f"delivered twice)",
    ]
    if lags:
        details.append(
            f"lag delivery -> caller knows, over {len(lags)} runs: p50 "
            f"{statistics.median(lags):.1f} ms, p95 {p95:.1f} ms, max {lags[-1]:.1f} ms"
        )
    return Result(name, ok, summary, details)


async def forged() -> Result:
    receiver = WebhookReceiver()
    async with (
        FakeCopyAI(script=Script.completes(("PROCESSING", 10_000))) as fake,
        CopyAIClient(api_key=fake.api_key, base_url=fake.base_url) as client,
        receiver.serve() as url,
    ):
        watched = [(await client.start_run(WF, {})).id for _ in range(20)]
        unwatched = [(await client.start_run(WF, {})).id for _ in range(10)]
        waits = [
            asyncio.create_task(client.poll_until_done(WF, r, webhooks=receiver)) for r in watched
        ]
        await until(lambda: all(fake.get_count(r) >= 1 for r in watched))
        await asyncio.sleep(0.1)
        wrong = url.rsplit("/", 1)[0] + "/" + "A" * len(receiver.token)
        bodies = [
            {"id": r, "status": "COMPLETE", "type": "workflowRun.completed"} for r in watched
        ]
        bodies += [{"workflowRunId": r, "type": "workflowRun.failed"} for r in unwatched]
        bodies += [{"workflowRunId": f"WRUN-nobody-{i}"} for i in range(10)]

        async with aiohttp.ClientSession() as session:

            async def flood(target: str, count: int) -> list[int]:
                statuses: list[int] = []

                async def one(i: int) -> None:
                    async with session.post(target, json=bodies[i % len(bodies)]) as response:
                        statuses.append(response.status)

                for start in range(0, count, 50):
                    await asyncio.gather(*(one(i) for i in range(start, min(count, start + 50))))
                return statuses

            total = lambda ids: sum(fake.get_count(r) for r in ids)  # noqa: E731
            before_wrong = total(watched)
            wrong_statuses = await flood(wrong, 1000)
            await asyncio.sleep(1.5)  # anything deferred would have happened by now
            wrong_cost = total(watched) - before_wrong
            before = [fake.get_count(r) for r in watched]
            began = time.monotonic()
            right_statuses = await flood(url, 1000)
            window = time.monotonic() - began
            await asyncio.sleep(1.2)  # the deferred wakes of the last second
            after = [fake.get_count(r) for r in watched]
        resolved = sum(w.done() for w in waits)
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)

    extra = [a - b for a, b in zip(after, before, strict=True)]
    allowed = math.ceil(window + 1.2) + 1
    unwatched_gets = sum(fake.get_count(r) for r in unwatched)
    ok = (
        resolved == 0
        and max(extra) <= allowed
        and unwatched_gets == 0
        and wrong_cost == 0
        and set(wrong_statuses) == {404}
        and set(right_statuses) == {204}
    )
    summary = (
        f"2,000 forged deliveries: {resolved} waits resolved; right token: {max(extra)} extra "
        f"GETs at most per watched run over {window + 1.2:.1f}s (allowed {allowed}), "
        f"{unwatched_gets} GETs for unwatched runs; wrong token: {wrong_cost} GETs"
    )
    details = [
        f"answers: right token {sorted(set(right_statuses))}, wrong {sorted(set(wrong_statuses))}",
        f"extra GETs per watched run: {sorted(extra)}",
    ]
    return Result("forged", ok, summary, details)


BAD = {
    "not JSON": (b"{nope", 400),
    "an array": (b'[{"id": "WRUN-1"}]', 400),
    "10 MB": (b'{"id": "WRUN-1", "x": "' + b"a" * 10_000_000 + b'"}', 413),
    "deeply nested": (b'{"x": ' + b"[" * 400_000 + b"]" * 400_000 + b"}", 400),
    "missing ids": (b'{"type": "workflowRun.completed"}', 400),
    "id a number": (b'{"id": 42}', 400),
    "id a list": (b'{"workflowRunId": ["WRUN-1"]}', 400),
    "type an object": (b'{"id": "WRUN-1", "type": {}}', 400),
    "not UTF-8": (b'{"id": "\xfe"}', 400),
    "NaN": (b'{"id": "WRUN-1", "n": NaN}', 400),
}


async def bad_bodies() -> Result:
    import io

    receiver = WebhookReceiver()
    got: dict[str, int] = {}
    with watching_logs() as log:
        async with receiver.serve() as url, aiohttp.ClientSession() as session:
            for name, (raw, _) in BAD.items():
                async with session.post(url, data=io.BytesIO(raw)) as response:
                    got[name] = response.status
            async with session.get(url) as response:
                got["GET"] = response.status
    expected = {name: status for name, (_, status) in BAD.items()} | {"GET": 405}
    ok = got == expected and not log.bad
    summary = ", ".join(f"{name} {status}" for name, status in got.items())
    return Result("bad-bodies", ok, summary, [f"errors logged: {log.bad or 'none'}"])


async def cancel(scale: float) -> Result:
    clock, sleep = fast(scale)
    async with rig(clock, DeliveryPlan()) as (fake, client, receiver, url):
        fake.set_script(Script.completes(("PROCESSING", 10_000)))
        ids = [(await client.start_run(WF, {})).id for _ in range(50)]
        before = asyncio.all_tasks()
        waits = [
            asyncio.create_task(
                client.poll_until_done(WF, r, webhooks=receiver, sleep=sleep, clock=clock)
            )
            for r in ids
        ]
        await until(lambda: all(fake.get_count(r) >= 1 for r in ids))
        await asyncio.sleep(0.05)
        attached = len(receiver._waiters)
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        await asyncio.sleep(0)
        left = [
            t
            for t in asyncio.all_tasks() - before
            if "RequestHandler" not in getattr(t.get_coro(), "__qualname__", "")
        ]
        in_use = len(client._session.connector._acquired)  # type: ignore[union-attr]

        entered = asyncio.Event()

        async def hold() -> None:
            async with client.subscribe(url + "-extra"):
                entered.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(hold())
        await entered.wait()
        registered = len([h async for h in client.list_webhooks()])
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        remaining = len([h async for h in client.list_webhooks()])
    ok = attached == 50 and not receiver._waiters and not left and in_use == 0
    ok = ok and registered == 4 and remaining == 2  # the rig's own two remain until its exit
    summary = (
        f"50 waits cancelled: {len(receiver._waiters)} registrations, {len(left)} tasks, "
        f"{in_use} connections left; cancelled subscribe: {registered - remaining} of 2 "
        f"webhooks deleted"
    )
    return Result("cancel", ok, summary)


async def main(names: list[str], runs: int, scale: float) -> int:
    scenarios = {
        "clean": lambda: many_runs("clean", runs, scale, DeliveryPlan()),
        "faults": lambda: many_runs(
            "faults", runs, scale, DeliveryPlan(drop=0.1, duplicate=0.1, seed=11)
        ),
        "dropped": lambda: many_runs("dropped", runs, scale, DeliveryPlan(drop=1.0)),
        "forged": forged,
        "bad-bodies": bad_bodies,
        "cancel": lambda: cancel(scale),
    }
    results = []
    for name in names or list(scenarios):
        result = await scenarios[name]()
        report(result)
        results.append(result)
    failed = [r.name for r in results if not r.ok]
    print("\n" + ("all acceptance points hold" if not failed else "FAILED: " + ", ".join(failed)))
    return 1 if failed else 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--scale", type=float, default=10.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse(sys.argv[1:])
    sys.exit(asyncio.run(main(args.scenarios, args.runs, args.scale)))
