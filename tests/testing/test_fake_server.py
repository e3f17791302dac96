"""The fake's lifecycle, its public names, the demo preset and serve()."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

import copyai_poll.testing
from copyai_poll.testing import (
    DEMO_WORKFLOW_ID,
    FakeCopyAI,
    ManualClock,
    demo_faults,
    demo_scripts,
    serve,
)
from tests.testing.fake_helpers import Api


def test_exported_names() -> None:
    """copyai_poll.testing exports exactly its public names, sorted."""
    expected = [
        "Clock",
        "DEMO_WORKFLOW_ID",
        "Delivery",
        "DeliveryPlan",
        "FakeCopyAI",
        "Fault",
        "ManualClock",
        "Phase",
        "Quirks",
        "RequestRecord",
        "Script",
        "Step",
        "demo_faults",
        "demo_scripts",
        "serve",
    ]

    assert expected == copyai_poll.testing.__all__


def test_base_url_before_start_is_a_runtime_error() -> None:
    """Asking where an unstarted fake serves is a RuntimeError, and its repr says so."""
    server = FakeCopyAI()

    with pytest.raises(RuntimeError, match="start"):
        _ = server.base_url
    assert "<FakeCopyAI not started runs=0>" == repr(server)


@pytest.mark.asyncio
async def test_starting_twice_is_a_runtime_error(fake: FakeCopyAI) -> None:
    """A fake that is serving cannot be started again."""
    with pytest.raises(RuntimeError, match="already"):
        await fake.start()


@pytest.mark.asyncio
async def test_base_url_and_restart() -> None:
    """The fake serves /api on 127.0.0.1, and can be started again after closing."""
    server = FakeCopyAI(clock=ManualClock())
    for _ in range(2):
        async with server:
            assert server.base_url.startswith("http://127.0.0.1:")
            assert server.base_url.endswith("/api")


@pytest.mark.asyncio
async def test_make_app_mounts_in_your_own_runner() -> None:
    """make_app() gives an aiohttp application you can run yourself."""
    server = FakeCopyAI(clock=ManualClock())
    runner = web.AppRunner(server.make_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession(headers={"x-copy-ai-api-key": "test-key"}) as session:
            run_id = await Api(session, f"http://127.0.0.1:{port}/api").start()
    finally:
        await runner.cleanup()

    assert [run_id] == server.run_ids()


def test_demo_scripts_are_a_varied_mix() -> None:
    """Demo scripts are 20 runs of seconds: some fail, some retry, one shows QUEUED."""
    scripts = demo_scripts(seed=1)
    statuses = [{step.status for step in script.steps} for script in scripts]

    assert 20 == len(scripts)
    assert 4 == sum(script.final == "FAILED" for script in scripts)
    assert 5 == sum("RETRYING" in s for s in statuses)
    assert 1 == sum("QUEUED" in s for s in statuses)
    assert all(1 <= script.duration <= 20 for script in scripts)
    assert scripts == demo_scripts(seed=1)
    assert scripts != demo_scripts(seed=2)


@pytest.mark.asyncio
async def test_demo_preset_runs_take_the_demo_scripts() -> None:
    """FakeCopyAI.demo() queues the demo scripts and flaky polls, credits as strings."""
    clock = ManualClock()
    async with (
        FakeCopyAI.demo(clock=clock, seed=1) as server,
        aiohttp.ClientSession(headers={"x-copy-ai-api-key": server.api_key}) as session,
    ):
        api = Api(session, server.base_url)
        ids = [await api.start(DEMO_WORKFLOW_ID) for _ in range(21)]
        clock.advance(60)
        finals = [server.run(run_id) for run_id in ids]

    assert 4 == sum(run["status"] == "FAILED" for run in finals)
    assert {"2"} == {run["credits"] for run in finals}
    assert 4 == len(demo_faults())


@pytest.mark.asyncio
async def test_serve_until_stopped() -> None:
    """serve() announces its URL and key, serves, and returns once stop is set."""
    lines: list[str] = []
    stop = asyncio.Event()
    server = FakeCopyAI(clock=ManualClock(), api_key="k")
    task = asyncio.create_task(serve(server, stop=stop, announce=lines.append))
    async with asyncio.timeout(5):
        while len(lines) < 2:
            await asyncio.sleep(0.01)
        async with aiohttp.ClientSession(headers={"x-copy-ai-api-key": "k"}) as session:
            status, _ = await Api(session, server.base_url).call("GET", "/webhook")
        stop.set()
        await task

    assert 200 == status
    assert [f"Fake Copy.ai API serving at {server.base_url}", "API key: k"] == lines
