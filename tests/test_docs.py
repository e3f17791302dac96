"""Every Python example in README.md and docs/ runs, so that none can rot.

A ```python block containing `def test_` is a pytest file and runs under pytest (with the
bundled plugin's fixtures); any other ```python block is a script and runs as one. Both run
in a subprocess, offline: COPYAI_BASE_URL and COPYAI_API_KEY point at the bundled fake server
on 127.0.0.1, so examples written for the real API run unchanged.
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


def examples() -> list[tuple[str, str]]:
    """(id, source) of every ```python block of the docs."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{path.relative_to(ROOT)}:{line}", match.group(1)))
    return found


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
    """The collector finds the examples (a broken fence pattern would silently run none)."""
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize(("where", "source"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_runs(where: str, source: str, tmp_path: Path, fake_api: dict[str, str]) -> None:
    """The example runs to completion without an error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COPYAI_")}
    env.update(fake_api)
    env["PYTHONWARNINGS"] = "error::ResourceWarning"
    if "def test_" in source:
        (tmp_path / "test_example.py").write_text(source, encoding="utf-8")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        command += ["-o", "asyncio_default_fixture_loop_scope=function", str(tmp_path)]
    else:
        command = [sys.executable, "-c", source]
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert 0 == result.returncode, f"{where} failed:\n{result.stdout}\n{result.stderr}"
