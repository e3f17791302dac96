"""OpenTelemetry for copyai_poll: one switch, off by default.

``copyai_poll.otel.enable()`` makes every wait (`poll_until_done`, `watch`, `poll_many`,
the client's `poll_until_done`) a span, with an event per status change and per retry,
and every request try a child span of it, and records counters and a wait-duration
histogram. It needs only ``opentelemetry-api`` (``pip install 'copyai-poll[otel]'``); the
application's SDK decides where spans and metrics go. While it is off, OpenTelemetry is
not even imported.

Spans:
    ``copyai_poll.wait`` (internal): ``copyai.workflow_id``, ``copyai.run_id``, and at
    the end ``copyai.polls``, ``copyai.run.status`` (the last raw status seen) and
    ``copyai.wait.outcome``; events ``status_change`` (``copyai.run.status``,
    ``copyai.run.previous_status``, ``copyai.polls``, ``copyai.elapsed``) and ``retry``
    (``http.request.method``, ``url.path``, ``copyai.attempt``, ``copyai.retry.wait``,
    ``error.type``). Its status is ERROR unless the run COMPLETEd or the wait was
    cancelled.
    ``{method} {path template}`` (client), one per try of a request, e.g.
    ``GET /workflow/{workflow_id}/run/{run_id}``: ``http.request.method``, ``url.path``,
    the ids, and on failure ``error.type`` and ``http.response.status_code``.

Metrics:
    ``copyai_poll.requests`` (counter): tries, by ``http.request.method`` and
    ``copyai.outcome`` (``ok`` or the error's class name);
    ``copyai_poll.retries`` (counter): retries, by ``http.request.method`` and
    ``error.type``;
    ``copyai_poll.status_changes`` (counter): by ``copyai.run.status``;
    ``copyai_poll.waits`` (counter) and ``copyai_poll.wait.duration`` (histogram, s): by
    ``copyai.wait.outcome`` (``complete``, ``failed``, ``timeout``, ``error``,
    ``cancelled``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _otel

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = ["disable", "enable", "is_enabled"]


def enable(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> None:
    """Trace and measure every wait and request from now on, process-wide.

    Args:
        tracer_provider: Where spans go; None for OpenTelemetry's global provider.
        meter_provider: Where metrics go; None for OpenTelemetry's global provider.

    Raises:
        ImportError: ``opentelemetry-api`` is not installed (the ``otel`` extra).
    """
    try:
        from ._telemetry import Telemetry
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "copyai_poll.otel needs opentelemetry-api: pip install 'copyai-poll[otel]'"
        ) from exc
    _otel.active = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)


def disable() -> None:
    """Stop tracing and measuring; waits already running finish their spans."""
    _otel.active = None


def is_enabled() -> bool:
    """True between `enable` and `disable`."""
    return _otel.active is not None
