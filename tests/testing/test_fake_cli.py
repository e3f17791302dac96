"""``python -m copyai_poll.testing`` serves until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

import aiohttp
import pytest

from tests.testing.fake_helpers import Api


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.asyncio
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_module_serves_until_signalled(sig: signal.Signals) -> None:
    """The module prints its URL and key, answers requests, and exits 0 on a signal."""
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "copyai_poll.testing",
        "--port",
        str(port),
        "--api-key",
        "cli-key",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(15):
            url_line = (await process.stdout.readline()).decode()  # type: ignore[union-attr]
            key_line = (await process.stdout.readline()).decode()  # type: ignore[union-attr]
            async with aiohttp.ClientSession(headers={"x-copy-ai-api-key": "cli-key"}) as s:
                run_id = await Api(s, f"http://127.0.0.1:{port}/api").start()
            process.send_signal(sig)
            _, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert f"http://127.0.0.1:{port}/api" in url_line
    assert "API key: cli-key\n" == key_line
    assert run_id.startswith("WRUN-")
    assert (0, b"") == (process.returncode, err)
