"""The live table's layout, without a terminal: widths, overflow, the summary's list."""

from __future__ import annotations

import io
import os
import sys

import pytest

from copyai_poll._cli_display import (
    LiveDisplay,
    Output,
    RunView,
    not_completed_lines,
    shorten_id,
)

RUN_ID = "WRUN-84e56597-ebaf-4b49-a98c-75cacd4aecaa"


def table(views: list[RunView], columns: int, rows: int = 24) -> LiveDisplay:
    """A live display of ``views`` on a terminal of the given size, writing nowhere."""
    size = os.terminal_size((columns, rows))
    display = LiveDisplay(Output(io.StringIO()), sys.stderr, color=False, size=lambda: size)
    display._views = views
    return display


def view(index: int, status: str = "PROCESSING", outcome: str | None = None) -> RunView:
    """A run at a fixed moment, ``outcome`` None while it is still waited for."""
    v = RunView(workflow_id="WF", run_id=f"{RUN_ID[:-2]}{index:02d}", clock=lambda: 10.0)
    v.status, v.polls = status, 3
    if outcome is not None:
        v.finish(outcome, None, "boom" if outcome == "FAILED" else "")
    return v


@pytest.mark.parametrize("columns", [24, 30, 40, 60, 80, 120])
@pytest.mark.parametrize("status", ["NEW", "PROCESSING", "RETRYING", "COMPLETE"])
def test_rows_fit_and_keep_the_status_whole(columns: int, status: str) -> None:
    """At any width a row fits in it, with its status whole and some of its id."""
    v = view(1, status)
    v.retries, v.not_found_since = 2, None
    [row] = table([v], columns).frame()
    assert len(row) <= columns - 1
    assert f" {status}" in row
    assert row.startswith("⠋ WRUN")


def test_a_wide_terminal_shows_the_whole_id_and_the_note() -> None:
    """With room, the id is whole and the 404 grace is spelled out."""
    v = view(1, "-")
    v.not_found()
    [row] = table([v], 140).frame()
    assert f"⠋ {RUN_ID[:-2]}01 404 " in row
    assert row.endswith("not visible yet, 0 s of 30  3 polls")


def test_more_runs_than_rows_shows_the_ones_needing_eyes_first() -> None:
    """Runs still going or gone wrong come before completed ones; a last line counts the rest."""
    views = [view(i, "COMPLETE", "COMPLETE") for i in range(20)]
    views[5] = view(5, "PROCESSING")
    views[17] = view(17, "FAILED", "FAILED")
    display = table(views, 80, rows=6)
    frame = display.frame()
    assert 4 == len(frame)  # the height less two
    assert [views[0].run_id[-2:], "05", "17"] == [row.split()[1][-2:] for row in frame[:3]]
    assert "  … and 17 more: 17 complete, 0 other" == frame[-1]
    assert 20 == len(display.frame(everything=True))


def test_the_summary_lists_every_run_that_did_not_complete() -> None:
    """Failed, timed-out and interrupted runs are listed by their full ids; completed not."""
    views = [
        view(1, "COMPLETE", "COMPLETE"),
        view(2, "FAILED", "FAILED"),
        view(3, "NEW", "TIMEOUT"),
        view(4, "PROCESSING", "INTERRUPTED"),
    ]
    lines = not_completed_lines(views)
    assert "not completed:" == lines[0]
    assert [v.run_id for v in views[1:]] == [line.split()[1] for line in lines[1:]]
    assert "  ⌛ " + views[2].run_id + "  TIMEOUT (last status NEW)" == lines[2]
    assert [] == not_completed_lines(views[:1])


@pytest.mark.parametrize("width", [13, 22, 40])
def test_shorten_id_keeps_its_start_and_end(width: int) -> None:
    """An id cut to a width keeps its start and its end around an ellipsis."""
    start, end = shorten_id(RUN_ID, width).split("…")
    assert width == len(start) + 1 + len(end)
    assert RUN_ID.startswith(start)
    assert RUN_ID.endswith(end)
    assert len(end) >= 4


def test_shorten_id_leaves_an_id_that_fits() -> None:
    """An id no longer than the width is shown whole."""
    assert RUN_ID == shorten_id(RUN_ID, len(RUN_ID))
