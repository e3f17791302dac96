"""The deadline of the wait a request is made for, as the client sees it.

A poll with a deadline sets `time_left` around each fetch; the client reads it so that a
retry whose wait would outlast the deadline is not slept, and its error goes back to the
poll at once. Nothing here knows about polls or their errors.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

#: Inside a wait with a deadline: a function giving the seconds left, else None.
time_left: ContextVar[Callable[[], float] | None] = ContextVar(
    "copyai_poll_time_left", default=None
)
