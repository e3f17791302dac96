"""How ``copyai-poll`` waits for runs and shows it: a live table, plain lines, or JSON.

`Watcher` runs one `poll_until_done` per run and turns its callbacks (and the library's
retry warnings) into calls on a `Display` (`start`, `status`, `retry`, `final`,
`summary`); no display polls or decides anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from . import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    StatusChange,
    WorkflowRun,
)
from ._config import API_KEY_ENV

if TYPE_CHECKING:
    pass

#: The final outcomes of one run, as `RunView.outcome` and the JSON ``final`` events name them.
OUTCOMES = ("COMPLETE", "FAILED", "TIMEOUT", "ERROR", "INTERRUPTED")

#: The exit code of each outcome; several runs exit with the highest.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_API = 4
EXIT_INTERRUPTED = 130
EXIT_FOR = {
    "COMPLETE": EXIT_OK,
    "FAILED": EXIT_FAILED,
    "TIMEOUT": EXIT_TIMEOUT,
    "ERROR": EXIT_API,
    "INTERRUPTED": EXIT_INTERRUPTED,
}

_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_MARKS = {"COMPLETE": "✓", "FAILED": "✗", "TIMEOUT": "⌛", "ERROR": "!", "INTERRUPTED": "■"}
_COLORS = {"COMPLETE": "32", "FAILED": "31", "TIMEOUT": "33", "ERROR": "31", "RETRYING": "33"}
_TICK = 0.1


@attrs.define(kw_only=True)
class RunView:
    """Where one watched run stands, as far as the display knows."""

    workflow_id: str
    run_id: str
    started: float = attrs.field(factory=time.monotonic)
    status: str = "-"
    polls: int = 0
    retries: int = 0
    finished: float | None = None
    outcome: str | None = None
    detail: str = ""
    run: WorkflowRun | None = None

    @property
    def elapsed(self) -> float:
        """Seconds since watching began, frozen once the run is done."""
        return (self.finished or time.monotonic()) - self.started

    def observe(self, run: WorkflowRun) -> None:
        """Note a successful poll."""
        self.run = run
        self.polls += 1
        self.status = run.raw_status or "?"

    def finish(self, outcome: str, run: WorkflowRun | None, detail: str = "") -> None:
        """Note how the wait ended."""
        self.outcome, self.detail, self.finished = outcome, detail, time.monotonic()
        if run is not None:
            self.run, self.status = run, run.raw_status or self.status


def totals(views: Iterable[RunView]) -> dict[str, int]:
    """Count runs by outcome, and polls and retries over all runs."""
    views = list(views)
    counts = {outcome.lower(): sum(v.outcome == outcome for v in views) for outcome in OUTCOMES}
    counts["runs"] = len(views)
    counts["polls"] = sum(v.polls for v in views)
    counts["retries"] = sum(v.retries for v in views)
    return counts


def summary_line(views: Iterable[RunView], retries: int) -> str:
    """One sentence: how many runs ended how, polls and retried requests."""
    t = totals(views)
    parts = [f"{t[o.lower()]} {o.lower()}" for o in OUTCOMES if t[o.lower()] or o == "COMPLETE"]
    return (
        f"{t['runs']} run{'s' * (t['runs'] != 1)}: {', '.join(parts)}; "
        f"{t['polls']} polls, {retries} requests retried"
    )


class Display:
    """Shows nothing; the base of the three real displays."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err

    async def __aenter__(self) -> Display:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.out.flush()

    def start(self, view: RunView) -> None:
        """A run is being watched (and was perhaps just started)."""

    def status(self, view: RunView, change: StatusChange) -> None:
        """A run changed status."""

    def retry(self, view: RunView | None, message: str, attempt: int) -> None:
        """A request failed and is being retried."""

    def final(self, view: RunView) -> None:
        """A run's wait ended (`RunView.outcome` says how)."""

    def summary(self, views: list[RunView], retries: int, extra: dict[str, Any]) -> None:
        """Everything ended; ``extra`` holds lines or fields beyond the counts."""

    def log(self, line: str) -> None:
        """Write a log line to stderr without disturbing the display."""
        self.err.write(line + "\n")
        self.err.flush()

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


class PlainDisplay(Display):
    """One line per status change, for logs and pipes."""

    def status(self, view: RunView, change: StatusChange) -> None:
        before = change.previous.value if change.previous else "start"
        self._line(
            f"{view.run_id}  {before} -> {change.current.value}"
            f"  ({change.elapsed:.1f}s, {change.polls} polls)"
        )

    def final(self, view: RunView) -> None:
        if view.outcome not in ("COMPLETE", "FAILED") or view.detail:
            self._line(f"{view.run_id}  {view.outcome}: {view.detail or view.status}")

    def summary(self, views: list[RunView], retries: int, extra: dict[str, Any]) -> None:
        self._line(summary_line(views, retries))
        for line in extra.get("lines", ()):
            self._line(line)


class JsonDisplay(Display):
    """One JSON object per line and event, for scripts."""

    def _event(self, event: str, **fields: Any) -> None:
        self._line(json.dumps({"event": event, **fields}, default=str))

    def start(self, view: RunView) -> None:
        self._event("start", workflow_id=view.workflow_id, run_id=view.run_id)

    def status(self, view: RunView, change: StatusChange) -> None:
        self._event(
            "status",
            workflow_id=view.workflow_id,
            run_id=view.run_id,
            previous=change.previous.value if change.previous else None,
            status=change.current.value,
            elapsed=round(change.elapsed, 3),
            polls=change.polls,
        )

    def retry(self, view: RunView | None, message: str, attempt: int) -> None:
        run_id = view.run_id if view else None
        self._event("retry", run_id=run_id, attempt=attempt, message=message)

    def final(self, view: RunView) -> None:
        self._event(
            "final",
            workflow_id=view.workflow_id,
            run_id=view.run_id,
            outcome=view.outcome,
            status=view.status,
            elapsed=round(view.elapsed, 3),
            polls=view.polls,
            retries=view.retries,
            error=view.detail or None,
            run=dict(view.run.raw) if view.run else None,
        )

    def summary(self, views: list[RunView], retries: int, extra: dict[str, Any]) -> None:
        fields = {**totals(views), "retries": retries, **extra.get("fields", {})}
        self._event("summary", **fields)


class LiveDisplay(Display):
    """A table of runs redrawn in place (cursor up, clear line) on a terminal."""

    def __init__(self, out: TextIO, err: TextIO, *, color: bool) -> None:
        super().__init__(out, err)
        self._color = color
        self._views: list[RunView] = []
        self._drawn = 0
        self._frame = 0
        self._ticker: asyncio.Task[None] | None = None
        self._done = False

    async def __aenter__(self) -> Display:
        self.out.write("\x1b[?25l")  # hide the cursor while the table moves
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self.redraw()
        self.out.write("\x1b[?25h")
        self.out.flush()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(_TICK)
            self._frame += 1
            self.redraw()

    def start(self, view: RunView) -> None:
        self._views.append(view)
        self.redraw()

    def status(self, view: RunView, change: StatusChange) -> None:
        self.redraw()

    def final(self, view: RunView) -> None:
        self.redraw()

    def log(self, line: str) -> None:
        with self._cleared():
            self.err.write(line + "\n")
            self.err.flush()

    def summary(self, views: list[RunView], retries: int, extra: dict[str, Any]) -> None:
        self.redraw()
        self._done = True  # the table stays on screen as it is, above the summary
        self._line(summary_line(views, retries))
        for line in extra.get("lines", ()):
            self._line(line)

    @contextlib.contextmanager
    def _cleared(self) -> Iterator[None]:
        if self._drawn and not self._done:
            self.out.write(f"\x1b[{self._drawn}A\x1b[J")
            self.out.flush()
        self._drawn = 0
        yield
        self.redraw()

    def redraw(self) -> None:
        """Draw the table again over its previous copy."""
        if self._done:
            return
        width, height = shutil.get_terminal_size()
        lines = [self._fit(row, width - 1) for row in self._rows(max(1, height - 2))]
        up = f"\x1b[{self._drawn}A" if self._drawn else ""
        body = "".join(f"\r\x1b[2K{line}\n" for line in lines)
        self.out.write(up + body)
        self.out.flush()
        self._drawn = len(lines)

    def _rows(self, room: int) -> list[_Row]:
        views = self._views
        if len(views) <= room:
            return [self._row(v) for v in views]
        shown = views[: room - 1]
        rest = views[room - 1 :]
        done = sum(v.outcome is not None for v in rest)
        return [*map(self._row, shown), _Row(f"  … and {len(rest)} more ({done} done)")]

    def _fit(self, row: _Row, width: int) -> str:
        """Cut a row to ``width`` visible characters, then colour it: never mid-escape."""
        head = row.head[:width]
        status = row.status[: width - len(head)]
        tail = row.tail[: width - len(head) - len(status)]
        if self._color and row.color and status:
            status = f"\x1b[{row.color}m{status}\x1b[0m"
        return head + status + tail

    def _row(self, view: RunView) -> _Row:
        if view.outcome is None:
            mark = _SPINNER[self._frame % len(_SPINNER)]
            shown = view.status
        else:
            mark = _MARKS[view.outcome]
            # Interrupted: where the run stood is what matters (the mark says the rest).
            stood = view.outcome in ("COMPLETE", "INTERRUPTED")
            shown = view.status if stood else view.outcome
        retries = f"  {view.retries} retried" if view.retries else ""
        detail = f"  {view.detail}" if view.detail and view.outcome != "INTERRUPTED" else ""
        return _Row(
            head=f"{mark} {view.run_id:<24} ",
            status=f"{shown:<11}",
            tail=f" {view.elapsed:6.1f}s  {view.polls:3d} polls{retries}{detail}",
            color=_COLORS.get(view.outcome or view.status),
        )


@attrs.frozen
class _Row:
    """One line of the live table, in parts so it can be cut before it is coloured."""

    head: str
    status: str = ""
    tail: str = ""
    color: str | None = None


def choose_display(*, json_mode: bool, out: TextIO, err: TextIO) -> Display:
    """JSON events if asked; a live table on a capable terminal; plain lines otherwise."""
    if json_mode:
        return JsonDisplay(out, err)
    if out.isatty() and os.environ.get("TERM", "") != "dumb":
        return LiveDisplay(out, err, color="NO_COLOR" not in os.environ)
    return PlainDisplay(out, err)


def describe(exc: BaseException) -> str:
    """One sentence for an error; library messages never carry the key."""
    if isinstance(exc, AuthenticationError):
        return (
            f"the API refused the key (HTTP {exc.status}): check {API_KEY_ENV} or --api-key-file"
        )
    if isinstance(exc, APIError):
        code = f" {exc.error_code}" if exc.error_code else ""
        return f"API error (HTTP {exc.status}{code}): {exc.message}"
    if isinstance(exc, APIConnectionError):
        return f"cannot reach the API: {exc}"
    return str(exc) or type(exc).__name__


def shorten(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DisplayLogHandler(logging.Handler):
    """Sends log records to stderr through the display, so the live table stays whole."""

    def __init__(self, display: Display | None, level: int) -> None:
        super().__init__(level)
        self.display = display
        self.setFormatter(logging.Formatter("copyai-poll: %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            if self.display is not None:
                self.display.log(line)
            else:
                sys.stderr.write(line + "\n")
        except Exception:  # logging must never break the command
            self.handleError(record)
