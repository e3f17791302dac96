"""When to poll next, and when to retry a failed request: pure, validated values."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, cast

import attrs
from tenacity import RetryCallState, wait_exponential


def _non_negative(_inst: Any, attribute: Any, value: float) -> None:
    # `not (x >= 0)` also rejects NaN.
    if not (value >= 0):
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _finite(_inst: Any, attribute: Any, value: float) -> None:
    _non_negative(_inst, attribute, value)
    if value == math.inf:
        raise ValueError(f"{attribute.name} must be finite, got {value!r}")


def _positive_finite(_inst: Any, attribute: Any, value: float) -> None:
    _finite(_inst, attribute, value)
    if value == 0:
        raise ValueError(f"{attribute.name} must be > 0 (0 would poll in a hot loop)")


def _optional_non_negative(_inst: Any, attribute: Any, value: float | None) -> None:
    if value is not None:
        _non_negative(_inst, attribute, value)


def _whole_number(_inst: Any, attribute: Any, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be a whole number, got {value!r}")
    _at_least_one(_inst, attribute, value)


def _at_least_one(_inst: Any, attribute: Any, value: float) -> None:
    if not (value >= 1):
        raise ValueError(f"{attribute.name} must be >= 1, got {value!r}")


def _fraction(_inst: Any, attribute: Any, value: float) -> None:
    if not (0 <= value <= 1):
        raise ValueError(f"{attribute.name} must be between 0 and 1, got {value!r}")


def _maximum_not_below_initial(inst: Any, _attribute: Any, value: float) -> None:
    _non_negative(inst, _attribute, value)
    if value < inst.initial:
        raise ValueError(f"maximum ({value!r}) must not be below initial ({inst.initial!r})")


def backoff(
    n: int,
    *,
    initial: float,
    maximum: float,
    multiplier: float,
    jitter: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """The n-th wait (n = 0, 1, ...): ``min(maximum, initial * multiplier**n)``, jittered.

    tenacity's `wait_exponential` computes it; the jitter then spreads it uniformly by up
    to ``jitter`` (a fraction) either way (tenacity's own jitter is additive, not this).
    """
    if initial == 0:  # zero stays zero however far the power grows
        return 0.0
    attempt = _Attempt(max(n, 0) + 1)
    strategy = wait_exponential(multiplier=initial, max=maximum, exp_base=multiplier)
    base = strategy(cast("RetryCallState", attempt))
    if jitter:
        base *= 1 + jitter * (2 * rand() - 1)
    return max(0.0, base)


@attrs.frozen
class _Attempt:
    """All that tenacity's `wait_exponential` reads of a `RetryCallState`."""

    attempt_number: int


class _Backoff:
    """The n-th wait of a policy's schedule; shared by both policies."""

    initial: float
    maximum: float
    multiplier: float
    jitter: float

    def wait(self, n: int, *, rand: Callable[[], float] = random.random) -> float:
        """The n-th wait (n = 0, 1, ...), jitter included.

        For `PollPolicy`, the wait before poll n+2; for `RetryPolicy`, after try n+1.
        """
        return backoff(
            n,
            initial=self.initial,
            maximum=self.maximum,
            multiplier=self.multiplier,
            jitter=self.jitter,
            rand=rand,
        )


@attrs.frozen(kw_only=True)
class PollPolicy(_Backoff):
    """How long to wait between polls of one run, in seconds.

    The first poll is immediate; the wait before poll n+2 is
    ``min(maximum, initial * multiplier**n)``, spread by up to ``jitter`` either way.

    Args:
        initial: The first wait.
        maximum: No wait is longer (before jitter).
        multiplier: Growth of the wait from one poll to the next (>= 1).
        jitter: Fraction (0 to 1) by which each wait is spread either way, so that many
            runs started together do not poll in lockstep.
        reset_on_change: Start again from ``initial`` whenever the status changes: a run
            that moves is likely to move again soon.
        not_found_grace: For this long after polling began, a 404 means "not visible
            yet" and is polled again rather than raised as `NotFoundError`.
        outage_grace: For this long, polls may keep failing transiently (server
            trouble, throttling, garbled answers, connection failures other than TLS)
            before the wait gives up with the last error; None rides out any outage
            until the deadline. A poll that succeeds starts the count again.
    """

    initial: float = attrs.field(default=1.0, validator=_positive_finite)
    maximum: float = attrs.field(default=10.0, validator=_maximum_not_below_initial)
    multiplier: float = attrs.field(default=1.5, validator=_at_least_one)
    jitter: float = attrs.field(default=0.1, validator=_fraction)
    reset_on_change: bool = True
    not_found_grace: float = attrs.field(default=30.0, validator=_non_negative)
    outage_grace: float | None = attrs.field(default=120.0, validator=_optional_non_negative)


@attrs.frozen(kw_only=True)
class RetryPolicy(_Backoff):
    """How one failed request is retried (connection errors, timeouts, 429, 5xx).

    Args:
        attempts: Every try counts, the first included; 1 means no retry.
        initial: The wait after the first failure.
        maximum: No computed wait is longer (before jitter).
        multiplier: Growth of the wait from one retry to the next (>= 1).
        jitter: Fraction (0 to 1) by which each wait is spread either way.
        max_retry_after: The longest ``Retry-After`` honoured; a server asking for a
            longer pause ends the retries at once with its error (``.retry_after`` set),
            rather than silently blocking for that long. A poll that meets such an
            error does wait that long before its next poll, within its deadline.

    A ``Retry-After`` header (seconds or an HTTP date) replaces the computed wait.
    """

    attempts: int = attrs.field(default=4, validator=_whole_number)
    initial: float = attrs.field(default=0.5, validator=_finite)
    maximum: float = attrs.field(default=8.0, validator=_maximum_not_below_initial)
    multiplier: float = attrs.field(default=2.0, validator=_at_least_one)
    jitter: float = attrs.field(default=0.5, validator=_fraction)
    max_retry_after: float = attrs.field(default=120.0, validator=_non_negative)


# RFC 9110 delay-seconds are digits; a fraction is tolerated, Python's "1_0" or "1e3" not.
_DELTA_SECONDS = re.compile(r"[0-9]+(\.[0-9]+)?")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date).

    None when absent, unreadable, negative, or a date already past: the caller then
    falls back to its own backoff.
    """
    if not value:
        return None
    value = value.strip()
    seconds: float | None
    if _DELTA_SECONDS.fullmatch(value):
        seconds = float(value)
    else:
        seconds = _seconds_until(value, now or datetime.now(UTC))
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _seconds_until(http_date: str, now: datetime) -> float | None:
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - now).total_seconds()
    return seconds if seconds > 0 else None
