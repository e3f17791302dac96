"""`copyai_poll.otel`: spans, events and metrics with the OpenTelemetry SDK in memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import pytest
import pytest_asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import copyai_poll
from copyai_poll import (
    CopyAIClient,
    PollPolicy,
    PollTimeoutError,
    RetryPolicy,
    RunFailedError,
    StatusChange,
    otel,
    poll_until_done,
)
from copyai_poll.testing import FakeCopyAI, Fault, Script
from tests.helpers import FakeClock

#: A run that stays NEW until a test moves it.
STILL = Script.completes(("NEW", 3600))
POLICY = PollPolicy(initial=1.0, maximum=1.0, jitter=0.0)


class Telemetry:
    """The SDK's in-memory exporter and reader, behind `otel.enable`."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        otel.enable(tracer_provider=tracer_provider, meter_provider=self.meter_provider)

    def finished(self, name: str | None = None) -> list[ReadableSpan]:
        """The spans ended so far (of one name), in the order they ended."""
        return [s for s in self.spans.get_finished_spans() if name in (None, s.name)]

    def points(self, metric: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """Each data point of ``metric`` by its sorted attributes: a sum or a count."""
        data = self.reader.get_metrics_data()
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        for point in m.data.data_points:
                            key = tuple(sorted((point.attributes or {}).items()))
                            found[key] = getattr(point, "value", None) or point.count
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """Telemetry switched on into memory for one test, and off again after it."""
    t = Telemetry()
    try:
        yield t
    finally:
        otel.disable()
        t.meter_provider.shutdown()


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeCopyAI]:
    """A fake server whose runs stay NEW until moved."""
    async with FakeCopyAI(script=STILL) as server:
        yield server


def make_client(fake: FakeCopyAI) -> CopyAIClient:
    """A client of ``fake`` whose retry waits take no time."""
    client = CopyAIClient(
        fake.api_key, base_url=fake.base_url, retry=RetryPolicy(attempts=3, jitter=0.0)
    )
    client._sleep = FakeClock().sleep
    return client


def advance(fake: FakeCopyAI, run_id: str) -> Any:
    """A status callback moving the run one step on: NEW, PROCESSING, COMPLETE."""
    following = {"NEW": "PROCESSING", "PROCESSING": "COMPLETE"}

    def changed(change: StatusChange) -> None:
        if change.current.value in following:
            fake.set_status(run_id, following[change.current.value])

    return changed


async def wait_through_a_fault_and_three_changes(fake: FakeCopyAI, telemetry: Telemetry) -> str:
    """Start a run and wait for it through one 503 and NEW, PROCESSING, COMPLETE."""
    async with make_client(fake) as client:
        run_id = (await client.start_run("WF", {"a": "1"})).id
        telemetry.spans.clear()  # the start's span is not the wait's
        fake.add_faults("get_run", Fault.server_error(503))
        clock = FakeClock()
        await poll_until_done(
            client,
            "WF",
            run_id,
            on_status_change=advance(fake, run_id),
            policy=POLICY,
            sleep=clock.sleep,
            clock=clock,
        )
    return run_id


@pytest.mark.asyncio
async def test_a_wait_is_one_span_with_its_changes_retries_and_requests(
    fake: FakeCopyAI, telemetry: Telemetry
) -> None:
    """One wait through a 503 and three changes: one wait span, 3+1 events, 4 child spans."""
    run_id = await wait_through_a_fault_and_three_changes(fake, telemetry)

    [wait] = telemetry.finished("copyai_poll.wait")
    assert ["retry", "status_change", "status_change", "status_change"] == [
        e.name for e in wait.events
    ]
    assert ["NEW", "PROCESSING", "COMPLETE"] == [
        e.attributes["copyai.run.status"] for e in wait.events[1:]
    ]
    assert ("GET", 1, "ServerError") == tuple(
        wait.events[0].attributes[k]
        for k in ("http.request.method", "copyai.attempt", "error.type")
    )
    assert {
        "copyai.workflow_id": "WF",
        "copyai.run_id": run_id,
        "copyai.polls": 3,
        "copyai.run.status": "COMPLETE",
        "copyai.wait.outcome": "complete",
    } == dict(wait.attributes or {})
    assert StatusCode.UNSET == wait.status.status_code

    requests = [s for s in telemetry.finished() if s is not wait]
    assert 4 == len(requests)  # three polls, the first tried twice
    assert {"GET /workflow/{workflow_id}/run/{run_id}"} == {s.name for s in requests}
    assert all(s.kind is SpanKind.CLIENT for s in requests)
    assert all(s.parent is not None and s.parent.span_id == wait.context.span_id for s in requests)
    assert {wait.context.trace_id} == {s.context.trace_id for s in requests}
    assert [503, None, None, None] == [
        (s.attributes or {}).get("http.response.status_code") for s in requests
    ]
    assert StatusCode.ERROR == requests[0].status.status_code


@pytest.mark.asyncio
async def test_the_counters_and_the_histogram_measure_the_wait(
    fake: FakeCopyAI, telemetry: Telemetry
) -> None:
    """Requests by outcome, retries, changes by status, waits and their duration."""
    await wait_through_a_fault_and_three_changes(fake, telemetry)

    method = ("http.request.method", "GET")
    assert {
        (("copyai.outcome", "ok"), ("http.request.method", "POST")): 1,
        (("copyai.outcome", "ok"), method): 3,
        (("copyai.outcome", "ServerError"), method): 1,
    } == telemetry.points("copyai_poll.requests")
    assert {(("error.type", "ServerError"), method): 1} == telemetry.points("copyai_poll.retries")
    assert {
        (("copyai.run.status", status),): 1 for status in ("NEW", "PROCESSING", "COMPLETE")
    } == telemetry.points("copyai_poll.status_changes")
    complete = (("copyai.wait.outcome", "complete"),)
    assert {complete: 1} == telemetry.points("copyai_poll.waits")
    assert {complete: 1} == telemetry.points("copyai_poll.wait.duration")  # one recorded
    [histogram] = [
        m.data.data_points[0]
        for r in telemetry.reader.get_metrics_data().resource_metrics
        for sc in r.scope_metrics
        for m in sc.metrics
        if m.name == "copyai_poll.wait.duration"
    ]
    assert 2.0 == histogram.sum  # two one-second pauses on the virtual clock


@pytest.mark.asyncio
async def test_a_failed_wait_and_a_timed_out_wait_are_errors(
    fake: FakeCopyAI, telemetry: Telemetry
) -> None:
    """A FAILED run and a deadline give wait spans with ERROR status and their outcome."""
    async with make_client(fake) as client:
        failing = (await client.start_run("WF", {"a": "1"})).id
        stuck = (await client.start_run("WF", {"a": "2"})).id
        fake.set_status(failing, "FAILED", error="boom")
        with pytest.raises(RunFailedError):
            await poll_until_done(client, "WF", failing, policy=POLICY)
        clock = FakeClock()
        with pytest.raises(PollTimeoutError):
            await poll_until_done(
                client, "WF", stuck, policy=POLICY, timeout=2.5, sleep=clock.sleep, clock=clock
            )

    waits = telemetry.finished("copyai_poll.wait")
    assert [("failed", "FAILED"), ("timeout", "NEW")] == [
        (s.attributes["copyai.wait.outcome"], s.attributes["copyai.run.status"]) for s in waits
    ]
    assert {StatusCode.ERROR} == {s.status.status_code for s in waits}
    outcomes = telemetry.points("copyai_poll.waits")
    assert {(("copyai.wait.outcome", "failed"),): 1, (("copyai.wait.outcome", "timeout"),): 1} == (
        outcomes
    )


@pytest.mark.asyncio
async def test_watch_is_a_wait_span_with_its_requests_inside(
    fake: FakeCopyAI, telemetry: Telemetry
) -> None:
    """`watch` makes one wait span too, its polls' requests as children."""
    async with make_client(fake) as client:
        run_id = (await client.start_run("WF", {"a": "1"})).id
        telemetry.spans.clear()
        clock = FakeClock()
        changes = copyai_poll.watch(
            client, "WF", run_id, policy=POLICY, sleep=clock.sleep, clock=clock
        )
        move = advance(fake, run_id)
        async with aclosing(changes):
            async for change in changes:
                move(change)

    [wait] = telemetry.finished("copyai_poll.wait")
    assert 3 == sum(e.name == "status_change" for e in wait.events)
    assert "complete" == wait.attributes["copyai.wait.outcome"]
    requests = [s for s in telemetry.finished() if s is not wait]
    assert 3 == len(requests)
    assert all(s.parent is not None and s.parent.span_id == wait.context.span_id for s in requests)


@pytest.mark.asyncio
async def test_disable_stops_the_spans(fake: FakeCopyAI, telemetry: Telemetry) -> None:
    """After `otel.disable()` a wait makes no span and `is_enabled` says so."""
    otel.disable()
    assert not otel.is_enabled()
    async with make_client(fake) as client:
        run_id = (await client.start_run("WF", {"a": "1"})).id
        fake.set_status(run_id, "COMPLETE")
        await poll_until_done(client, "WF", run_id, policy=POLICY)
    assert [] == telemetry.finished()


def test_switched_off_nothing_of_opentelemetry_is_imported() -> None:
    """A whole wait with the switch off never imports an opentelemetry module."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        import copyai_poll
        from copyai_poll.testing import FakeCopyAI, Fault, Script

        async def main():
            async with FakeCopyAI(script=Script.completes(("NEW", 0.05))) as fake:
                fake.add_faults("get_run", Fault.server_error(503))
                async with copyai_poll.CopyAIClient(fake.api_key, base_url=fake.base_url) as c:
                    run = await c.start_run("WF", {"a": "1"})
                    policy = copyai_poll.PollPolicy(initial=0.05)
                    await c.poll_until_done("WF", run.id, policy=policy)
                    async for _ in copyai_poll.watch(c, "WF", run.id, policy=policy):
                        pass

        asyncio.run(main())
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert (0, "[]") == (result.returncode, result.stdout.strip()), result.stderr
