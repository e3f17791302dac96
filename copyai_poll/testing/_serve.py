"""Serve a fake until told to stop: the engine of ``python -m copyai_poll.testing``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

from ._server import FakeCopyAI


def _say(line: str) -> None:
    print(line, flush=True)


async def serve(
    server: FakeCopyAI | None = None,
    *,
    stop: asyncio.Event | None = None,
    announce: Callable[[str], None] | None = _say,
    on_ready: Callable[[FakeCopyAI], None] | None = None,
) -> None:
    """Serve ``server`` until ``stop`` is set, or until SIGINT/SIGTERM.

    Args:
        server: The fake to serve; by default ``FakeCopyAI(port=8080)``.
        stop: Set it to stop. Without one, SIGINT and SIGTERM stop the server.
        announce: Called with each line saying where the server is and its key; None
            for silence.
        on_ready: Called with the started server, for callers that want its address
            as data rather than as lines of text.
    """
    server = server if server is not None else FakeCopyAI(port=8080)
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if stop is None:
        stop = asyncio.Event()
        installed = _on_signals(loop, stop.set)
    try:
        async with server:
            if announce is not None:
                announce(f"Fake Copy.ai API serving at {server.base_url}")
                announce(f"API key: {server.api_key}")
            if on_ready is not None:
                on_ready(server)
            await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _on_signals(
    loop: asyncio.AbstractEventLoop, callback: Callable[[], None]
) -> list[signal.Signals]:
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Windows' loops cannot; there Ctrl-C raises KeyboardInterrupt instead.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, callback)
            installed.append(sig)
    return installed
