"""The flags users hit: --timeout, --request-timeout, the graces, and a base URL hint."""

from __future__ import annotations

import pytest

from copyai_poll.testing import FakeCopyAI, Fault
from tests.cli.cli_helpers import (
    FOREVER,
    QUICK,
    assert_one_clear_message,
    cli_env,
    run_cli,
    start_runs,
)

pytestmark = pytest.mark.timeout(90)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["get", "WF", "R"], "get does not wait"),
        (["runs", "WF"], "runs does not wait"),
        (["start", "WF", "-i", "a=1"], "start without --wait does not wait"),
        (["fake-server", "--port", "0"], "fake-server does not wait"),
    ],
)
async def test_timeout_where_nothing_waits_is_a_usage_error(args: list[str], what: str) -> None:
    """--timeout on a command that does not wait exits 2 naming --request-timeout."""
    result = await run_cli(*args, "--timeout", "5", env=cli_env(None, COPYAI_API_KEY="k"))
    assert 2 == result.code
    assert what in result.err
    assert "--request-timeout" in result.err
    assert_one_clear_message(result)


@pytest.mark.asyncio
async def test_start_wait_honours_timeout(fake: FakeCopyAI) -> None:
    """`start --wait --timeout` gives up on a run still going: exit 3."""
    fake.queue_scripts(FOREVER)
    result = await run_cli(
        "start", "WF", "-i", "a=1", "--wait", "--timeout", "0.5", "--json", env=cli_env(fake)
    )
    assert 3 == result.code
    [final] = [e for e in result.events() if e["event"] == "final"]
    assert "TIMEOUT" == final["outcome"]


@pytest.mark.asyncio
async def test_demo_honours_timeout() -> None:
    """`demo --timeout` bounds the demo's waits too: exit 3 when runs are cut short."""
    result = await run_cli("demo", "--timeout", "0.5", "--json", env=cli_env(None))
    assert 3 == result.code, result.err
    assert result.events()[-1]["timeout"] > 0


@pytest.mark.asyncio
async def test_request_timeout_bounds_each_try(fake: FakeCopyAI) -> None:
    """--request-timeout cuts a try the server never answers; the retry then succeeds.

    Without the flag that try would last the default 30 s, past this test's deadline.
    """
    [run_id] = await start_runs(fake, QUICK)
    fake.add_faults("get_run", Fault.hang())
    result = await run_cli("get", "WF", run_id, "--request-timeout", "0.3", env=cli_env(fake))
    assert 0 == result.code, result.err
    assert 2 == fake.get_count(run_id)


@pytest.mark.asyncio
async def test_not_found_grace_zero_reports_an_unknown_run_at_once(fake: FakeCopyAI) -> None:
    """--not-found-grace 0: a typo'd run id is an API error (4) after one poll."""
    result = await run_cli(
        "watch", "WF", "WRUN-typo", "--not-found-grace", "0", "--json", env=cli_env(fake)
    )
    assert 4 == result.code
    events = result.events()
    [notice] = [e for e in events if e["event"] == "notice"]
    assert ("not_found", "WRUN-typo") == (notice["kind"], notice["run_id"])
    [final] = [e for e in events if e["event"] == "final"]
    assert "ERROR" == final["outcome"]
    assert "404" in final["error"]
    assert 1 == final["polls"]  # the poll that met the 404 counts


@pytest.mark.asyncio
async def test_a_404_says_at_once_that_the_run_is_not_visible_yet(fake: FakeCopyAI) -> None:
    """Plain `watch` of an unknown run prints a notice at once, then the 404 after the grace."""
    result = await run_cli(
        "watch",
        "WF",
        "WRUN-typo",
        "--not-found-grace",
        "0.5",
        "--poll-initial",
        "0.1",
        env=cli_env(fake),
    )
    assert 4 == result.code
    first = result.out.splitlines()[0]
    assert "WRUN-typo  not visible yet (404); polling again for up to 0.5 s" == first


@pytest.mark.asyncio
async def test_outage_grace_ends_a_wait_on_failing_polls(fake: FakeCopyAI) -> None:
    """--outage-grace 0: the first poll that fails after its retries ends the wait (4)."""
    [run_id] = await start_runs(fake, FOREVER)
    fake.fault_rate("get_run", Fault.server_error(503), 1.0)
    result = await run_cli(
        "watch", "WF", run_id, "--outage-grace", "0", "--json", env=cli_env(fake)
    )
    assert 4 == result.code
    events = result.events()
    [notice] = [e for e in events if e["event"] == "notice"]
    assert ("outage", run_id) == (notice["kind"], notice["run_id"])
    assert "503" in notice["message"]
    [final] = [e for e in events if e["event"] == "final"]
    assert ("ERROR", 3) == (final["outcome"], final["retries"])  # 4 tries, 3 retries


@pytest.mark.asyncio
@pytest.mark.parametrize("command", ["get", "watch"])
async def test_a_base_url_without_api_gets_a_hint(fake: FakeCopyAI, command: str) -> None:
    """A 404 from a base URL that lacks /api says so, instead of only "no such run"."""
    [run_id] = await start_runs(fake, QUICK)
    bare = fake.base_url.removesuffix("/api")
    args = [command, "WF", run_id] + (["--not-found-grace", "0"] if command == "watch" else [])
    result = await run_cli(*args, env=cli_env(fake, COPYAI_BASE_URL=bare))
    assert 4 == result.code
    hint = f"the base URL {bare} does not end in /api: did you mean {bare}/api?"
    assert hint in result.err + result.out
