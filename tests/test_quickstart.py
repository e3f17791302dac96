"""The quickstart works as written: its commands, copied in order, await a run with progress.

The test reads docs/quickstart.md, saves its program as `quickstart.py`, starts the fake
server with the page's command and runs the page's second terminal's commands in bash,
as a newcomer would. Two things differ from a newcomer's machine: the package is already
installed in this environment (CI installs the built wheel in a clean venv separately,
see .ci/run), and port 8080 becomes a free port, so parallel tests cannot collide.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parent.parent / "docs" / "quickstart.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(kind: str) -> list[str]:
    """The page's code blocks of one kind (console, python, text), in order."""
    return [body for k, body in BLOCK.findall(PAGE.read_text(encoding="utf-8")) if k == kind]


def commands(block: str) -> list[str]:
    """The commands of a console block, without their `$ ` prompt."""
    return [line[2:] for line in block.splitlines() if line.startswith("$ ")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_install_is_one_pip_command() -> None:
    """The install step creates a venv and installs the package by its PyPI name."""
    assert ["python -m venv .venv", ". .venv/bin/activate", "pip install copyai-poll"] == (
        commands(blocks("console")[0])
    )


def test_quickstart_as_written(tmp_path: Path) -> None:
    """The page's program, run with the page's commands, prints its progress and the output."""
    install, serve, run, *_ = [commands(block) for block in blocks("console")]
    (program,) = blocks("python")
    (tmp_path / "quickstart.py").write_text(program, encoding="utf-8")
    port = str(free_port())
    (server_command,) = serve
    assert server_command.startswith("python -m copyai_poll.testing --port 8080")
    assert run[0] == install[1]  # the second terminal activates the same venv
    # The venv is this one: its activate script is where the page says, in the directory.
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "activate").write_text(
        f'export PATH="{Path(sys.executable).parent}:$PATH"\n', encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("COPYAI_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    server = subprocess.Popen(
        ["bash", "-c", "exec " + server_command.replace("8080", port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert "serving at" in server.stdout.readline()
        script = "set -e\n" + "\n".join(command.replace("8080", port) for command in run)
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stdout.close()
    assert 0 == result.returncode, result.stderr
    lines = result.stdout.splitlines()
    shown = [line.split()[1] for line in lines if re.match(r"\s*\d+\.\d+s ", line)]
    assert ["NEW", "PROCESSING", "COMPLETE"] == shown
    assert lines[0].startswith("started WRUN-")
    assert "output: {'Output 1': 'Demo draft #1'}" == lines[-1]
    # What the page shows is what a reader gets, timings aside.
    (expected,) = blocks("text")
    assert [re.sub(r"[\d.]+s|\d+ polls", "", x) for x in expected.splitlines()[1:]] == [
        re.sub(r"[\d.]+s|\d+ polls", "", x) for x in lines[1:]
    ]
