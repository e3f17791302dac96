"""`RetryEvent`: what `CopyAIClient(on_retry=...)` is told before each retry's wait."""

from __future__ import annotations

import attrs

from ._errors import CopyAIError


@attrs.frozen(kw_only=True)
class RetryEvent:
    """One failed try of a request that is about to be tried again.

    The supported way to count or show retries (log records are for people).

    Attributes:
        method: ``"GET"``, ``"POST"``, ...
        path: The request's path below the base URL, ids percent-encoded, no query.
        workflow_id: The workflow the request is about; None where it names none.
        run_id: The run the request is about; None where it names none.
        attempt: The try that failed, counting from 1.
        wait: Seconds until the next try (a ``Retry-After`` included).
        error: The `CopyAIError` the failed try ended with.
    """

    method: str
    path: str
    workflow_id: str | None
    run_id: str | None
    attempt: int
    wait: float
    error: CopyAIError
