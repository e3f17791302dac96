"""Helpers for running the real ``copyai-poll`` command against a fake server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

import attrs

from copyai_poll.testing import FakeCopyAI, Script

#: Runs that finish almost at once, so that most tests take no real time.
QUICK = Script.completes(("NEW", 0.05), ("PROCESSING", 0.1))
#: Generous: a subprocess that hangs must fail the test, not the whole suite.
DEADLINE = 30.0


@attrs.frozen
class Result:
    """What one run of the command printed, and its exit code."""

    code: int
    out: str
    err: str

    def events(self) -> list[dict[str, Any]]:
        """stdout parsed as JSON lines."""
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


def cli_env(fake: FakeCopyAI | None, **extra: str) -> dict[str, str]:
    """The environment for the command: the fake's URL and key, nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COPYAI_")}
    for name in ("NO_COLOR", "COLUMNS", "LINES"):
        env.pop(name, None)
    if fake is not None:
        env["COPYAI_BASE_URL"] = fake.base_url
        env["COPYAI_API_KEY"] = fake.api_key
    env.update(extra)
    return env


async def start_cli(
    *args: str, env: Mapping[str, str], stdout: int = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    """Start ``python -m copyai_poll ARGS`` without waiting for it."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "copyai_poll",
        *args,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
    )


async def run_cli(*args: str, env: Mapping[str, str]) -> Result:
    """Run ``python -m copyai_poll ARGS`` to the end, the test's loop serving meanwhile."""
    process = await start_cli(*args, env=env)
    out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


def assert_one_clear_message(result: Result, *, secret: str = "") -> None:
    """stderr is one ``copyai-poll`` line or argparse usage, never a traceback or the key."""
    assert "Traceback" not in result.err
    assert "Traceback" not in result.out
    assert "copyai-poll" in result.err
    if secret:
        assert secret not in result.err
        assert secret not in result.out


async def start_runs(fake: FakeCopyAI, *scripts: Script, workflow_id: str = "WF") -> list[str]:
    """Start one run per script through the public client; return their ids."""
    from copyai_poll import CopyAIClient

    fake.queue_scripts(*scripts)
    async with CopyAIClient(api_key=fake.api_key, base_url=fake.base_url) as client:
        return [(await client.start_run(workflow_id, {"Input 1": "x"})).id for _ in scripts]


#: A run that stays in progress for longer than any test lasts.
FOREVER = Script.completes(("NEW", 0.05), ("PROCESSING", 3600))


async def run_cli_head(
    *args: str, env: Mapping[str, str], before_exit: Any = None
) -> tuple[int, str, str]:
    """Run the command as ``copyai-poll ARGS | head -1``: its stdout closes after one line.

    Returns its exit code, the line read, and stderr. ``before_exit`` (async, given the
    process) runs once the pipe is closed, e.g. to send SIGINT.
    """
    read_end, write_end = os.pipe()
    try:
        process = await start_cli(*args, env=env, stdout=write_end)
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        first = await asyncio.wait_for(asyncio.to_thread(reader.readline), DEADLINE)
    # The reader is gone: the command's next write meets a broken pipe.
    if before_exit is not None:
        await before_exit(process)
    assert process.stderr is not None
    err = await asyncio.wait_for(process.stderr.read(), DEADLINE)
    code = await asyncio.wait_for(process.wait(), DEADLINE)
    return code, first.decode(), err.decode()
