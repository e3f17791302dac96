"""The OpenTelemetry switch: `active` is None until `copyai_poll.otel.enable()`.

The client and the poller test ``_otel.active is not None`` and do nothing more while it
is off; nothing here imports OpenTelemetry (`_telemetry` does, once enabled).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._telemetry import Telemetry

#: The instruments in use, or None while telemetry is off.
active: Telemetry | None = None
