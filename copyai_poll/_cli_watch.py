"""Waiting for runs on behalf of the CLI: one `poll_until_done` each, fed to a display."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from . import (
    CopyAIClient,
    CopyAIError,
    PollPolicy,
    PollTimeoutError,
    RunFailedError,
    StatusChange,
    poll_until_done,
)
from ._cli_display import (
    EXIT_FOR,
    Display,
    DisplayLogHandler,
    RunView,
    choose_display,
    describe,
    shorten,
)

if TYPE_CHECKING:
    from ._cli import Options


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
            view.finish("FAILED", exc.run, shorten(exc.run.error))
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
