"""Ctrl-C in-process: the command is cancelled to sum up, and a stuck one cannot hold on."""

from __future__ import annotations

import asyncio
import io
import os
import signal
from typing import Any

import pytest

from copyai_poll import _cli
from copyai_poll._cli_display import DisplayLogHandler, Output
from copyai_poll._cli_options import Options

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Replaces the hard exit with an event, and makes the grace short."""
    event = asyncio.Event()
    monkeypatch.setattr(_cli, "_exit_now", event.set)
    monkeypatch.setattr(_cli, "INTERRUPT_GRACE", 0.2)
    return event


async def run_with(monkeypatch: pytest.MonkeyPatch, command: Any) -> asyncio.Task[int]:
    """`_cli._run` of `watch` with ``command`` in its place, started in a task."""
    monkeypatch.setitem(_cli._COMMANDS, "watch", command)
    options = Options.parse(["watch", "WF", "R"])
    task = asyncio.create_task(_cli._run(options, DisplayLogHandler(50), Output(io.StringIO())))
    await asyncio.sleep(0.05)  # the command is running, the handler installed
    return task


@pytest.mark.asyncio
async def test_ctrl_c_cancels_the_command_and_gives_130(
    monkeypatch: pytest.MonkeyPatch, exits: asyncio.Event
) -> None:
    """The first SIGINT cancels the command; its cleanup runs; the code is 130."""
    cleaned = []

    async def command(*_: Any) -> int:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.append(True)
        return 0

    task = await run_with(monkeypatch, command)
    os.kill(os.getpid(), signal.SIGINT)
    assert 130 == await asyncio.wait_for(task, 10)
    assert ([True], False) == (cleaned, exits.is_set())


@pytest.mark.asyncio
async def test_a_command_stuck_after_ctrl_c_is_left_after_the_grace(
    monkeypatch: pytest.MonkeyPatch, exits: asyncio.Event
) -> None:
    """A command that does not end after SIGINT is exited without it, after the grace."""

    async def stuck(*_: Any) -> int:
        while not exits.is_set():
            try:
                await exits.wait()
            except asyncio.CancelledError:
                continue  # a shutdown that hangs
        return 0

    task = await run_with(monkeypatch, stuck)
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.wait_for(exits.wait(), 10)
    await asyncio.wait_for(task, 10)


@pytest.mark.asyncio
async def test_a_second_ctrl_c_exits_at_once(
    monkeypatch: pytest.MonkeyPatch, exits: asyncio.Event
) -> None:
    """The second SIGINT exits at once, without waiting for the grace."""
    monkeypatch.setattr(_cli, "INTERRUPT_GRACE", 3600.0)

    async def stuck(*_: Any) -> int:
        while not exits.is_set():
            try:
                await exits.wait()
            except asyncio.CancelledError:
                continue
        return 0

    task = await run_with(monkeypatch, stuck)
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.sleep(0.05)
    assert not exits.is_set()
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.wait_for(exits.wait(), 10)
    await asyncio.wait_for(task, 10)
