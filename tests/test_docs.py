"""Every Python example in README.md and docs/ runs, so that none can rot.

A ```python block containing `def test_` is a pytest file and runs under pytest (with the
bundled plugin's fixtures, the pytest configuration docs/testing.md documents, and every
warning an error); any other ```python block is a script and runs as one. Both run in a
subprocess, offline: COPYAI_BASE_URL and COPYAI_API_KEY point at the bundled fake server
on 127.0.0.1, so examples written for the real API run unchanged, and an example that
reads REDIS_URL gets a real redis-server started for the test session.

Why a small runner of our own rather than Sybil or pytest-examples: every example here
is a whole program (or a whole test module) run in a fresh process against a server in
another process, which is what a reader does with it; Sybil runs snippets inside the
test process, where an example's `asyncio.run` would meet pytest-asyncio's loop and
its leftovers would leak into the suite. The runner is this one short file, and
authors have no format to learn beyond a plain ```python fence.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
TOML_FENCE = re.compile(r"^```toml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def doc_files() -> list[Path]:
    """README.md and every page of the site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def examples() -> list[tuple[str, str]]:
    """(id, source) of every ```python block of the docs."""
    found = []
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{path.relative_to(ROOT)}:{line}", match.group(1)))
    return found


def documented_pytest_config() -> str:
    """The pytest configuration docs/testing.md tells users to add."""
    text = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    (config,) = [m.group(1) for m in TOML_FENCE.finditer(text) if "[tool.pytest" in m.group(1)]
    return config


EXAMPLES = examples()


@pytest.fixture(scope="module")
def fake_api() -> Iterator[dict[str, str]]:
    """A fake Copy.ai API in a subprocess, and the environment that points at it."""
    command = [sys.executable, "-m", "copyai_poll.testing", "--port", "0", "--api-key", "docs"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        announced = server.stdout.readline()
        base_url = announced.rsplit(" ", 1)[-1].strip()
        assert base_url.startswith("http://127.0.0.1:"), announced
        yield {"COPYAI_BASE_URL": base_url, "COPYAI_API_KEY": "docs"}
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()


def test_the_docs_have_examples() -> None:
    """The collector finds the examples of every page (a broken pattern would run none)."""
    pages = {where.split(":")[0] for where, _ in EXAMPLES}
    assert len(EXAMPLES) >= 30
    assert {"README.md", "docs/quickstart.md", "docs/recipes/scale-out.md"} <= pages


def test_the_pytest_config_is_one_line() -> None:
    """The documented configuration is one setting, the one pytest-asyncio asks for."""
    lines = documented_pytest_config().strip().splitlines()
    assert [
        "[tool.pytest.ini_options]",
        'asyncio_default_fixture_loop_scope = "function"',
    ] == lines


@pytest.mark.parametrize(("where", "source"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_runs(
    where: str,
    source: str,
    tmp_path: Path,
    fake_api: dict[str, str],
    request: pytest.FixtureRequest,
) -> None:
    """The example runs to completion without an error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COPYAI_")}
    env.update(fake_api)
    env["PYTHONWARNINGS"] = "error::ResourceWarning"
    if "REDIS_URL" in source:
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
    if "def test_" in source:
        (tmp_path / "pyproject.toml").write_text(documented_pytest_config(), encoding="utf-8")
        (tmp_path / "test_example.py").write_text(source, encoding="utf-8")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"]
    else:
        command = [sys.executable, "-c", source]
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert 0 == result.returncode, f"{where} failed:\n{result.stdout}\n{result.stderr}"
