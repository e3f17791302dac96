"""How ``copyai-poll`` waits for runs and shows it: a live table, plain lines, or JSON.

`Watcher` runs one `poll_until_done` per run and turns its callbacks (and the library's
retry warnings) into calls on a `Display` (`start`, `status`, `retry`, `final`,
`summary`); no display polls or decides anything.
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
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from . import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    CopyAIError,
    PollPolicy,
    PollTimeoutError,
    RunFailedError,
    StatusChange,
    WorkflowRun,
    poll_until_done,
)
from ._client import API_KEY_ENV

if TYPE_CHECKING:
    from . import CopyAIClient
    from ._cli import Options

#: The final outcomes of one run, as `RunView.outcome` and the JSON ``final`` events name them.
OUTCOMES = ("COMPLETE", "FAILED", "TIMEOUT", "ERROR", "INTERRUPTED")

#: The exit code of each outcome; several runs exit with the highest.
EXIT_FOR = {"COMPLETE": 0, "FAILED": 1, "TIMEOUT": 3, "ERROR": 4, "INTERRUPTED": 130}

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


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- watching ------------------------------------------------------------------------


@attrs.define
class Watcher:
    """Waits for runs with one `poll_until_done` each, feeding the display."""

    client: CopyAIClient
    display: Display
    policy: PollPolicy
    timeout: float | None = None
    views: dict[tuple[str, str], RunView] = attrs.field(factory=dict)
    retries: int = 0

    def add(self, workflow_id: str, run_id: str) -> RunView:
        """Show a run now; it is waited for by `wait_all`."""
        view = self.views.setdefault(
            (workflow_id, run_id), RunView(workflow_id=workflow_id, run_id=run_id)
        )
        self.display.start(view)
        return view

    async def wait_all(self) -> None:
        """Wait for every run; one run's failure never stops the others."""
        try:
            async with asyncio.TaskGroup() as group:
                for view in self.views.values():
                    group.create_task(self._wait(view))
        except asyncio.CancelledError:
            for view in self.views.values():
                if view.outcome is None:
                    view.finish("INTERRUPTED", None, f"stopped while {view.status}")
                    self.display.final(view)
            raise

    async def _wait(self, view: RunView) -> None:
        try:
            run = await poll_until_done(
                self.client,
                view.workflow_id,
                view.run_id,
                on_status_change=functools.partial(self._changed, view),
                on_poll=view.observe,
                policy=self.policy,
                timeout=self.timeout,
            )
        except RunFailedError as exc:
            view.finish("FAILED", exc.run, _short(exc.run.error))
        except PollTimeoutError as exc:
            view.finish("TIMEOUT", exc.last_run, f"no end after {view.elapsed:.1f}s")
        except CopyAIError as exc:
            view.finish("ERROR", None, describe(exc))
        else:
            view.finish("COMPLETE", run)
        self.display.final(view)

    def _changed(self, view: RunView, change: StatusChange) -> None:
        view.status = change.current.value
        self.display.status(view, change)

    def on_retry(self, record: logging.LogRecord) -> None:
        """Count a retried request, and show it against its run when it names one."""
        self.retries += 1
        ids = (getattr(record, "workflow_id", None), getattr(record, "run_id", None))
        view = self.views.get(ids)  # type: ignore[arg-type]
        if view is not None:
            view.retries += 1
        self.display.retry(view, record.getMessage(), int(getattr(record, "attempt", 0)))

    def exit_code(self) -> int:
        """The code of the most severe outcome."""
        return max((EXIT_FOR[v.outcome or "COMPLETE"] for v in self.views.values()), default=0)


class _RetryHandler(logging.Handler):
    """Hands the library's retry warnings (they carry ``attempt``) to a callback."""

    def __init__(self, callback: Callable[[logging.LogRecord], None]) -> None:
        super().__init__(logging.WARNING)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "attempt"):
            self.callback(record)


@contextlib.contextmanager
def _counting_retries(watcher: Watcher) -> Iterator[None]:
    handler = _RetryHandler(watcher.on_retry)
    logger = logging.getLogger("copyai_poll")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


async def watch_runs(
    options: Options,
    log_handler: DisplayLogHandler,
    client: CopyAIClient,
    pairs: Iterable[tuple[str, str]],
    *,
    timeout: float | None,
    summary: Callable[[Watcher], dict[str, Any]] = lambda _: {},
) -> tuple[Watcher, int]:
    """Watch runs with a display chosen for stdout; return the watcher and exit code."""
    display = choose_display(json_mode=options.json, out=sys.stdout, err=sys.stderr)
    watcher = Watcher(client, display, options.policy, timeout)
    log_handler.display = display
    try:
        async with display:
            with _counting_retries(watcher):
                for workflow_id, run_id in pairs:
                    watcher.add(workflow_id, run_id)
                try:
                    await watcher.wait_all()
                finally:
                    views = list(watcher.views.values())
                    display.summary(views, watcher.retries, summary(watcher))
    finally:
        log_handler.display = None
    return watcher, watcher.exit_code()


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
