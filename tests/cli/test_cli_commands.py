"""The subcommands against a fake server: what they print and how they exit."""

from __future__ import annotations

import pytest

from copyai_poll.testing import FakeCopyAI, Script
from tests.cli.cli_helpers import FOREVER, QUICK, cli_env, run_cli, start_runs

pytestmark = pytest.mark.timeout(60)


@pytest.mark.asyncio
async def test_start_prints_the_new_run_id(fake: FakeCopyAI) -> None:
    """`start` sends inputs and metadata and prints only the new run's id."""
    result = await run_cli(
        "start",
        "WF",
        "-i",
        "Input 1=hello",
        "-i",
        "Tone=a=b",
        "-m",
        "ticket=42",
        env=cli_env(fake),
    )
    assert (0, "") == (result.code, result.err)
    run_id = result.out.strip()
    assert [run_id] == fake.run_ids("WF")
    run = fake.run(run_id)
    assert {"Input 1": "hello", "Tone": "a=b"} == run["input"]
    assert {"ticket": "42"} == run["metadata"]


@pytest.mark.asyncio
async def test_start_json_prints_a_start_event(fake: FakeCopyAI) -> None:
    """`start --json` prints one start event naming the workflow and the run."""
    result = await run_cli("start", "WF", "-i", "a=1", "--json", env=cli_env(fake))
    assert 0 == result.code
    assert [{"event": "start", "workflow_id": "WF", "run_id": fake.run_ids()[0]}] == (
        result.events()
    )


@pytest.mark.asyncio
async def test_start_wait_watches_the_run_to_completion(fake: FakeCopyAI) -> None:
    """`start --wait` prints the id, then one plain line per status change, and exits 0."""
    result = await run_cli(
        "start",
        "WF",
        "-i",
        "a=1",
        "--wait",
        "--poll-initial",
        "0.05",
        "--poll-max",
        "0.1",
        env=cli_env(fake),
    )
    assert 0 == result.code
    lines = result.out.splitlines()
    assert fake.run_ids()[0] == lines[0]
    assert any(line.endswith(")") and "-> COMPLETE" in line for line in lines)
    assert lines[-1].startswith("1 run: 1 complete")


@pytest.mark.asyncio
async def test_get_prints_the_raw_run_object(fake: FakeCopyAI) -> None:
    """`get` prints the API's data object as JSON, unchanged."""
    [run_id] = await start_runs(fake, QUICK)
    result = await run_cli("get", "WF", run_id, "--json", env=cli_env(fake))
    assert 0 == result.code
    [data] = result.events()
    assert run_id == data["id"]
    assert fake.run(run_id)["input"] == data["input"]


@pytest.mark.asyncio
async def test_runs_lists_one_line_per_run_up_to_the_limit(fake: FakeCopyAI) -> None:
    """`runs` prints id, status and createdAt per run, at most --limit of them."""
    ids = await start_runs(fake, QUICK, QUICK, QUICK)
    result = await run_cli("runs", "WF", "--limit", "2", env=cli_env(fake))
    assert 0 == result.code
    lines = result.out.splitlines()
    assert ids[:2] == [line.split()[0] for line in lines]
    assert all(len(line.split()) == 3 for line in lines)


@pytest.mark.asyncio
async def test_runs_json_prints_one_run_object_per_line(fake: FakeCopyAI) -> None:
    """`runs --json` prints each run's data object on its own line."""
    ids = await start_runs(fake, QUICK, QUICK)
    result = await run_cli("runs", "WF", "--json", env=cli_env(fake))
    assert 0 == result.code
    assert ids == [run["id"] for run in result.events()]


@pytest.mark.asyncio
async def test_watch_json_reports_every_run_and_exits_1_on_a_failure(fake: FakeCopyAI) -> None:
    """`watch --json` emits start, status, final and summary events; a FAILED run gives 1."""
    failing = Script.fails(("NEW", 0.05), ("PROCESSING", 0.1), error="boom")
    ok_id, failed_id = await start_runs(fake, QUICK, failing)
    result = await run_cli(
        "watch",
        "WF",
        ok_id,
        failed_id,
        "--json",
        "--poll-initial",
        "0.05",
        "--poll-max",
        "0.1",
        env=cli_env(fake),
    )
    assert 1 == result.code
    events = result.events()
    assert {"start", "status", "final", "summary"} == {e["event"] for e in events}
    finals = {e["run_id"]: e for e in events if e["event"] == "final"}
    assert "COMPLETE" == finals[ok_id]["outcome"]
    assert ("FAILED", "boom") == (finals[failed_id]["outcome"], finals[failed_id]["error"])
    statuses = [e["status"] for e in events if e["event"] == "status" and e["run_id"] == ok_id]
    assert "COMPLETE" == statuses[-1]
    summary = events[-1]
    assert (2, 1, 1) == (summary["runs"], summary["complete"], summary["failed"])


@pytest.mark.asyncio
async def test_watch_exits_0_when_every_run_completes(fake: FakeCopyAI) -> None:
    """`watch` without a terminal prints plain lines per status change and exits 0."""
    ids = await start_runs(fake, QUICK, QUICK)
    result = await run_cli("watch", "WF", *ids, "--poll-initial", "0.05", env=cli_env(fake))
    assert 0 == result.code
    assert 2 == sum("-> COMPLETE" in line for line in result.out.splitlines())
    assert "\x1b[" not in result.out
    assert result.out.splitlines()[-1].startswith("2 runs: 2 complete")


@pytest.mark.asyncio
async def test_watch_exits_3_on_timeout(fake: FakeCopyAI) -> None:
    """A run still in progress when --timeout passes gives exit code 3."""
    [run_id] = await start_runs(fake, FOREVER)
    result = await run_cli("watch", "WF", run_id, "--timeout", "0.5", "--json", env=cli_env(fake))
    assert 3 == result.code
    [final] = [e for e in result.events() if e["event"] == "final"]
    assert ("TIMEOUT", "PROCESSING") == (final["outcome"], final["status"])


@pytest.mark.asyncio
async def test_watch_reports_retries(fake: FakeCopyAI) -> None:
    """A retried poll is a retry event counted in the summary; no log line without -v."""
    from copyai_poll.testing import Fault

    [run_id] = await start_runs(fake, QUICK)
    fake.add_faults("get_run", Fault.server_error(503))
    result = await run_cli("watch", "WF", run_id, "--json", env=cli_env(fake))
    assert 0 == result.code
    events = result.events()
    [retry] = [e for e in events if e["event"] == "retry"]
    assert (run_id, "WF", "GET", 1) == (
        retry["run_id"],
        retry["workflow_id"],
        retry["method"],
        retry["attempt"],
    )
    assert "503" in retry["message"]
    [final] = [e for e in events if e["event"] == "final"]
    assert (1, 1) == (events[-1]["retries"], final["retries"])
    assert "" == result.err


@pytest.mark.asyncio
async def test_verbose_shows_the_retry_log_records(fake: FakeCopyAI) -> None:
    """With -v the library's retry warning reaches stderr."""
    from copyai_poll.testing import Fault

    [run_id] = await start_runs(fake, QUICK)
    fake.add_faults("get_run", Fault.server_error(503))
    result = await run_cli("watch", "WF", run_id, "--json", "-v", env=cli_env(fake))
    assert 0 == result.code
    assert "copyai-poll: WARNING copyai_poll: GET" in result.err
    assert "503" in result.err
