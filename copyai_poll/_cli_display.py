"""How ``copyai-poll`` shows runs being waited for: a live table, plain lines, or JSON.

The bottom layer of the CLI: it imports only the public API. A `RunView` is where one
run stands; the `Watcher` (`_cli_watch`) updates views and calls a `Display` (``start``,
``status``, ``notice``, ``retry``, ``final``, ``summary``); no display polls or decides
anything. Everything goes to stdout through `Output`, which survives its reader leaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

import attrs

from . import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    NotFoundError,
    RetryEvent,
    StatusChange,
    WorkflowRun,
)
from ._config import API_KEY_ENV

#: The final outcomes of one run, as `RunView.outcome` and the JSON ``final`` events name them.
OUTCOMES = ("COMPLETE", "FAILED", "TIMEOUT", "ERROR", "INTERRUPTED")

_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_MARKS = {"COMPLETE": "✓", "FAILED": "✗", "TIMEOUT": "⌛", "ERROR": "!", "INTERRUPTED": "■"}
_COLORS = {"COMPLETE": "32", "FAILED": "31", "TIMEOUT": "33", "ERROR": "31", "RETRYING": "33"}
_TICK = 0.1
#: Width of the status column: the longest documented status, RETRYING and PROCESSING.
_STATUS_WIDTH = 11
#: The narrowest the id column gets before the rest of the row gives way.
_MIN_ID = 13
#: Mark, spaces, status, elapsed time and retries: what a row always shows.
_FIXED = 2 + 1 + _STATUS_WIDTH + 8 + 4
#: Room the id leaves for a note ("not visible yet, 12 s of 30") on a middling terminal.
_NOTE_ROOM = 30


class Output:
    """stdout that outlives its reader (``| head``): once the pipe breaks, writes vanish.

    The command goes on to its end and exits by the outcome of its runs; stdout's file
    descriptor then points at devnull, so that Python's flush at exit cannot fail either.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.reader_left = False

    def write(self, text: str) -> None:
        if self.reader_left:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            self.reader_left = True
            point_at_devnull(self.stream)

    def isatty(self) -> bool:
        return not self.reader_left and self.stream.isatty()


def point_at_devnull(stream: TextIO) -> None:
    """Point ``stream``'s descriptor at devnull (the recipe of the `signal` module's docs)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


@attrs.define(kw_only=True)
class RunView:
    """Where one watched run stands, as far as the display knows."""

    workflow_id: str
    run_id: str
    clock: Callable[[], float] = time.monotonic
    started: float = attrs.field()
    status: str = "-"
    polls: int = 0
    retries: int = 0
    finished: float | None = None
    outcome: str | None = None
    detail: str = ""
    run: WorkflowRun | None = None
    #: Since when polls answer 404 (a new run not visible yet), if they do.
    not_found_since: float | None = None
    #: Since when polls fail (an outage), and why, if they do.
    failing_since: float | None = None
    failure: str = ""
    #: Why the last request was retried, until a poll succeeds.
    retrying: str = ""
    #: The policy's graces, to say how long a 404 or an outage is still borne.
    not_found_grace: float = 30.0
    outage_grace: float | None = 120.0

    @started.default
    def _now(self) -> float:
        return self.clock()

    @property
    def elapsed(self) -> float:
        """Seconds since watching began, frozen once the run is done."""
        return (self.finished or self.clock()) - self.started

    def observe(self, run: WorkflowRun) -> None:
        """Note a successful poll: whatever was going wrong is over."""
        self.run = run
        self.status = run.raw_status or "?"
        self.not_found_since = self.failing_since = None
        self.failure = self.retrying = ""

    def not_found(self) -> bool:
        """Note a 404; True if it is the first of a row."""
        first = self.not_found_since is None
        if first:
            self.not_found_since = self.clock()
        return first

    def failed(self, why: str) -> bool:
        """Note a failed poll; True if it begins an outage."""
        first = self.failing_since is None
        if first:
            self.failing_since = self.clock()
        self.failure = why
        return first

    def retried(self, event: RetryEvent) -> None:
        """Note a retried request of this run."""
        self.retries += 1
        self.retrying = f"{error_reason(event.error)}, try {event.attempt + 1}"

    def finish(self, outcome: str, run: WorkflowRun | None, detail: str = "") -> None:
        """Note how the wait ended."""
        self.outcome, self.detail, self.finished = outcome, detail, self.clock()
        if run is not None:
            self.run, self.status = run, run.raw_status or self.status

    def note(self) -> str:
        """What is going on beyond the status: a 404 grace, an outage, a retry."""
        if self.outcome is not None:
            return self.detail if self.outcome != "INTERRUPTED" else ""
        if self.not_found_since is not None:
            return f"not visible yet, {self.elapsed:.0f} s of {self.not_found_grace:g}"
        if self.failing_since is not None:
            lasted = self.clock() - self.failing_since
            of = f" of {self.outage_grace:g}" if self.outage_grace is not None else ""
            return f"polls failing {lasted:.0f} s{of}: {self.failure}"
        if self.retrying:
            return f"retrying ({self.retrying})"
        return ""


def error_reason(exc: BaseException) -> str:
    """A few words for an error: ``HTTP 503``, ``timeout``, its class."""
    if isinstance(exc, APIError):
        return f"HTTP {exc.status}"
    if isinstance(exc, APIConnectionError):
        return "no answer" if "timed out" in str(exc) else "connection failed"
    return type(exc).__name__


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


def not_completed_lines(views: Iterable[RunView]) -> list[str]:
    """One line per run that did not complete, full id and all: nothing is left out."""
    lines = []
    for view in views:
        if view.outcome == "COMPLETE":
            continue
        outcome = view.outcome or "UNFINISHED"
        stood = f" (last status {view.status})" if outcome != "FAILED" else ""
        why = f": {view.detail}" if view.detail else ""
        lines.append(f"  {_MARKS.get(outcome, '?')} {view.run_id}  {outcome}{stood}{why}".rstrip())
    return ["not completed:", *lines] if lines else []


class Display:
    """Shows nothing; the base of the three real displays."""

    def __init__(self, out: Output, err: TextIO) -> None:
        self.out, self.err = out, err

    async def __aenter__(self) -> Display:
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Nothing to undo."""

    def start(self, view: RunView) -> None:
        """A run is being watched (and was perhaps just started)."""

    def status(self, view: RunView, change: StatusChange) -> None:
        """A run changed status."""

    def notice(self, view: RunView, kind: str, message: str) -> None:
        """Something began that the run's row shows: ``not_found`` or ``outage``."""

    def retry(self, view: RunView | None, event: RetryEvent) -> None:
        """A request failed and is being retried."""

    def final(self, view: RunView) -> None:
        """A run's wait ended (`RunView.outcome` says how)."""

    def summary(self, views: list[RunView], retries: int, extra: dict[str, Any]) -> None:
        """Everything ended; ``extra`` holds lines or fields beyond the counts."""

    def log(self, line: str) -> None:
        """Write a log line to stderr without disturbing the display."""
        self.err.write(line + "\n")
        self.err.flush()

    def line(self, text: str) -> None:
        """Write one line to stdout."""
        self.out.write(text + "\n")


class PlainDisplay(Display):
    """One line per status change, for logs and pipes."""

    def status(self, view: RunView, change: StatusChange) -> None:
        before = change.previous.value if change.previous else "start"
        self.line(
            f"{view.run_id}  {before} -> {change.current.value}"
            f"  ({change.elapsed:.1f}s, {change.polls} polls)"
        )

    def notice(self, view: RunView, kind: str, message: str) -> None:
        self.line(f"{view.run_id}  {message}")

    def final(self, view: RunView) -> None:
        if view.outcome not in ("COMPLETE", "FAILED") or view.detail:
            self.line(f"{view.run_id}  {view.outcome}: {view.detail or view.status}")

    def summary(self, views: list[RunView], retries: int, extra: dict[str, Any]) -> None:
        self.line(summary_line(views, retries))
        for line in [*not_completed_lines(views), *extra.get("lines", ())]:
            self.line(line)


class JsonDisplay(Display):
    """One JSON object per line and event, for scripts."""

    def _event(self, event: str, **fields: Any) -> None:
        self.line(json.dumps({"event": event, **fields}, default=str))

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

    def notice(self, view: RunView, kind: str, message: str) -> None:
        self._event("notice", run_id=view.run_id, kind=kind, message=message)

    def retry(self, view: RunView | None, event: RetryEvent) -> None:
        self._event(
            "retry",
            workflow_id=event.workflow_id,
            run_id=event.run_id,
            method=event.method,
            attempt=event.attempt,
            wait=round(event.wait, 3),
            message=f"{event.method} {event.path}: {event.error}",
        )

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
        not_complete = [v.run_id for v in views if v.outcome != "COMPLETE"]
        fields = {**totals(views), "retries": retries, "not_complete": not_complete}
        self._event("summary", **fields, **extra.get("fields", {}))


class LiveDisplay(Display):
    """A table of runs redrawn in place (cursor up, clear line) on a terminal.

    Log lines (``-v``) are written above it: the table is cleared, the line written, the
    table drawn again. Rows are cut to the terminal's width, the id giving way first and
    the status never; runs beyond its height are counted in a last line, and the final
    table, drawn once everything ended, has every run.
    """

    def __init__(
        self,
        out: Output,
        err: TextIO,
        *,
        color: bool,
        size: Callable[[], os.terminal_size] | None = None,
    ) -> None:
        super().__init__(out, err)
        self._color = color
        self._size = size or functools.partial(terminal_size, out)
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
        self.redraw(everything=True)
        self._done = True  # the table stays on screen as it is, above the summary
        self.line(summary_line(views, retries))
        for line in [*not_completed_lines(views), *extra.get("lines", ())]:
            self.line(line)

    @contextlib.contextmanager
    def _cleared(self) -> Iterator[None]:
        if self._drawn and not self._done:
            self.out.write(f"\x1b[{self._drawn}A\x1b[J")
        self._drawn = 0
        yield
        self.redraw()

    def redraw(self, *, everything: bool = False) -> None:
        """Draw the table again over its previous copy (all of it: ``everything``)."""
        if self._done:
            return
        lines = self.frame(everything=everything)
        up = f"\x1b[{self._drawn}A" if self._drawn else ""
        self.out.write(up + "".join(f"\r\x1b[2K{line}\n" for line in lines))
        self._drawn = len(lines)

    def frame(self, *, everything: bool = False) -> list[str]:
        """The table's lines as they would be drawn now."""
        width, height = self._size()
        room = len(self._views) if everything else max(1, height - 2)
        id_width = self._id_width(width)
        return [self._fit(row, width - 1) for row in self._rows(room, id_width)]

    def _id_width(self, width: int) -> int:
        """The id column: the longest id, or what is left once status and time fit."""
        longest = max((len(v.run_id) for v in self._views), default=_MIN_ID)
        left = width - 1 - _FIXED - _NOTE_ROOM
        return max(1, min(longest, max(_MIN_ID, left)))

    def _rows(self, room: int, id_width: int) -> list[_Row]:
        views = self._views
        if len(views) <= room:
            return [self._row(v, id_width) for v in views]
        # Runs still going, or gone wrong, before those that completed: what needs eyes.
        shown = sorted(views, key=lambda v: v.outcome == "COMPLETE")[: room - 1]
        rest = [v for v in views if v not in shown]
        done = sum(v.outcome == "COMPLETE" for v in rest)
        going = len(rest) - done
        rows = [self._row(v, id_width) for v in views if v in shown]
        return [*rows, _Row(f"  … and {len(rest)} more: {done} complete, {going} other")]

    def _fit(self, row: _Row, width: int) -> str:
        """Cut a row to ``width`` visible characters, then colour it: never mid-escape.

        The status stays whole; the tail gives way first, then the id.
        """
        status = row.status[: max(0, width - 2)]
        head_room = max(0, width - len(status))
        head = row.head if len(row.head) <= head_room else row.head[: head_room - 1] + " "
        tail = row.tail[: max(0, width - len(head) - len(status))]
        if self._color and row.color and status:
            status = f"\x1b[{row.color}m{status}\x1b[0m"
        return (head + status + tail).rstrip()

    def _row(self, view: RunView, id_width: int) -> _Row:
        if view.outcome is None:
            mark = _SPINNER[self._frame % len(_SPINNER)]
            # A run not visible yet says so in the status column, seen at any width.
            shown = "404" if view.not_found_since is not None else view.status
        else:
            mark = _MARKS[view.outcome]
            # Interrupted: where the run stood is what matters (the mark says the rest).
            stood = view.outcome in ("COMPLETE", "INTERRUPTED")
            shown = view.status if stood else view.outcome
        retries = f" ↻{view.retries:<2}" if view.retries else "    "
        note = view.note()
        return _Row(
            head=f"{mark} {shorten_id(view.run_id, id_width):<{id_width}} ",
            status=f"{shown:<{_STATUS_WIDTH}}",
            tail=f" {view.elapsed:6.1f}s{retries} {note}{'  ' * bool(note)}{view.polls} polls",
            color=_COLORS.get(view.outcome or view.status),
        )


@attrs.frozen
class _Row:
    """One line of the live table, in parts so it can be cut before it is coloured."""

    head: str
    status: str = ""
    tail: str = ""
    color: str | None = None


def terminal_size(out: Output) -> os.terminal_size:
    """The terminal's real size: rows wider than it would wrap and break the redraw.

    ``COLUMNS`` and ``LINES`` (which `shutil.get_terminal_size` prefers) may be stale.
    """
    try:
        return os.get_terminal_size(out.stream.fileno())
    except (OSError, ValueError, AttributeError):
        return shutil.get_terminal_size()


def shorten_id(run_id: str, width: int) -> str:
    """``run_id`` in ``width`` characters: its start and its end, the middle elided."""
    if len(run_id) <= width:
        return run_id
    if width < 4:
        return run_id[:width]
    end = (width - 1) // 3
    return run_id[: width - 1 - end] + "…" + run_id[len(run_id) - end :]


def choose_display(*, json_mode: bool, out: Output, err: TextIO) -> Display:
    """JSON events if asked; a live table on a capable terminal; plain lines otherwise."""
    if json_mode:
        return JsonDisplay(out, err)
    if out.isatty() and os.environ.get("TERM", "") != "dumb":
        return LiveDisplay(out, err, color="NO_COLOR" not in os.environ)
    return PlainDisplay(out, err)


def describe(exc: BaseException, *, hint: str = "") -> str:
    """One sentence for an error; library messages never carry the key.

    Args:
        hint: Added to a 404: e.g. that the base URL lacks ``/api``.
    """
    if isinstance(exc, AuthenticationError):
        return (
            f"the API refused the key (HTTP {exc.status}): check {API_KEY_ENV} or --api-key-file"
        )
    if isinstance(exc, APIError):
        code = f" {exc.error_code}" if exc.error_code else ""
        extra = f"; {hint}" if hint and isinstance(exc, NotFoundError) else ""
        return f"API error (HTTP {exc.status}{code}): {exc.message}{extra}"
    if isinstance(exc, APIConnectionError):
        return f"cannot reach the API: {exc}"
    return str(exc) or type(exc).__name__


def shorten(value: Any, limit: int = 80) -> str:
    """``value`` as text of at most ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DisplayLogHandler(logging.Handler):
    """Sends log records to stderr through the display, so the live table stays whole."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.display: Display | None = None
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
