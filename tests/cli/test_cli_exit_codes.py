"""Every exit code `--help` lists, against the fake, also with stdout closed early (| head)."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import Awaitable, Callable

import pytest

from copyai_poll.testing import FakeCopyAI, Script
from tests.cli.cli_helpers import (
    DEADLINE,
    FOREVER,
    QUICK,
    cli_env,
    run_cli,
    run_cli_head,
    start_runs,
)

pytestmark = pytest.mark.timeout(90)

#: Runs that take long enough for the command to write after `head` left.
SLOW = Script.completes(("NEW", 0.3), ("PROCESSING", 0.6))
SLOW_FAIL = Script.fails(("NEW", 0.3), ("PROCESSING", 0.6), error="boom")
POLL = ("--poll-initial", "0.05", "--poll-max", "0.1")

Case = Callable[[FakeCopyAI], Awaitable[list[str]]]


async def every_run_completes(fake: FakeCopyAI) -> list[str]:
    """Two runs that complete."""
    return ["watch", "WF", *await start_runs(fake, SLOW, QUICK), *POLL]


async def a_run_fails(fake: FakeCopyAI) -> list[str]:
    """One run completes, one fails."""
    return ["watch", "WF", *await start_runs(fake, QUICK, SLOW_FAIL), *POLL]


async def usage_error(fake: FakeCopyAI) -> list[str]:
    """--timeout where nothing waits."""
    return ["get", "WF", "R", "--timeout", "5"]


async def a_run_times_out(fake: FakeCopyAI) -> list[str]:
    """One run completes, one is still going at --timeout."""
    return ["watch", "WF", *await start_runs(fake, QUICK, FOREVER), "--timeout", "1", *POLL]


async def api_error(fake: FakeCopyAI) -> list[str]:
    """One run fails, one is unknown to the API (no grace): 4 beats 1."""
    ids = await start_runs(fake, SLOW_FAIL)
    return ["watch", "WF", *ids, "WRUN-typo", "--not-found-grace", "0", "--timeout", "5", *POLL]


async def start_wait_fails(fake: FakeCopyAI) -> list[str]:
    """`start --wait` of a run that fails."""
    fake.queue_scripts(SLOW_FAIL)
    return ["start", "WF", "-i", "a=1", "--wait", *POLL]


CASES: list[tuple[int, Case]] = [
    (0, every_run_completes),
    (1, a_run_fails),
    (1, start_wait_fails),
    (2, usage_error),
    (3, a_run_times_out),
    (4, api_error),
]


async def help_codes() -> set[int]:
    """The exit codes `copyai-poll --help` lists."""
    result = await run_cli("--help", env=cli_env(None))
    assert 0 == result.code
    section = result.out.split("exit codes:", 1)[1].split("\n\n", 1)[0]
    return {int(code) for code in re.findall(r"^  (\d+) ", section, re.MULTILINE)}


@pytest.mark.asyncio
async def test_the_cases_cover_every_code_help_lists() -> None:
    """The codes tested here (and 130 below) are exactly those `--help` documents."""
    assert {code for code, _ in CASES} | {130} == await help_codes()


@pytest.mark.asyncio
@pytest.mark.parametrize(("code", "case"), CASES, ids=[c.__name__ for _, c in CASES])
async def test_exit_code(fake: FakeCopyAI, code: int, case: Case) -> None:
    """Each case exits with its documented code, stdout read to the end."""
    result = await run_cli(*await case(fake), env=cli_env(fake))
    assert code == result.code, result.err
    assert "Traceback" not in result.err


@pytest.mark.asyncio
@pytest.mark.parametrize(("code", "case"), CASES, ids=[c.__name__ for _, c in CASES])
async def test_exit_code_with_stdout_closed_after_one_line(
    fake: FakeCopyAI, code: int, case: Case
) -> None:
    """`... | head -1` changes no exit code and prints no traceback."""
    got, _, err = await run_cli_head(*await case(fake), env=cli_env(fake))
    assert code == got, err
    assert "Traceback" not in err
    assert "BrokenPipe" not in err


@pytest.mark.asyncio
@pytest.mark.parametrize("json_mode", [False, True], ids=["plain", "json"])
async def test_ctrl_c_exits_130_with_stdout_closed(fake: FakeCopyAI, json_mode: bool) -> None:
    """SIGINT after the reader left still exits 130, saying it was interrupted."""
    ids = await start_runs(fake, FOREVER, FOREVER)

    async def interrupt(process: asyncio.subprocess.Process) -> None:
        process.send_signal(signal.SIGINT)

    args = ["watch", "WF", *ids, *(["--json"] if json_mode else [])]
    got, first, err = await run_cli_head(*args, env=cli_env(fake), before_exit=interrupt)
    assert 130 == got, err
    assert first  # the one line `head` read
    assert "copyai-poll: interrupted" in err
    assert "Traceback" not in err


async def piped_into_head(args: list[str], env: dict[str, str]) -> tuple[int, bytes, bytes]:
    """Run ``copyai-poll ARGS | head -1`` in bash with pipefail: its code, stdout, stderr."""
    script = 'set -o pipefail; "$0" -m copyai_poll "$@" | head -1'
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode is not None
    return process.returncode, out, err


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("args", "code", "lines"),
    [(["--help"], 0, 1), (["watch", "--help"], 0, 1), (["watch"], 2, 0)],
    ids=["help", "watch-help", "usage"],
)
async def test_help_piped_into_head_in_a_shell(args: list[str], code: int, lines: int) -> None:
    """`copyai-poll --help | head -1` in bash with pipefail: the documented code, no noise."""
    returncode, out, err = await piped_into_head(args, cli_env(None))
    assert code == returncode
    assert lines == len(out.decode().splitlines())  # a usage error goes to stderr
    assert "Traceback" not in err.decode()
    assert "Exception ignored" not in err.decode()


@pytest.mark.asyncio
async def test_a_failed_watch_piped_into_head_in_a_shell(fake: FakeCopyAI) -> None:
    """`copyai-poll watch ... | head -1` with pipefail exits 1 when a run FAILED."""
    args = await a_run_fails(fake)
    returncode, out, err = await piped_into_head(args, cli_env(fake))
    assert 1 == returncode, err.decode()
    assert 1 == len(out.decode().splitlines())
