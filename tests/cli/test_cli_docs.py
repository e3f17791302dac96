"""docs/cli.md shows the live display as this code draws it (regenerated, never stale).

Run with ``COPYAI_POLL_WRITE_DOCS=1`` to rewrite the capture after changing the display.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

from copyai_poll import RetryEvent, ServerError
from copyai_poll._cli_display import (
    LiveDisplay,
    Output,
    RunView,
    not_completed_lines,
    summary_line,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
BEGIN, END = "<!-- live-display: begin -->", "<!-- live-display: end -->"
WF = "WCFG-84e56597-ebaf-4b49-a98c-75cacd4aecaa"
IDS = [
    "WRUN-0b1c5e2a-6f3d-4c1e-9a7b-2d8e4f6a1c35",
    "WRUN-77aa3c19-0e5b-47d2-b8f6-9c1d2e3f4a5b",
    "WRUN-3e9f0d7c-a1b2-4c3d-8e9f-0a1b2c3d4e5f",
    "WRUN-c4d5e6f7-0a1b-4c2d-9e3f-4a5b6c7d8e9f",
    "WRUN-5f6a7b8c-9d0e-4f1a-8b2c-3d4e5f6a7b8c",
    "WRUN-9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
]


class Clock:
    """A clock the capture sets by hand."""

    now = 100.0

    def __call__(self) -> float:
        return self.now


def retry(run_id: str, attempt: int) -> RetryEvent:
    """A 503 retried for ``run_id``."""
    error = ServerError("GET answered 503", status=503)
    return RetryEvent(
        method="GET",
        path="/",
        workflow_id=WF,
        run_id=run_id,
        attempt=attempt,
        wait=1.0,
        error=error,
    )


def capture(columns: int) -> str:
    """The live table as drawn at the moment below, then the summary once all ended."""
    clock = Clock()
    views = [RunView(workflow_id=WF, run_id=run_id, clock=clock) for run_id in IDS]
    done, failed, going, waiting, failing, retrying = views
    clock.now = 103.4
    done.polls, done.status = 5, "COMPLETE"
    done.retried(retry(done.run_id, 1))
    done.finish("COMPLETE", None)
    clock.now = 105.1
    failed.polls, failed.status = 6, "FAILED"
    failed.finish("FAILED", None, '{"message": "Step 2 failed: timeout"}')
    going.polls, going.status = 7, "PROCESSING"
    waiting.not_found()
    failing.polls, failing.status = 2, "NEW"
    clock.now = 104.0
    failing.failed("HTTP 503")
    retrying.polls, retrying.status = 4, "RETRYING"
    retrying.retried(retry(retrying.run_id, 1))
    clock.now = 112.3

    size = os.terminal_size((columns, 24))
    display = LiveDisplay(Output(io.StringIO()), sys.stderr, color=False, size=lambda: size)
    display._views = views
    live = display.frame()
    clock.now = 131.0
    going.status = "COMPLETE"
    going.finish("COMPLETE", None)
    waiting.polls, waiting.status = 5, "COMPLETE"
    waiting.not_found_since = None
    waiting.finish("COMPLETE", None)
    failing.failing_since = None
    failing.finish("TIMEOUT", None, "no end after 31.0s")
    retrying.finish("COMPLETE", None)
    retrying.status = "COMPLETE"
    ended = [*display.frame(everything=True), summary_line(views, 2), *not_completed_lines(views)]
    return "\n".join(
        [
            "$ copyai-poll watch ...      # while it runs",
            *live,
            "",
            "# once every run ended",
            *ended,
        ]
    )


def expected_block() -> str:
    """The docs' block: both widths."""
    parts = [BEGIN]
    for columns in (80, 40):
        parts += [f"At {columns} columns:", "", "```text", capture(columns), "```", ""]
    return "\n".join([*parts[:-1], END])


def test_the_docs_show_the_live_display_as_drawn() -> None:
    """The capture in docs/cli.md is what the display draws now, at 80 and 40 columns."""
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    if os.environ.get("COPYAI_POLL_WRITE_DOCS"):
        text = text[:start] + expected_block() + text[end:]
        DOC.write_text(text, encoding="utf-8")
        end = start + len(expected_block())
    assert expected_block() == text[start:end], "run with COPYAI_POLL_WRITE_DOCS=1"
