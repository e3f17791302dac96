"""The live display in a terminal, Ctrl-C, the demo, the fake server and --help."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

import pexpect
import pytest

from copyai_poll.testing import FakeCopyAI, Script, demo_scripts
from tests.cli.cli_helpers import (
    DEADLINE,
    FOREVER,
    Result,
    assert_one_clear_message,
    cli_env,
    run_cli,
    start_cli,
    start_runs,
)

pytestmark = pytest.mark.timeout(60)

CURSOR_UP = "\x1b[1A"


@pytest.mark.asyncio
async def test_live_display_redraws_in_place_in_a_terminal(fake: FakeCopyAI) -> None:
    """On a terminal, `watch` redraws one line per run as the status moves, then sums up."""
    [run_id] = await start_runs(fake, Script.completes(("NEW", 3600)))
    child = pexpect.spawn(
        sys.executable,
        [
            "-m",
            "copyai_poll",
            "watch",
            "WF",
            run_id,
            "--poll-initial",
            "0.05",
            "--poll-max",
            "0.1",
        ],
        env=cli_env(fake, NO_COLOR="1", TERM="xterm"),
        encoding="utf-8",
        timeout=DEADLINE,
        dimensions=(24, 120),
    )
    try:
        expect = asyncio.to_thread

        await expect(child.expect_exact, f"{run_id} NEW")
        fake.set_status(run_id, "PROCESSING")
        await expect(child.expect_exact, f"{CURSOR_UP}\r\x1b[2K")
        await expect(child.expect_exact, f"{run_id} PROCESSING")
        fake.set_status(run_id, "COMPLETE", output={"Output 1": "done"})
        await expect(child.expect_exact, f"✓ {run_id} COMPLETE")
        await expect(child.expect_exact, "1 run: 1 complete")
        await expect(child.expect, pexpect.EOF)
        shown = child.before
    finally:
        await asyncio.to_thread(child.close)
    assert 0 == child.exitstatus
    assert "\x1b[3" not in shown  # NO_COLOR: no colour codes


@pytest.mark.asyncio
async def test_ctrl_c_exits_130_saying_where_each_run_stood(fake: FakeCopyAI) -> None:
    """SIGINT stops `watch` cleanly: each run's last status, exit code 130, no traceback."""
    ids = await start_runs(fake, FOREVER, FOREVER)
    process = await start_cli("watch", "WF", *ids, "--json", env=cli_env(fake))
    assert process.stdout is not None
    first = await asyncio.wait_for(process.stdout.readline(), DEADLINE)
    assert b'"event": "start"' in first
    line = first
    while b'"event": "status"' not in line:  # a poll has answered: the run is under way
        line = await asyncio.wait_for(process.stdout.readline(), DEADLINE)
        assert line, "the command ended before Ctrl-C"
    process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    result = Result(process.returncode or 0, first.decode() + out.decode(), err.decode())
    assert 130 == result.code
    finals = [e for e in result.events() if e["event"] == "final"]
    assert sorted(ids) == sorted(e["run_id"] for e in finals)
    assert {"INTERRUPTED"} == {e["outcome"] for e in finals}
    assert "interrupted" in result.err
    assert_one_clear_message(result)


@pytest.mark.asyncio
async def test_demo_runs_the_scripted_mix_and_sums_it_up() -> None:
    """`demo` needs no key, meets faults, and reports every run ended as scripted."""
    result = await run_cli("demo", "--json", env=cli_env(None))
    assert 0 == result.code, result.err
    events = result.events()
    summary = events[-1]
    expected_failures = sum(script.final == "FAILED" for script in demo_scripts(0, 20))
    assert "summary" == summary["event"]
    assert (20, expected_failures) == (summary["runs"], summary["failed"])
    assert 20 - expected_failures == summary["complete"]
    assert (True, []) == (summary["as_scripted"], summary["unscripted"])
    assert summary["retries"] >= 3  # a 503, a 429 and a truncated body at the least
    assert summary["retries"] == sum(e["event"] == "retry" for e in events)
    # One RetryEvent per fault injected, each counted against its run.
    assert summary["retries"] == sum(summary["faults"].values())
    assert summary["retries"] == sum(e["retries"] for e in events if e["event"] == "final")
    assert summary["server_polls"] >= summary["polls"] > 20
    assert summary["lag_max"] is not None
    assert "Traceback" not in result.err


@pytest.mark.asyncio
async def test_fake_server_serves_until_ctrl_c() -> None:
    """`fake-server --port 0` announces its URL, answers the other commands, stops on SIGINT."""
    server = await start_cli("fake-server", "--port", "0", "--api-key", "k1", env=cli_env(None))
    assert server.stdout is not None
    try:
        line = await asyncio.wait_for(server.stdout.readline(), DEADLINE)
        base_url = line.decode().split()[-1]
        assert base_url.startswith("http://127.0.0.1:")
        env = cli_env(None, COPYAI_API_KEY="k1", COPYAI_BASE_URL=base_url)
        started = await run_cli("start", "WF", "-i", "a=1", env=env)
        listed = await run_cli("runs", "WF", env=env)
        assert (0, 0) == (started.code, listed.code)
        assert started.out.strip() == listed.out.split()[0]
    finally:
        server.send_signal(signal.SIGINT)
        await asyncio.wait_for(server.communicate(), DEADLINE)
    assert 0 == server.returncode


@pytest.mark.asyncio
async def test_console_script_help_documents_exit_codes() -> None:
    """The installed `copyai-poll` script's --help lists every exit code."""
    script = Path(sys.executable).with_name("copyai-poll")
    executable = str(script) if script.exists() else shutil.which("copyai-poll")
    assert executable is not None
    process = await asyncio.create_subprocess_exec(
        executable, "--help", stdout=asyncio.subprocess.PIPE, env=dict(os.environ)
    )
    out, _ = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert 0 == process.returncode
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "130"):
        assert f"\n  {code}" in out.decode()
