"""The pytest plugin's fixtures: a started fake, and a client pointed at it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from copyai_poll import CopyAIClient, PollPolicy
from copyai_poll.testing import FakeCopyAI, ManualClock, Script

CLOCK = ManualClock()


@pytest.fixture
def copyai_fake_options() -> dict[str, Any]:
    """Overrides the plugin's options: this module's fakes use a manual clock."""
    return {"clock": CLOCK, "script": Script.completes(("PROCESSING", 1), output={"a": "b"})}


@pytest.mark.asyncio
async def test_fixture_serves_with_overridden_options(copyai_fake: FakeCopyAI) -> None:
    """copyai_fake is a started fake built from copyai_fake_options."""
    assert (CLOCK, True) == (copyai_fake.clock, copyai_fake.base_url.endswith("/api"))


@pytest.mark.asyncio
async def test_client_fixture_talks_to_the_fake(
    copyai_fake: FakeCopyAI, copyai_client: CopyAIClient
) -> None:
    """copyai_client is a CopyAIClient pointed at copyai_fake."""
    started = await copyai_client.start_run("WCFG-1", {"Input 1": "x"})
    CLOCK.advance(1)

    final = await copyai_client.poll_until_done(
        "WCFG-1", started.id, policy=PollPolicy(initial=0.01, maximum=0.01)
    )

    assert ("COMPLETE", {"a": "b"}) == (final.status, dict(final.output))
    assert [started.id] == copyai_fake.run_ids()


USER_TEST = """
    import pytest
    from copyai_poll import CopyAIClient

    @pytest.mark.asyncio
    async def test_my_app(copyai_fake):
        async with CopyAIClient(api_key=copyai_fake.api_key, base_url=copyai_fake.base_url) as c:
            run = await c.start_run("WCFG-1", {"Input 1": "x"})
        assert run.id in copyai_fake.run_ids()
"""


def test_plugin_is_registered_by_entry_point(tmp_path: Path) -> None:
    """A user's test anywhere gets copyai_fake from the installed plugin, in under 10 lines."""
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_TEST))

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert 0 == result.returncode, result.stdout + result.stderr
    assert len(USER_TEST.strip().splitlines()) < 10
