"""`copyai-poll demo` in a pseudo-terminal: the screen it owns, at 80 and 40 columns."""

from __future__ import annotations

import re
import sys

import pexpect
import pytest

from copyai_poll.testing import demo_scripts
from tests.cli.cli_helpers import cli_env

pytestmark = pytest.mark.timeout(240)

#: The demo takes about 10 s; a busy 2-core machine running the suite may triple that.
DEMO_DEADLINE = 150
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CURSOR_UP = re.compile(r"\x1b\[\d+A")
ROW = re.compile(r"^([✓✗⌛!■]) (\S+) +(\S+)")
FAILURES = sum(script.final == "FAILED" for script in demo_scripts(0, 20))


def run_demo(columns: int, *args: str) -> str:
    """Everything `copyai-poll demo ARGS` wrote to a terminal ``columns`` wide."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "copyai_poll", "demo", *args],
        env=cli_env(None, NO_COLOR="1", TERM="xterm"),
        encoding="utf-8",
        timeout=DEMO_DEADLINE,
        dimensions=(24, columns),
    )
    try:
        child.expect(pexpect.EOF)
        shown = child.before
    finally:
        child.close()
    assert 0 == child.exitstatus, shown[-2000:]
    return shown


def after_last_redraw(shown: str) -> list[str]:
    """The final table and the summary below it, as text lines without escapes."""
    last = list(CURSOR_UP.finditer(shown))[-1].end()
    text = ANSI.sub("", shown[last:]).replace("\r", "")
    return [line for line in text.split("\n") if line.strip()]


def drawn_rows(shown: str) -> list[str]:
    """Every row ever drawn of the live table (each starts with a line clear)."""
    return [
        ANSI.sub("", part.split("\r")[0].split("\n")[0]) for part in shown.split("\x1b[2K")[1:]
    ]


@pytest.mark.parametrize("columns", [80, 40])
def test_demo_owns_its_screen(columns: int) -> None:
    """No log line without -v; rows fit with the status whole; the summary has every run.

    The retried counts of the rows add up to the requests the summary says were
    retried, which is the number of faults the fake injected: one RetryEvent each.
    """
    shown = run_demo(columns)
    assert "copyai-poll: " not in shown  # no log record of any level
    assert "Traceback" not in shown

    for row in drawn_rows(shown):
        assert len(row) <= columns - 1, row
    lines = after_last_redraw(shown)
    rows = [ROW.match(line) for line in lines]
    finals = [m for m in rows if m is not None and not line_is_listed(m.string)]
    assert 20 == len(finals)
    assert {"COMPLETE", "FAILED"} >= {m.group(3) for m in finals}
    assert FAILURES == sum(m.group(1) == "✗" for m in finals)
    assert all(m.group(3) == ("FAILED" if m.group(1) == "✗" else "COMPLETE") for m in finals)

    [summary] = [line for line in lines if line.startswith("20 runs: ")]
    assert f"20 runs: {20 - FAILURES} complete, {FAILURES} failed;" in summary
    retried = int(re.search(r"(\d+) requests retried", summary).group(1))
    per_row = sum(int(n) for m in finals for n in re.findall(r"↻(\d+)", m.string))
    [faults_line] = [line for line in lines if "faults injected:" in line]
    injected = sum(int(n) for n in re.findall(r": (\d+)", faults_line.split("injected", 1)[1]))
    assert injected >= 3  # a 503, a 429 and a truncated body at the least
    assert (injected, injected) == (retried, per_row)

    listed = [line for line in lines if line_is_listed(line)]
    assert FAILURES == len(listed)  # every run that did not complete, in full
    assert all(re.match(r"^  ✗ WRUN-[0-9a-f-]{36}  FAILED: ", line) for line in listed)


def line_is_listed(line: str) -> bool:
    """A line of the summary's list of runs that did not complete."""
    return line.startswith("  ")


def test_verbose_log_lines_go_above_the_table() -> None:
    """With -v log records appear, each after the table was cleared, never inside a row."""
    shown = run_demo(80, "-v")
    positions = [m.start() for m in re.finditer("copyai-poll: (INFO|WARNING)", shown)]
    assert positions
    for at in positions:
        before = shown[:at]
        cleared = before.endswith("\x1b[J") or before.endswith("\n")
        assert cleared, repr(shown[max(0, at - 80) : at + 40])
        assert not re.search(r"\x1b\[2K[^\n]*$", before), "a log line inside a table row"
