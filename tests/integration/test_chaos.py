"""The chaos test: 1,000 runs polled at once through one client while 20% of GETs go wrong.

The fake's clock is a `ManualClock` that a background task moves one tick (one second) at
a time, and only once the fake has cleanly answered a GET of every unfinished run at the
current tick. Every step of every script lasts at least one tick, so every step is seen:
each run's status changes are known exactly in advance, with no assertion on wall-clock
timing, however slow the machine.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
from collections.abc import Iterator
from typing import Any

import aiohttp
import attrs
import pytest

from copyai_poll import (
    CopyAIClient,
    PollPolicy,
    RetryPolicy,
    RunFailedError,
    RunStatus,
    StatusChange,
    WorkflowRun,
)
from copyai_poll.testing import FakeCopyAI, Fault, ManualClock, Script

RUNS = 1000
FAULT_SHARE = 0.2
WORKFLOWS = ("WCFG-chaos-a", "PKGW-chaos-b")
KEY = "sk-chaos-0123456789"

#: Every fault kind but "hang", in equal shares of `FAULT_SHARE`.
FAULTS = (
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

#: The default retry policy, as users get it: 4 tries, so at a 20% fault rate about one
#: poll in 600 exhausts them, and the wait must ride that out (its outage grace).
RETRY = RetryPolicy()
#: Its waits (0.5 s, 1 s, 2 s, jittered) run a hundred times faster, so that the test
#: spends its time on requests, not sleeping; the schedule's shape stays the default's.
RETRY_TIME_SCALE = 0.01
#: Slow enough that 1,000 runs ask for less than the fake on 2 cores can answer: under
#: saturation a retried request queues behind every other run, and each tick waits for
#: the unluckiest run (about four faults in a row among 1,000), several rounds long.
POLL = PollPolicy(initial=0.4, maximum=0.4, jitter=0.25, reset_on_change=False)

_KNOWN = {s.value for s in RunStatus}


@attrs.frozen
class Plan:
    """The script the test gives one run, and what polling it must report."""

    script: Script

    @property
    def terminal(self) -> RunStatus:
        """The status the run ends in."""
        return RunStatus(self.script.final)

    def expected_changes(self) -> list[tuple[RunStatus | None, RunStatus]]:
        """(previous, current) of each change: the script's known statuses, deduplicated."""
        known = [s.status for s in self.script.steps if s.status in _KNOWN]
        seen: list[RunStatus] = []
        for status in [*known, self.script.final]:
            if not seen or seen[-1] != status:
                seen.append(RunStatus(status))
        return list(zip([None, *seen[:-1]], seen, strict=True))


def make_plan(rng: random.Random, index: int) -> Plan:
    """A short random life of 0-7 one-tick steps: some RETRYING, some undocumented."""
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
        return Plan(Script.fails(*steps, error={"message": f"run {index} failed", "n": index}))
    return Plan(Script.completes(*steps, output={"Output 1": f"result {index}", "n": index}))


@attrs.define
class Tally:
    """What the polls reported, per run."""

    changes: dict[str, list[StatusChange]] = attrs.field(factory=dict)
    outcomes: dict[str, WorkflowRun | BaseException] = attrs.field(factory=dict)


async def poll_one(client: CopyAIClient, tally: Tally, workflow_id: str, run_id: str) -> None:
    """Poll one run to its end, recording its changes and its outcome."""
    changes = tally.changes.setdefault(run_id, [])
    try:
        outcome: Any = await client.poll_until_done(
            workflow_id, run_id, policy=POLL, on_status_change=changes.append
        )
    except Exception as exc:  # recorded, so that one run cannot abort the TaskGroup
        outcome = exc
    tally.outcomes[run_id] = outcome


async def move_clock(
    clock: ManualClock, server: FakeCopyAI, plan_of: dict[str, Plan], tally: Tally
) -> int:
    """Advance the clock a tick at a time, once the fake answered every live run at this tick.

    A clean answer sent with the fake's clock at the current tick counts: the client sees
    that state whenever it reads it. Runs whose script is over, or whose poll ended (an
    error the assertions will show), need none.
    """
    tick, read = 0, 0
    while tick < max(plan.script.duration for plan in plan_of.values()):
        live = {r for r, plan in plan_of.items() if plan.script.duration > tick}
        while live:
            records = server.requests
            for record in records[read:]:
                if record.route == "get_run" and record.fault is None and record.time == tick:
                    live.discard(record.path.rsplit("/", 1)[1])
            read = len(records)
            live -= tally.outcomes.keys()
            await asyncio.sleep(0.005)
        clock.advance(1)
        tick += 1
    return tick


async def scaled_sleep(seconds: float) -> None:
    """The client's retry sleep, time-scaled by `RETRY_TIME_SCALE`."""
    await asyncio.sleep(seconds * RETRY_TIME_SCALE)


class Count(logging.Handler):
    """Counts the poller's "failed, polling again" records."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.failed_polls = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "polling again" in record.getMessage():
            self.failed_polls += 1


@pytest.fixture
def counter() -> Iterator[Count]:
    """A `Count` attached to the library's logger for the test."""
    count = Count()
    logging.getLogger("copyai_poll").addHandler(count)
    yield count
    logging.getLogger("copyai_poll").removeHandler(count)


# No per-test time limit: the ticks wait for the machine, however busy; the suite's
# global limit only guards against a hang.
@pytest.mark.asyncio
async def test_thousand_runs_survive_a_fifth_of_polls_failing(counter: Count) -> None:
    """1,000 concurrent polls through one client each report their run's true life exactly."""
    rng = random.Random(20240611)
    plans = [make_plan(rng, i) for i in range(RUNS)]
    clock = ManualClock()
    tally = Tally()

    async with FakeCopyAI(clock=clock, api_key=KEY, seed=7) as server:
        server.queue_scripts(*(plan.script for plan in plans))
        async with (
            aiohttp.ClientSession() as session,
            CopyAIClient(
                api_key=KEY, base_url=server.base_url, session=session, retry=RETRY
            ) as client,
        ):
            client._sleep = scaled_sleep
            started = await asyncio.gather(
                *(client.start_run(WORKFLOWS[i % 2], {"Input 1": str(i)}) for i in range(RUNS))
            )
            # The fake handed the queued scripts out in the order it received the starts.
            plan_of = dict(zip(server.run_ids(), plans, strict=True))
            for fault in FAULTS:
                server.fault_rate("get_run", fault, FAULT_SHARE / len(FAULTS))

            async with asyncio.TaskGroup() as tg:
                for run in started:
                    tg.create_task(poll_one(client, tally, run.workflow_id, run.id))
                ticker = tg.create_task(move_clock(clock, server, plan_of, tally))

            acquired = len(session.connector._acquired)  # no public count of them
            assert not session.closed  # the client never closes a session it was given
        assert session.closed

    gc.collect()  # an unclosed transport would warn now, and warnings are errors
    assert {asyncio.current_task()} == asyncio.all_tasks()
    assert 0 == acquired

    assert RUNS == len(plan_of) == len(tally.outcomes)
    wrong = []
    for run_id, plan in plan_of.items():
        outcome = tally.outcomes[run_id]
        got = [(c.previous, c.current) for c in tally.changes[run_id]]
        if plan.terminal is RunStatus.COMPLETE:
            ok = isinstance(outcome, WorkflowRun) and outcome.output == plan.script.output
        else:
            ok = isinstance(outcome, RunFailedError) and outcome.run.error == plan.script.error
            ok = ok and list(outcome.history) == tally.changes[run_id]
        if not ok or got != plan.expected_changes():
            wrong.append((run_id, plan.script, outcome, got))
    assert [] == wrong[:5]
    assert all(c.run.id == r for r, cs in tally.changes.items() for c in cs)
    assert max(plan.script.duration for plan in plans) == ticker.result()

    # The chaos really happened: every fault kind hit some GETs, about a fifth of them.
    gets = [r for r in server.requests if r.route == "get_run"]
    faulted = [r.fault for r in gets if r.fault is not None]
    assert set(FAULTS) == set(faulted)
    assert 0.15 < len(faulted) / len(gets) < 0.25
    # Some polls exhausted the default four tries, and their waits went on regardless.
    assert counter.failed_polls > 0
    assert any(s.status == "RETRYING" for plan in plans for s in plan.script.steps)
    assert any(s.status == "QUEUED" for plan in plans for s in plan.script.steps)
    assert 200 < sum(plan.terminal is RunStatus.FAILED for plan in plans) < 400
