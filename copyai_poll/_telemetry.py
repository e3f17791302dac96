"""OpenTelemetry instruments, built by `copyai_poll.otel.enable()` (never imported before).

A wait is a span (current while it polls, so each request try is its child) with an
event per status change and per retry; counters and a histogram measure the same.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._config import path_of
from ._errors import PollTimeoutError, RunFailedError
from ._events import RetryEvent
from ._models import RunStatus, StatusChange, WorkflowRun

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

    from ._poll import _Poller

T = TypeVar("T")
Observed = tuple[WorkflowRun, StatusChange | None]

SCOPE = "copyai_poll"
WAIT_SPAN = "copyai_poll.wait"
WORKFLOW_ID = "copyai.workflow_id"
RUN_ID = "copyai.run_id"
STATUS = "copyai.run.status"
OUTCOME = "copyai.wait.outcome"
METHOD = "http.request.method"
ERROR_TYPE = "error.type"

try:
    _VERSION = version("copyai-poll")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    _VERSION = "0"


class Telemetry:
    """The tracer and the instruments every wait and request reports to."""

    def __init__(
        self, *, tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None
    ) -> None:
        self.tracer = trace.get_tracer(SCOPE, _VERSION, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, _VERSION, meter_provider=meter_provider)
        self.requests = meter.create_counter(
            "copyai_poll.requests", unit="{request}", description="Tries of requests sent"
        )
        self.retries = meter.create_counter(
            "copyai_poll.retries", unit="{retry}", description="Requests tried again"
        )
        self.status_changes = meter.create_counter(
            "copyai_poll.status_changes", unit="{change}", description="Status changes seen"
        )
        self.waits = meter.create_counter(
            "copyai_poll.waits", unit="{wait}", description="Waits ended, by outcome"
        )
        self.wait_duration = meter.create_histogram(
            "copyai_poll.wait.duration", unit="s", description="How long waits lasted"
        )

    # -- requests ----------------------------------------------------------------------

    def wrap_request(
        self,
        try_once: Callable[..., Awaitable[T]],
        method: str,
        path: str,
        ids: Mapping[str, str] | None,
    ) -> Callable[..., Awaitable[T]]:
        """``try_once``, each call of it a client span counted by outcome."""
        ids = ids or {}
        name = f"{method} {_template(path, ids)}"
        attributes = {METHOD: method, "url.path": path, **_ids(ids)}

        @functools.wraps(try_once)
        async def traced(*args: Any) -> T:
            with self.tracer.start_as_current_span(
                name, kind=SpanKind.CLIENT, attributes=attributes
            ) as span:
                try:
                    result = await try_once(*args)
                except asyncio.CancelledError:
                    self.requests.add(1, {METHOD: method, "copyai.outcome": "cancelled"})
                    raise
                except Exception as exc:
                    kind = type(exc).__name__
                    span.set_attribute(ERROR_TYPE, kind)
                    status = getattr(exc, "status", None)
                    if isinstance(status, int):
                        span.set_attribute("http.response.status_code", status)
                    self.requests.add(1, {METHOD: method, "copyai.outcome": kind})
                    raise
                self.requests.add(1, {METHOD: method, "copyai.outcome": "ok"})
                return result

        return traced

    def retried(self, event: RetryEvent) -> None:
        """A request is tried again: an event on the current span (the wait's), counted."""
        kind = type(event.error).__name__
        trace.get_current_span().add_event(
            "retry",
            {
                METHOD: event.method,
                "url.path": event.path,
                "copyai.attempt": event.attempt,
                "copyai.retry.wait": event.wait,
                ERROR_TYPE: kind,
            },
        )
        self.retries.add(1, {METHOD: event.method, ERROR_TYPE: kind})

    # -- waits -------------------------------------------------------------------------

    async def wait(
        self,
        poller: _Poller,
        wait: Callable[[Callable[[StatusChange], Any], Any], Awaitable[WorkflowRun]],
        on_status_change: Callable[[StatusChange], Any] | None,
        on_poll: Callable[[WorkflowRun], Any] | None,
    ) -> WorkflowRun:
        """Run ``wait`` (the poller's own) inside the wait's span."""
        attributes = {WORKFLOW_ID: poller._workflow_id, RUN_ID: poller._run_id}
        with self.tracer.start_as_current_span(
            WAIT_SPAN, attributes=attributes, set_status_on_exception=False
        ) as span:
            began, outcome = poller._clock(), "error"
            try:
                run = await wait(functools.partial(self._changed, span, on_status_change), on_poll)
            except RunFailedError:
                outcome = "failed"
                raise
            except PollTimeoutError:
                outcome = "timeout"
                raise
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            else:
                outcome = "complete"
                return run
            finally:
                self._ended(span, poller, outcome, began)

    async def observe(
        self, poller: _Poller, observations: AsyncGenerator[Observed]
    ) -> AsyncGenerator[Observed]:
        """``observations`` (of `watch`), its polls inside the wait's span, not its yields."""
        attributes = {WORKFLOW_ID: poller._workflow_id, RUN_ID: poller._run_id}
        span = self.tracer.start_span(WAIT_SPAN, attributes=attributes)
        began, outcome = poller._clock(), "cancelled"  # closed early, unless said otherwise
        try:
            while True:
                with trace.use_span(span, set_status_on_exception=False):
                    try:
                        run, change = await anext(observations)
                    except StopAsyncIteration:
                        break
                if change is not None:
                    self._changed(span, None, change)
                if run.is_terminal:
                    outcome = "failed" if run.status is RunStatus.FAILED else "complete"
                yield run, change
        except PollTimeoutError:
            outcome = "timeout"
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            await observations.aclose()
            self._ended(span, poller, outcome, began)
            span.end()

    def _changed(
        self, span: Span, callback: Callable[[StatusChange], Any] | None, change: StatusChange
    ) -> Any:
        attributes: dict[str, Any] = {
            STATUS: change.current.value,
            "copyai.polls": change.polls,
            "copyai.elapsed": change.elapsed,
        }
        if change.previous is not None:
            attributes["copyai.run.previous_status"] = change.previous.value
        span.add_event("status_change", attributes)
        self.status_changes.add(1, {STATUS: change.current.value})
        return None if callback is None else callback(change)

    def _ended(self, span: Span, poller: _Poller, outcome: str, began: float) -> None:
        last = poller.last_run
        span.set_attribute("copyai.polls", poller._polls)
        span.set_attribute(STATUS, last.raw_status if last is not None else "")
        span.set_attribute(OUTCOME, outcome)
        if outcome not in ("complete", "cancelled"):
            span.set_status(Status(StatusCode.ERROR, outcome))
        self.waits.add(1, {OUTCOME: outcome})
        self.wait_duration.record(max(0.0, poller._clock() - began), {OUTCOME: outcome})


def _ids(ids: Mapping[str, str]) -> dict[str, str]:
    return {f"copyai.{name}": value for name, value in ids.items()}


def _template(path: str, ids: Mapping[str, str]) -> str:
    """The path with its ids replaced by their names: a span name of few values."""
    names = {path_of(value)[1:]: "{" + name + "}" for name, value in ids.items()}
    return "/".join(names.get(segment, segment) for segment in path.split("/"))
