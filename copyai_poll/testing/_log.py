"""The request log: what the fake received, for tests to assert on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._faults import Fault

API_KEY_HEADER = "x-copy-ai-api-key"
REDACTED = "***"


@attrs.frozen(kw_only=True)
class RequestRecord:
    """One request the fake received.

    Attributes:
        method: ``"GET"``, ``"POST"``, ...
        path: The URL path, e.g. ``/api/workflow/WCFG-1/run``.
        query: The query parameters.
        headers: The request headers, the API key's value replaced by ``"***"``.
        body: The decoded JSON body; its text if it was not JSON; None if empty.
        time: When it arrived, on the server's clock.
        route: The route's name (``"get_run"``, ...), None for an unknown path.
        fault: The fault applied to it, if any.
        status: The HTTP status answered; None while pending or when no answer was sent.
    """

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any
    time: float
    route: str | None
    fault: Fault | None = None
    status: int | None = None


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    """Return ``headers`` with the API key's value replaced by ``"***"``."""
    return {
        name: REDACTED if name.lower() == API_KEY_HEADER else value
        for name, value in headers.items()
    }
