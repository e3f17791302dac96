"""Usage, configuration and API errors: one clear message, the right exit code."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from copyai_poll.testing import FakeCopyAI
from tests.cli.cli_helpers import QUICK, assert_one_clear_message, cli_env, run_cli, start_runs

pytestmark = pytest.mark.timeout(60)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("args", "why"),
    [
        ([], "required"),
        (["watch", "WF"], "required"),
        (["frobnicate"], "invalid choice"),
        (["start", "WF", "-i", "no-equals-sign"], "NAME=VALUE"),
        (["runs", "WF", "--limit", "0"], "positive whole number"),
        (["watch", "WF", "R", "--timeout", "-1"], "positive number of seconds"),
        (["get", "WF", "R", "--api-key", "sk-secret-value"], "never taken as an argument"),
    ],
)
async def test_bad_arguments_exit_2(args: list[str], why: str) -> None:
    """Bad arguments give argparse's usage message and exit code 2, never a traceback."""
    result = await run_cli(*args, env=cli_env(None, COPYAI_API_KEY="k"))
    assert 2 == result.code
    assert why in result.err
    assert_one_clear_message(result, secret="sk-secret-value")


@pytest.mark.asyncio
async def test_missing_key_is_one_sentence_and_exit_2(fake: FakeCopyAI) -> None:
    """Without COPYAI_API_KEY or --api-key-file, one line says how to set the key."""
    env = cli_env(fake)
    del env["COPYAI_API_KEY"]
    result = await run_cli("get", "WF", "R", env=env)
    assert 2 == result.code
    assert "copyai-poll: error: no API key: set COPYAI_API_KEY or pass --api-key-file PATH\n" == (
        result.err
    )
    assert "" == result.out


@pytest.mark.asyncio
async def test_key_file_is_read_and_wins_over_the_environment(
    fake: FakeCopyAI, tmp_path: Path
) -> None:
    """--api-key-file supplies the key, whatever COPYAI_API_KEY says."""
    key_file = tmp_path / "key"
    key_file.write_text(fake.api_key + "\n", encoding="utf-8")
    [run_id] = await start_runs(fake, QUICK)
    env = cli_env(fake, COPYAI_API_KEY="wrong")
    result = await run_cli("get", "WF", run_id, "--api-key-file", str(key_file), env=env)
    assert 0 == result.code


@pytest.mark.asyncio
async def test_unreadable_key_file_exits_2(tmp_path: Path) -> None:
    """A key file that cannot be read is a configuration error: one line, exit 2."""
    missing = tmp_path / "nope"
    result = await run_cli("get", "WF", "R", "--api-key-file", str(missing), env=cli_env(None))
    assert 2 == result.code
    assert f"cannot read the API key file {missing}" in result.err
    assert_one_clear_message(result)


@pytest.mark.asyncio
async def test_wrong_key_exits_4_without_showing_it(fake: FakeCopyAI) -> None:
    """A 401 is one sentence naming the fix, exit code 4, and never echoes the key."""
    env = cli_env(fake, COPYAI_API_KEY="sk-wrong-key-123")
    result = await run_cli("watch", "WF", "WRUN-1", "--json", env=env)
    assert 4 == result.code
    [final] = [e for e in result.events() if e["event"] == "final"]
    assert "ERROR" == final["outcome"]
    result = await run_cli("get", "WF", "WRUN-1", env=env)
    assert 4 == result.code
    assert "copyai-poll: the API refused the key (HTTP 401)" in result.err
    assert 1 == len(result.err.splitlines())
    assert_one_clear_message(result, secret="sk-wrong-key-123")


@pytest.mark.asyncio
async def test_unknown_run_exits_4(fake: FakeCopyAI) -> None:
    """`get` of a run the API does not know is an API error: exit code 4."""
    result = await run_cli("get", "WF", "WRUN-missing", env=cli_env(fake))
    assert 4 == result.code
    assert "404" in result.err
    assert_one_clear_message(result)


@pytest.mark.asyncio
async def test_unreachable_server_exits_4() -> None:
    """A server nobody answers at is a connection error after retries: exit code 4."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = cli_env(None, COPYAI_API_KEY="k", COPYAI_BASE_URL=f"http://127.0.0.1:{port}/api")
    result = await run_cli("get", "WF", "R", env=env)
    assert 4 == result.code
    assert "copyai-poll: cannot reach the API" in result.err
    assert_one_clear_message(result)


@pytest.mark.asyncio
async def test_insecure_base_url_is_a_configuration_error() -> None:
    """A plain-http base URL off this machine is refused before any request: exit 2."""
    env = cli_env(None, COPYAI_API_KEY="k", COPYAI_BASE_URL="http://example.com/api")
    result = await run_cli("get", "WF", "R", env=env)
    assert 2 == result.code
    assert "--allow-insecure-http" in result.err  # the CLI's flag, not the Python argument
    assert_one_clear_message(result, secret="k\n")
