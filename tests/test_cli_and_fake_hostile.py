"""Hostile and odd use of the CLI, the fake server and its command: one clear answer, never a traceback."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pexpect
import pytest
import pytest_asyncio
from aiohttp import web

from copyai_poll import CopyAIClient
from copyai_poll.testing import FakeCopyAI, Script

pytestmark = pytest.mark.timeout(60)

DEADLINE = 30.0
KEY = "review-key"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeCopyAI]:
    """A fake server in the test's loop whose runs finish at once."""
    async with FakeCopyAI(api_key=KEY, script=Script.completes(("NEW", 0.01))) as server:
        yield server


def _env(base_url: str | None, key: str | None = KEY, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COPYAI_")}
    env.pop("NO_COLOR", None)
    if base_url is not None:
        env["COPYAI_BASE_URL"] = base_url
    if key is not None:
        env["COPYAI_API_KEY"] = key
    env.update(extra)
    return env


async def _cli(
    *args: str | bytes, env: Mapping[str, str], stdout: Any = asyncio.subprocess.PIPE
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "copyai_poll",
        *args,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
    )
    out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode is not None
    return process.returncode, (out or b"").decode(), err.decode()


async def _start_run(fake: FakeCopyAI) -> str:
    async with CopyAIClient(api_key=fake.api_key, base_url=fake.base_url) as client:
        return (await client.start_run("WF", {"Input 1": "x"})).id


def _strict_json(line: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


# -- A. the CLI ---------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "args",
    [["start", "", "-i", "a=1"], ["get", "WF", ""], ["watch", "WF", ""], ["watch", "", "R"]],
    ids=["start-empty-workflow", "get-empty-run", "watch-empty-run", "watch-empty-workflow"],
)
async def test_empty_id_is_a_usage_error_not_a_traceback(
    fake: FakeCopyAI, args: list[str]
) -> None:
    """An empty workflow or run id exits 2 with one sentence, never a traceback."""
    code, _, err = await _cli(*args, env=_env(fake.base_url))
    assert "Traceback" not in err
    assert 2 == code


@pytest.mark.asyncio
async def test_undecodable_run_id_is_not_a_traceback(fake: FakeCopyAI) -> None:
    """A run id that is not valid UTF-8 (bytes from a shell) is an error message, not a traceback."""
    code, _, err = await _cli("get", "WF", b"\xff", env=_env(fake.base_url))
    assert "Traceback" not in err
    assert code in (2, 4)


@pytest.mark.asyncio
@pytest.mark.parametrize("value", ["inf", "1e400"])
async def test_infinite_poll_initial_is_a_usage_error(value: str) -> None:
    """--poll-initial inf is refused like any bad argument: exit 2, no traceback."""
    code, _, err = await _cli("runs", "WF", "--poll-initial", value, env=_env(None))
    assert "Traceback" not in err
    assert 2 == code


@pytest.mark.asyncio
@pytest.mark.parametrize("command", ["runs", "get", "start-wait"])
async def test_closed_stdout_is_not_a_broken_pipe_traceback(
    fake: FakeCopyAI, command: str
) -> None:
    """With stdout closed early (`copyai-poll runs WF | head -1`), no BrokenPipe traceback."""
    run_id = await _start_run(fake)
    args = {
        "runs": ["runs", "WF"],
        "get": ["get", "WF", run_id],
        "start-wait": ["start", "WF", "-i", "a=1", "--wait"],
    }[command]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line: deterministic EPIPE
    try:
        _, _, err = await _cli(*args, env=_env(fake.base_url), stdout=write_end)
    finally:
        os.close(write_end)
    assert "Traceback" not in err
    assert "BrokenPipeError" not in err


@pytest.mark.asyncio
@pytest.mark.parametrize("port", ["99999", "-1"])
async def test_fake_server_port_out_of_range_is_a_usage_error(port: str) -> None:
    """`fake-server --port 99999` exits 2 with one sentence, never an OverflowError traceback."""
    code, _, err = await _cli("fake-server", "--port", port, env=_env(None, key=None))
    assert "Traceback" not in err
    assert 2 == code


@pytest.mark.asyncio
async def test_fake_server_json_prints_only_json_on_stdout() -> None:
    """`fake-server --json` (the option is accepted) prints only JSON lines on stdout."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "copyai_poll",
        "fake-server",
        "--port",
        "0",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(None, key=None),
    )
    assert process.stdout is not None
    try:
        first = await asyncio.wait_for(process.stdout.readline(), DEADLINE)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.communicate(), DEADLINE)
    if process.returncode == 2 and not first:
        return  # refusing --json outright would be fine too
    _strict_json(first.decode())


@pytest.mark.asyncio
async def test_get_json_prints_strict_json_even_for_a_nan_in_the_body() -> None:
    """`get --json` never prints NaN (not JSON) on stdout, whatever the server sent."""
    body = (
        b'{"status": "success", "data": {"id": "WRUN-1", "status": "COMPLETE",'
        b' "output": {"score": NaN}}}'
    )

    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/workflow/WF/run/WRUN-1", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/api"
        _, out, err = await _cli("get", "WF", "WRUN-1", "--json", env=_env(base_url))
    finally:
        await runner.cleanup()
    assert "Traceback" not in err
    for line in out.splitlines():
        _strict_json(line)


@pytest.mark.asyncio
async def test_key_file_with_a_utf8_bom_is_accepted(fake: FakeCopyAI, tmp_path: Path) -> None:
    """A key file saved with a UTF-8 BOM (Windows editors) is read as the key without it."""
    key_file = tmp_path / "key"
    key_file.write_bytes(b"\xef\xbb\xbf" + KEY.encode() + b"\r\n")
    code, _, err = await _cli(
        "runs", "WF", "--api-key-file", str(key_file), env=_env(fake.base_url, key=None)
    )
    assert "Traceback" not in err
    assert 0 == code, err


@pytest.mark.asyncio
async def test_live_display_never_cuts_a_colour_escape_in_half(fake: FakeCopyAI) -> None:
    """A row cut to the terminal's width keeps its colour reset, so colour never bleeds."""
    run_id = await _start_run(fake)
    await asyncio.sleep(0.05)  # the run's 0.01 s script is over: COMPLETE at the first poll
    child = pexpect.spawn(
        sys.executable,
        ["-m", "copyai_poll", "watch", "WF", run_id],
        env=_env(fake.base_url, TERM="xterm"),
        encoding="utf-8",
        timeout=DEADLINE,
        dimensions=(24, 62),  # a 41-character run id puts the reset at column 61
    )
    try:
        await asyncio.to_thread(child.expect, pexpect.EOF)
        shown = child.before
    finally:
        await asyncio.to_thread(child.close)
    assert 0 == child.exitstatus
    for line in shown.split("\n"):
        if "\x1b[32m" in line:
            assert "\x1b[0m" in line.split("\x1b[32m", 1)[1], repr(line)


# -- B. the fake server -------------------------------------------------------------------


async def _post(fake: FakeCopyAI, path: str, data: bytes) -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            fake.base_url + path,
            data=io.BytesIO(data),
            headers={"x-copy-ai-api-key": fake.api_key, "Content-Type": "application/json"},
        ) as response,
    ):
        return response.status, response.content_type, await response.read()


def _assert_error_envelope(status: int, content_type: str, body: bytes) -> None:
    assert 400 <= status < 500, (status, body[:200])
    assert "application/json" == content_type, body[:200]
    assert "error" == json.loads(body)["status"]


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/workflow/WF/run", "/webhook"])
async def test_fake_answers_a_deeply_nested_body_with_an_error_envelope(
    fake: FakeCopyAI, path: str
) -> None:
    """A deeply nested JSON body is a 4xx Copy.ai error envelope, not a 500 text page."""
    deep = b"[" * 100_000 + b"]" * 100_000
    _assert_error_envelope(*await _post(fake, path, deep))


@pytest.mark.asyncio
async def test_fake_answers_an_oversized_body_with_an_error_envelope(fake: FakeCopyAI) -> None:
    """A body over the size limit is a 4xx JSON error envelope, not aiohttp's text/plain 413."""
    huge = json.dumps({"startVariables": {"Input 1": "x" * (2 * 1024 * 1024)}}).encode()
    _assert_error_envelope(*await _post(fake, "/workflow/WF/run", huge))


@pytest.mark.asyncio
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_fake_refuses_non_json_constants_in_a_start(fake: FakeCopyAI, constant: str) -> None:
    """A start body with NaN/Infinity (not JSON) is a 422, so the fake never serves NaN back."""
    body = f'{{"startVariables": {{"Input 1": {constant}}}}}'.encode()
    status, _, _ = await _post(fake, "/workflow/WF/run", body)
    assert 422 == status


def test_testing_command_on_a_busy_port_is_not_a_traceback() -> None:
    """`python -m copyai_poll.testing --port BUSY` says the port is taken, without a traceback."""
    import subprocess

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "copyai_poll.testing", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
    assert "Traceback" not in result.stderr
    assert 0 != result.returncode
