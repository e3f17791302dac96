"""Waiting for runs on behalf of the CLI, and the exit codes that say how it ended.

`Watcher` runs one `poll_until_done` per run and turns what it sees into calls on a
display (`_cli_display`, the only CLI module below this one): the polls' callbacks, the
client's `RetryEvent`s (``on_retry=watcher.retried``), and the 404s and failed polls its
fetcher passes through on their way to the poller. It polls nothing itself and decides
nothing the library decides.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from . import (
    CopyAIClient,
    CopyAIError,
    NotFoundError,
    PollPolicy,
    PollTimeoutError,
    RetryEvent,
    RunFailedError,
    StatusChange,
    WorkflowRun,
    poll_until_done,
)
from ._cli_display import (
    Display,
    DisplayLogHandler,
    RunView,
    describe,
    error_reason,
    shorten,
)
from ._errors import is_transient

#: The exit codes; when runs end differently the highest of 4, 3, 1, 0 wins.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_API = 4
EXIT_INTERRUPTED = 130
#: The exit code of each outcome of a run.
EXIT_FOR = {
    "COMPLETE": EXIT_OK,
    "FAILED": EXIT_FAILED,
    "TIMEOUT": EXIT_TIMEOUT,
    "ERROR": EXIT_API,
    "INTERRUPTED": EXIT_INTERRUPTED,
}
EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}    every run COMPLETE (or the command succeeded)
  {EXIT_FAILED}    a run FAILED
  {EXIT_USAGE}    usage or configuration error (bad arguments, no API key, unreadable key file)
  {EXIT_TIMEOUT}    a run did not finish before --timeout
  {EXIT_API}    API or connection error (wrong key, unknown run, server unreachable, ...)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); where each run stood is printed first
When several runs end differently, the highest code of 4, 3, 1, 0 wins, also when
stdout is closed early (| head). 'demo' exits 0 when every run ended as its script
says (some are scripted to fail), 1 when one did not, 4 on an API error.
"""


def base_url_hint(base_url: str) -> str:
    """What to say with a 404 when the base URL does not end in ``/api``, else ``""``."""
    if base_url.rstrip("/").endswith("/api"):
        return ""
    return f"the base URL {base_url} does not end in /api: did you mean {base_url}/api?"


@attrs.define
class Watcher:
    """Waits for runs with one `poll_until_done` each, feeding the display."""

    display: Display
    policy: PollPolicy
    timeout: float | None = None
    #: Said with every 404 (see `base_url_hint`).
    hint: str = ""
    #: Log records (-v) go through the display while it shows runs.
    log_handler: DisplayLogHandler | None = None
    views: dict[tuple[str, str], RunView] = attrs.field(factory=dict)
    retries: int = 0

    def retried(self, event: RetryEvent) -> None:
        """``on_retry`` of the client: count the retry, against its run if it names one."""
        self.retries += 1
        view = None
        if event.workflow_id is not None and event.run_id is not None:
            view = self.views.get((event.workflow_id, event.run_id))
        if view is not None:
            view.retried(event)
        self.display.retry(view, event)

    def add(self, workflow_id: str, run_id: str) -> RunView:
        """Show a run now; it is waited for by `wait_all`."""
        key = (workflow_id, run_id)
        if key not in self.views:
            self.views[key] = RunView(
                workflow_id=workflow_id,
                run_id=run_id,
                not_found_grace=self.policy.not_found_grace,
                outage_grace=self.policy.outage_grace,
            )
            self.display.start(self.views[key])
        return self.views[key]

    async def watch(
        self,
        client: CopyAIClient,
        pairs: Iterable[tuple[str, str]],
        *,
        summary: Callable[[Watcher], dict[str, Any]] = lambda _: {},
    ) -> int:
        """Show and wait for runs, sum up (interrupted or not); return the exit code."""
        if self.log_handler is not None:
            self.log_handler.display = self.display
        try:
            async with self.display:
                for workflow_id, run_id in pairs:
                    self.add(workflow_id, run_id)
                try:
                    await self.wait_all(client)
                finally:
                    views = list(self.views.values())
                    self.display.summary(views, self.retries, summary(self))
        finally:
            if self.log_handler is not None:
                self.log_handler.display = None
        return self.exit_code()

    async def wait_all(self, client: CopyAIClient) -> None:
        """Wait for every run; one run's failure never stops the others."""
        try:
            async with asyncio.TaskGroup() as group:
                for view in self.views.values():
                    group.create_task(self._wait(client, view))
        except asyncio.CancelledError:
            self.interrupted()
            raise

    def interrupted(self) -> None:
        """Mark every run still waited for as interrupted, where it stood."""
        for view in self.views.values():
            if view.outcome is None:
                view.finish("INTERRUPTED", None, f"stopped while {view.status}")
                self.display.final(view)

    async def _wait(self, client: CopyAIClient, view: RunView) -> None:
        try:
            run = await poll_until_done(
                _Seen(client, self, view),
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
            view.finish("ERROR", None, describe(exc, hint=self.hint))
        else:
            view.finish("COMPLETE", run)
        self.display.final(view)

    def _changed(self, view: RunView, change: StatusChange) -> None:
        view.status = change.current.value
        self.display.status(view, change)

    def exit_code(self) -> int:
        """The code of the most severe outcome."""
        return max((EXIT_FOR[v.outcome or "COMPLETE"] for v in self.views.values()), default=0)


@attrs.define
class _Seen:
    """The client's `get_run` for the poller, noting 404s and failed polls on the way.

    The poller still decides what they mean (a 404 in the grace, an outage); the view
    only shows them.
    """

    client: CopyAIClient
    watcher: Watcher
    view: RunView

    async def get_run(self, workflow_id: str, run_id: str) -> WorkflowRun:
        self.view.polls += 1  # every poll, as `StatusChange.polls` counts: 404s too
        try:
            return await self.client.get_run(workflow_id, run_id)
        except NotFoundError:
            if self.view.not_found():
                hint = f" ({self.watcher.hint})" if self.watcher.hint else ""
                grace = self.view.not_found_grace
                message = f"not visible yet (404); polling again for up to {grace:g} s{hint}"
                self.watcher.display.notice(self.view, "not_found", message)
            raise
        except CopyAIError as exc:
            if is_transient(exc) and self.view.failed(error_reason(exc)):
                message = f"poll failed ({describe(exc)}); polling again on schedule"
                self.watcher.display.notice(self.view, "outage", message)
            raise
