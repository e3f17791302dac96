"""Acceptance checks of the reliability issue, measured over real sockets in real time.

Usage::

    python bench/acceptance/outages.py [scenario ...]

Scenarios (all of them when none is named; ``outages`` names the first three):

``refused``, ``503``, ``hang``
    "With default policies and ``timeout=60``: a 5-second outage in the middle of 40
    concurrent 20-second runs loses no wait." 40 runs are started on a `FakeCopyAI` on the
    wall clock (NEW 1 s, PROCESSING 19 s, COMPLETE) and polled concurrently through ONE
    ``CopyAIClient`` with ``poll_until_done(..., timeout=60)``. About 8 s in, a 5 s outage:
    ``refused`` closes the server (listening socket and every connection) and restarts it
    on the same port; ``503`` answers every GET with a 503; ``hang`` accepts every GET and
    never answers it (the default ``request_timeout`` of 30 s ends those tries).
    Expected: 40/40 waits end COMPLETE.

``chaos``
    "1,000 runs with 20% of GETs failing (every fault kind but hang) all end in their true
    terminal state with exactly-once callbacks." Short random scripts of one-second steps,
    as in ``tests/integration/test_chaos.py``; the fake's clock is a `ManualClock` moved
    one tick at a time, in real time, once the fake has cleanly answered a GET of every
    unfinished run at the current tick, so that every step of every script is seen and
    each run's status changes are known exactly, whatever the (default) poll backoff.
    Expected: every run's outcome and list of status changes equal its script's.

``pool``
    "250 concurrent ``start_run`` through one client against a server that answers in 1 s,
    with ``request_timeout=2.5``: every call succeeds, and the server sees exactly 250
    POSTs." aiohttp's default pool holds 100 connections, so later calls wait for one.

``limiter``
    "After 1,000 rate-limited requests are cancelled, the next request starts within one
    slot." ``CopyAIClient(max_requests_per_second=20)``: 1,000 queued ``get_run`` calls are
    cancelled, then the delay from calling the next one to its arrival at the server is
    measured (one slot = 0.05 s).

Everything uses the library's defaults (``CopyAIClient()``: ``RetryPolicy()``,
``request_timeout=30``; ``poll_until_done``: ``PollPolicy()``, ``outage_grace=120``) except
where a scenario names a setting. Only the public API of ``copyai_poll`` and
``copyai_poll.testing`` is used; the fake and the client share one event loop in this
process. Per-scenario lines are printed as they finish, then a summary table. The exit
status is 0 when every acceptance point holds, else 1. The whole run takes about 3-4 min.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import re
import sys
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from copyai_poll import (
    CopyAIClient,
    RunFailedError,
    RunStatus,
    StatusChange,
    WorkflowRun,
)
from copyai_poll.testing import FakeCopyAI, Fault, ManualClock, Script

WORKFLOW_ID = "WCFG-acceptance"


# -- results and reporting ----------------------------------------------------------------


@dataclass
class Result:
    """What one scenario measured, and whether its acceptance point holds."""

    name: str
    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)


def report(result: Result) -> None:
    """Print one scenario's verdict, headline numbers and details."""
    verdict = "PASS" if result.ok else "FAIL"
    print(f"[{verdict}] {result.name}: {result.summary}", flush=True)
    for line in result.details:
        print(f"        {line}", flush=True)


def print_summary(results: list[Result]) -> None:
    """Print the table of every scenario run, and the overall verdict."""
    width = max(len("scenario"), *(len(r.name) for r in results))
    print("\nSummary")
    print(f"  {'scenario'.ljust(width)}  result  measured")
    for r in results:
        print(f"  {r.name.ljust(width)}  {'PASS' if r.ok else 'FAIL':6}  {r.summary}")
    failed = [r.name for r in results if not r.ok]
    verdict = "all acceptance points hold" if not failed else "FAILED: " + ", ".join(failed)
    print(f"\n{verdict}", flush=True)


class LogTally(logging.Handler):
    """Counts the library's warnings: retries of one request, and polls that failed."""

    _IDS = re.compile(r"[A-Z]{4}-[0-9a-zA-Z-]+")
    _REASON = re.compile(r"failed \((.*)\)")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.retries = 0
        self.failed_polls = 0
        self.reasons: Counter[str] = Counter()
        self.runs: set[str] = set()  # the runs whose requests or polls failed

    @property
    def failed_tries(self) -> int:
        """Tries that failed: each is logged once, as a retry or as a failed poll."""
        return self.retries + self.failed_polls

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "; retry " in message:
            self.retries += 1
        elif "polling again" in message:
            self.failed_polls += 1
        found = self._REASON.search(message)
        reason = found.group(1) if found else message
        self.reasons[self._IDS.sub("<id>", reason)] += 1
        run_id = getattr(record, "run_id", None)
        if run_id is not None:
            self.runs.add(run_id)

    def top(self, n: int = 4) -> list[str]:
        return [f"{count:5d} x {reason}" for reason, count in self.reasons.most_common(n)]


@contextlib.contextmanager
def tallied_logs() -> Iterator[LogTally]:
    """``with tallied_logs() as tally:`` counts the library's warnings inside the block."""
    tally = LogTally()
    logging.getLogger("copyai_poll").addHandler(tally)
    try:
        yield tally
    finally:
        logging.getLogger("copyai_poll").removeHandler(tally)


def describe_error(exc: BaseException) -> str:
    """An exception with its chain of causes, on one line."""
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(parts) < 4:
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)


def error_details(errors: list[BaseException], limit: int = 3) -> list[str]:
    """Lines naming the distinct errors, and the traceback of the first one."""
    if not errors:
        return []
    kinds = Counter(describe_error(e) for e in errors)
    lines = [f"{n} x {text}" for text, n in kinds.most_common(limit)]
    first = "".join(traceback.format_exception(errors[0])).rstrip().splitlines()
    return [*lines, "traceback of the first:", *("  " + line for line in first[-25:])]


@dataclass
class GetCounts:
    """The GETs of runs the server saw: answered cleanly, faulted, left unanswered."""

    seen: int
    clean: int
    faulted: int
    unanswered: int

    @classmethod
    def of(cls, server: FakeCopyAI) -> GetCounts:
        gets = [r for r in server.requests if r.route == "get_run"]
        return cls(
            seen=len(gets),
            clean=sum(r.fault is None and r.status == 200 for r in gets),
            faulted=sum(r.fault is not None for r in gets),
            unanswered=sum(r.status is None for r in gets),
        )

    def __str__(self) -> str:
        return (
            f"server saw {self.seen} GETs ({self.clean} clean 200, {self.faulted} faulted, "
            f"{self.unanswered} unanswered)"
        )


# -- 1. outages in the middle of 40 concurrent 20-second runs -------------------------------

OUTAGE_RUNS = 40
OUTAGE_SCRIPT = Script.completes(("NEW", 1.0), ("PROCESSING", 19.0))
OUTAGE_AT = 8.0
OUTAGE_FOR = 5.0
WAIT_TIMEOUT = 60.0


@dataclass
class Wait:
    """How one wait ended: the run, or the exception; and after how long."""

    outcome: WorkflowRun | BaseException
    elapsed: float


async def timed_wait(client: CopyAIClient, run_id: str, began: float) -> Wait:
    """Wait for one run with the default poll policy and a 60 s timeout."""
    try:
        outcome: Any = await client.poll_until_done(WORKFLOW_ID, run_id, timeout=WAIT_TIMEOUT)
    except Exception as exc:  # a lost wait: recorded, reported
        outcome = exc
    return Wait(outcome, time.monotonic() - began)


async def refuse_connections(server: FakeCopyAI) -> None:
    """Close the server (listening socket and connections); restart it on the same port."""
    await server.close()
    await asyncio.sleep(OUTAGE_FOR)
    await server.start()  # binds server.port, which the caller pinned to the old port


async def answer_503(server: FakeCopyAI) -> None:
    """Answer every GET of a run with a 503 for the outage."""
    server.fault_rate("get_run", Fault.server_error(503), 1.0)
    await asyncio.sleep(OUTAGE_FOR)
    server.clear_faults()


async def hang(server: FakeCopyAI) -> None:
    """Accept every GET of a run and never answer it, for the outage."""
    server.fault_rate("get_run", Fault.hang(), 1.0)
    await asyncio.sleep(OUTAGE_FOR)
    server.clear_faults()


OUTAGES: dict[str, Callable[[FakeCopyAI], Awaitable[None]]] = {
    "refused": refuse_connections,
    "503": answer_503,
    "hang": hang,
}


async def outage_at(kind: str, server: FakeCopyAI, began: float) -> tuple[float, float]:
    """Cause the outage OUTAGE_AT seconds after ``began``; return when it began and ended."""
    await asyncio.sleep(max(0.0, began + OUTAGE_AT - time.monotonic()))
    start = time.monotonic() - began
    await OUTAGES[kind](server)
    return start, time.monotonic() - began


async def outage_scenario(kind: str) -> Result:
    """40 concurrent waits through one client, with a 5 s outage of ``kind`` at t=8 s."""
    name = f"outage-{kind}"
    with tallied_logs() as logs:
        async with FakeCopyAI(script=OUTAGE_SCRIPT, seed=1) as server:
            server.port = urlsplit(server.base_url).port or 0  # a restart binds this port
            async with CopyAIClient(api_key=server.api_key, base_url=server.base_url) as client:
                runs = await asyncio.gather(
                    *(client.start_run(WORKFLOW_ID, {"n": n}) for n in range(OUTAGE_RUNS))
                )
                began = time.monotonic()
                outage = asyncio.create_task(outage_at(kind, server, began))
                waits = await asyncio.gather(*(timed_wait(client, r.id, began) for r in runs))
                window = await outage
            gets = GetCounts.of(server)
    complete = sum(
        isinstance(w.outcome, WorkflowRun) and w.outcome.status == "COMPLETE" for w in waits
    )
    lost = [w.outcome for w in waits if isinstance(w.outcome, BaseException)]
    other = len(waits) - complete - len(lost)
    slowest = max(w.elapsed for w in waits)
    summary = (
        f"{complete}/{OUTAGE_RUNS} COMPLETE, {len(lost)} lost, {other} other; "
        f"max elapsed {slowest:.1f}s; "
        f"{gets.clean + logs.failed_tries} GETs made ({logs.failed_tries} failed)"
    )
    details = [
        f"outage from t={window[0]:.1f}s to t={window[1]:.1f}s; "
        f"{len(logs.runs)}/{OUTAGE_RUNS} waits met it",
        str(gets),
        f"client: {logs.failed_tries} failed GET tries ({logs.retries} retried at once, "
        f"{logs.failed_polls} ended a poll that was polled again on schedule)",
        *("  " + line for line in logs.top()),
        *error_details(lost),
    ]
    return Result(name, complete == OUTAGE_RUNS, summary, details)


# -- 2. chaos: 1,000 runs, a fifth of GETs failing ------------------------------------------

CHAOS_RUNS = 1000
FAULT_SHARE = 0.2
#: Every fault kind but "hang", in equal shares of FAULT_SHARE (as in the test suite).
CHAOS_FAULTS = (
    Fault.server_error(500),
    Fault.server_error(502),
    Fault.server_error(503),
    Fault.server_error(504),
    Fault.rate_limited(),
    Fault.rate_limited(retry_after=0),
    Fault.rate_limited(retry_after="Wed, 21 Oct 2015 07:28:00 GMT"),  # past: own backoff
    Fault.html(502),
    Fault.truncated(),
    Fault.slow(0.02),
    Fault.drop(),
)
_KNOWN = {s.value for s in RunStatus}


def random_script(rng: random.Random, index: int) -> Script:
    """A short random life of 0-9 one-second steps: some RETRYING, some undocumented."""
    pool = ["WAITING", "PROCESSING", "PROCESSING", "RETRYING", "QUEUED", "NEW"]
    steps: list[tuple[str, float]] = []
    if rng.random() < 0.85:
        steps.append(("NEW", 1))
    for _ in range(rng.randrange(5)):
        status = rng.choice(pool)
        steps.append((status, 1))
        if status == "RETRYING":
            steps.append(("PROCESSING", 1))
    if rng.random() < 0.3:
        return Script.fails(*steps, error={"message": f"run {index} failed", "n": index})
    return Script.completes(*steps, output={"Output 1": f"result {index}", "n": index})


def expected_changes(script: Script) -> list[tuple[RunStatus | None, RunStatus]]:
    """(previous, current) of each change a poll must report: known statuses, deduplicated."""
    seen: list[RunStatus] = []
    for status in [*(s.status for s in script.steps if s.status in _KNOWN), script.final]:
        if not seen or seen[-1] != status:
            seen.append(RunStatus(status))
    return list(zip([None, *seen[:-1]], seen, strict=True))


async def chaos_poll(
    client: CopyAIClient,
    run_id: str,
    changes: list[StatusChange],
    outcomes: dict[str, Any],
) -> None:
    """Poll one run with default policies, recording each change and the outcome."""
    try:
        outcomes[run_id] = await client.poll_until_done(
            WORKFLOW_ID, run_id, on_status_change=changes.append
        )
    except Exception as exc:
        outcomes[run_id] = exc


async def tick_when_seen(
    clock: ManualClock, server: FakeCopyAI, scripts: dict[str, Script], outcomes: dict[str, Any]
) -> int:
    """Advance the fake's clock one second once every unfinished run was cleanly answered
    a GET at the current tick; return the number of ticks."""
    tick, read, last = 0, 0, max(s.duration for s in scripts.values())
    while tick < last:
        live = {r for r, s in scripts.items() if s.duration > tick}
        while live:
            records = server.requests
            for record in records[read:]:
                if record.route == "get_run" and record.fault is None and record.time == tick:
                    live.discard(record.path.rsplit("/", 1)[1])
            read = len(records)
            live -= outcomes.keys()  # a poll that ended early: the checks will show it
            await asyncio.sleep(0.02)
        clock.advance(1)
        tick += 1
    return tick


def shown(outcome: Any) -> str:
    """An outcome for a report: an exception with its causes, anything else as repr."""
    return describe_error(outcome) if isinstance(outcome, BaseException) else repr(outcome)


def chaos_wrong(script: Script, outcome: Any, changes: list[StatusChange]) -> str | None:
    """Why a run's outcome or status changes differ from its script's, or None."""
    got = [(c.previous, c.current) for c in changes]
    if script.final == "COMPLETE":
        if not isinstance(outcome, WorkflowRun) or outcome.status != "COMPLETE":
            return f"expected COMPLETE, got {shown(outcome)}"
        if dict(outcome.output) != dict(script.output):
            return f"wrong output {dict(outcome.output)!r}"
    else:
        if not isinstance(outcome, RunFailedError):
            return f"expected RunFailedError, got {shown(outcome)}"
        if outcome.run.error != script.error:
            return f"wrong error {outcome.run.error!r}"
        if list(outcome.history) != changes:
            return "RunFailedError.history differs from the callbacks"
    if got != expected_changes(script):
        return f"changes {got} != expected {expected_changes(script)}"
    return None


async def chaos_scenario() -> Result:
    """1,000 runs polled at once through one client while a fifth of GETs go wrong."""
    rng = random.Random(20240611)
    plans = [random_script(rng, i) for i in range(CHAOS_RUNS)]
    clock = ManualClock()
    outcomes: dict[str, Any] = {}
    with tallied_logs() as logs:
        async with FakeCopyAI(clock=clock, seed=7) as server:
            server.queue_scripts(*plans)
            async with CopyAIClient(api_key=server.api_key, base_url=server.base_url) as client:
                started = await asyncio.gather(
                    *(client.start_run(WORKFLOW_ID, {"n": i}) for i in range(CHAOS_RUNS))
                )
                # The fake hands queued scripts out in the order it received the starts.
                scripts = dict(zip(server.run_ids(), plans, strict=True))
                for fault in CHAOS_FAULTS:
                    server.fault_rate("get_run", fault, FAULT_SHARE / len(CHAOS_FAULTS))
                changes: dict[str, list[StatusChange]] = {r.id: [] for r in started}
                began = time.monotonic()
                ticker = asyncio.create_task(tick_when_seen(clock, server, scripts, outcomes))
                await asyncio.gather(
                    *(chaos_poll(client, r.id, changes[r.id], outcomes) for r in started)
                )
                ticks = await ticker
                elapsed = time.monotonic() - began
            gets = [r for r in server.requests if r.route == "get_run"]
    wrong: dict[str, str] = {}
    for run_id, script in scripts.items():
        why = chaos_wrong(script, outcomes.get(run_id, "no outcome"), changes[run_id])
        if why is not None:
            wrong[run_id] = why
    callbacks = sum(len(cs) for cs in changes.values())
    expected_callbacks = sum(len(expected_changes(s)) for s in scripts.values())
    faulted = [r.fault for r in gets if r.fault is not None]
    kinds_hit = len(set(faulted))
    share = len(faulted) / len(gets) if gets else 0.0
    finals = Counter(s.final for s in scripts.values())
    right = len(scripts) - len(wrong)
    changes_right = sum(
        [(c.previous, c.current) for c in changes[run_id]] == expected_changes(script)
        for run_id, script in scripts.items()
    )
    chaos_real = kinds_hit == len(CHAOS_FAULTS) and 0.15 < share < 0.25
    summary = (
        f"{right}/{len(scripts)} runs right ({finals['COMPLETE']} COMPLETE, "
        f"{finals['FAILED']} FAILED expected), {len(wrong)} wrong; "
        f"{callbacks}/{expected_callbacks} status callbacks; "
        f"{share:.1%} of {len(gets)} GETs faulted"
    )
    details = [
        f"{ticks} ticks of the fake's clock in {elapsed:.1f}s real time",
        f"fault kinds hit: {kinds_hit}/{len(CHAOS_FAULTS)}; runs whose status changes "
        f"equal their script's, callbacks once each: {changes_right}/{len(scripts)}",
        f"client: {logs.failed_tries} failed GET tries ({logs.retries} retried at once, "
        f"{logs.failed_polls} ended a poll that was polled again on schedule)",
        *("  " + line for line in logs.top()),
        *(f"{run_id}: {why}" for run_id, why in list(wrong.items())[:5]),
    ]
    errors = [
        o
        for o in outcomes.values()
        if isinstance(o, BaseException) and not isinstance(o, RunFailedError)
    ]
    details += error_details(errors)
    return Result("chaos", not wrong and chaos_real and right == CHAOS_RUNS, summary, details)


# -- 3. 250 concurrent starts wait for a pooled connection ---------------------------------

POOL_CALLS = 250
POOL_TIMEOUT = 2.5
SERVER_DELAY = 1.0


async def pool_scenario() -> Result:
    """250 concurrent start_run against a server that answers each in 1 s."""
    async with FakeCopyAI(seed=3) as server:
        server.fault_rate("start_run", Fault.slow(SERVER_DELAY), 1.0)
        async with CopyAIClient(
            api_key=server.api_key, base_url=server.base_url, request_timeout=POOL_TIMEOUT
        ) as client:
            began = time.monotonic()
            results = await asyncio.gather(
                *(client.start_run(WORKFLOW_ID, {"n": n}) for n in range(POOL_CALLS)),
                return_exceptions=True,
            )
            elapsed = time.monotonic() - began
        posts = sum(r.method == "POST" and r.route == "start_run" for r in server.requests)
        runs = len(server.run_ids())
    errors = [r for r in results if isinstance(r, BaseException)]
    ok = len(results) - len(errors)
    summary = (
        f"{ok}/{POOL_CALLS} succeeded, {len(errors)} failed; server saw {posts} POSTs "
        f"({runs} runs started) in {elapsed:.2f}s"
    )
    details = error_details(errors)
    return Result("pool", ok == POOL_CALLS and posts == POOL_CALLS, summary, details)


# -- 4. cancelled waiters give their slots back ----------------------------------------------

LIMIT_RATE = 20.0
QUEUED = 1000


async def limiter_scenario() -> Result:
    """Cancel 1,000 rate-limited get_run calls; time the start of the next request."""
    slot = 1 / LIMIT_RATE
    async with (
        FakeCopyAI(seed=4) as server,
        CopyAIClient(
            api_key=server.api_key, base_url=server.base_url, max_requests_per_second=LIMIT_RATE
        ) as client,
    ):
        run_id = (await client.start_run(WORKFLOW_ID, {"n": 0})).id  # takes a slot
        queued = [asyncio.create_task(client.get_run(WORKFLOW_ID, run_id)) for _ in range(QUEUED)]
        await asyncio.sleep(0)  # every task reaches the limiter's queue
        await asyncio.sleep(0)
        for task in queued:
            task.cancel()
        settled = await asyncio.gather(*queued, return_exceptions=True)
        before = len(server.requests)
        called = time.monotonic()  # the fake's clock is time.monotonic too
        await client.get_run(WORKFLOW_ID, run_id)
        answered = time.monotonic() - called
        arrived = server.requests[before].time - called
        reached = sum(r.route == "get_run" for r in server.requests[:before])
    cancelled = sum(isinstance(r, asyncio.CancelledError) for r in settled)
    summary = (
        f"next request reached the server {arrived * 1000:.1f} ms after the call "
        f"(slot {slot * 1000:.0f} ms), answered in {answered * 1000:.1f} ms"
    )
    details = [
        f"{cancelled}/{QUEUED} queued calls cancelled; {reached} of them had reached the server"
    ]
    return Result("limiter", arrived <= slot, summary, details)


# -- main ---------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[], Coroutine[Any, Any, Result]]] = {
    "refused": lambda: outage_scenario("refused"),
    "503": lambda: outage_scenario("503"),
    "hang": lambda: outage_scenario("hang"),
    "chaos": chaos_scenario,
    "pool": pool_scenario,
    "limiter": limiter_scenario,
}
GROUPS = {"outages": ["refused", "503", "hang"]}


def chosen(names: list[str]) -> list[str]:
    """The scenarios named on the command line, groups expanded; all when none is."""
    if not names:
        return list(SCENARIOS)
    picked: list[str] = []
    for name in names:
        for member in GROUPS.get(name, [name]):
            if member not in picked:
                picked.append(member)
    return picked


def run_scenario(name: str) -> Result:
    """Run one scenario in a fresh event loop; a crash is a failed result, not an abort."""
    began = time.monotonic()
    try:
        result = asyncio.run(SCENARIOS[name]())
    except Exception as exc:
        result = Result(name, False, f"crashed: {describe_error(exc)}", error_details([exc]))
    result.details.append(f"scenario took {time.monotonic() - began:.1f}s")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    known = [*SCENARIOS, *GROUPS]
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="scenario",
        help=f"one of {', '.join(known)}; all when none is given",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in known]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(known)}")
    names = chosen(args.scenarios)
    results = []
    for name in names:
        print(f"running {name}...", flush=True)
        results.append(run_scenario(name))
        report(results[-1])
    print_summary(results)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
