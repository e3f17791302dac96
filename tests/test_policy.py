"""Poll and retry schedules, and reading Retry-After."""

from __future__ import annotations

import math
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copyai_poll import PollPolicy, RetryPolicy
from copyai_poll._policy import parse_retry_after

NAN = float("nan")
POLICIES: list[type[Any]] = [PollPolicy, RetryPolicy]


class TestDefaults:
    def test_poll_policy(self) -> None:
        """Polls a seconds-to-minutes run every second or so, backing off to a few seconds."""
        policy = PollPolicy()

        assert 0 < policy.initial <= 5
        assert policy.initial <= policy.maximum <= 60
        assert policy.multiplier >= 1
        assert 0 < policy.jitter <= 1
        assert policy.not_found_grace > 0

    def test_retry_policy(self) -> None:
        """Retries a few times with doubling, jittered waits."""
        policy = RetryPolicy()

        assert 2 <= policy.attempts <= 10
        assert 2.0 == policy.multiplier
        assert 0 < policy.initial <= policy.maximum <= 60
        assert 0 < policy.jitter <= 1

    @pytest.mark.parametrize("cls", POLICIES)
    def test_frozen(self, cls: type[Any]) -> None:
        """Refuses assignment after construction."""
        policy = cls()

        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            policy.initial = 3.0


@pytest.mark.parametrize("cls", POLICIES)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": -0.1},
        {"initial": NAN},
        {"maximum": -1.0},
        {"maximum": NAN},
        {"initial": 5.0, "maximum": 1.0},
        {"initial": math.inf},
        {"multiplier": 0.5},
        {"multiplier": 0.0},
        {"multiplier": NAN},
        {"jitter": -0.01},
        {"jitter": 1.01},
        {"jitter": NAN},
    ],
)
def test_nonsense_refused(cls: type[Any], kwargs: dict[str, float]) -> None:
    """Raises ValueError at construction for a nonsense value."""
    with pytest.raises(ValueError, match="must"):
        cls(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"not_found_grace": -1.0},
        {"not_found_grace": NAN},
        {"outage_grace": -1.0},
        {"outage_grace": NAN},
    ],
    ids=str,
)
def test_poll_policy_grace_refused(kwargs: dict[str, Any]) -> None:
    """Raises ValueError for a negative or NaN grace."""
    with pytest.raises(ValueError, match="grace"):
        PollPolicy(**kwargs)


@pytest.mark.parametrize("outage_grace", [None, 0.0, 120.0, math.inf])
def test_poll_policy_outage_grace_accepted(outage_grace: float | None) -> None:
    """Accepts None (until the deadline), zero and any non-negative outage grace."""
    assert outage_grace == PollPolicy(outage_grace=outage_grace).outage_grace


def test_poll_policy_zero_initial_refused() -> None:
    """Refuses a zero initial poll interval, which would poll in a hot loop."""
    with pytest.raises(ValueError, match="hot loop"):
        PollPolicy(initial=0.0, maximum=10.0)


@pytest.mark.parametrize("attempts", [0, -1])
def test_retry_attempts_refused(attempts: int) -> None:
    """Raises ValueError for fewer than one attempt."""
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=attempts)


@pytest.mark.parametrize("cls", POLICIES)
def test_edges_accepted(cls: type[Any]) -> None:
    """Accepts the edge values: the least initial, jitter 0 and 1, multiplier 1, maximum == initial."""
    for kwargs in (
        {"initial": 0.0 if cls is RetryPolicy else 0.001, "maximum": 0.001},
        {"initial": 2.0, "maximum": 2.0, "multiplier": 1.0},
        {"jitter": 0.0},
        {"jitter": 1.0},
    ):
        assert kwargs == {k: getattr(cls(**kwargs), k) for k in kwargs}


def test_one_attempt_accepted() -> None:
    """Accepts attempts=1, meaning no retry."""
    assert 1 == RetryPolicy(attempts=1).attempts


@pytest.mark.parametrize("cls", POLICIES)
def test_wait_schedule(cls: type[Any]) -> None:
    """Waits min(maximum, initial * multiplier**n) before jitter."""
    policy = cls(initial=0.5, maximum=7.0, multiplier=2.0, jitter=0.0)

    assert [0.5, 1.0, 2.0, 4.0, 7.0, 7.0, 7.0] == [policy.wait(n) for n in range(7)]


@settings(max_examples=200, deadline=None)
@given(
    cls=st.sampled_from(POLICIES),
    initial=st.floats(0.001, 100),
    extra=st.floats(0, 1000),
    multiplier=st.floats(1, 10),
    n=st.integers(0, 60),
)
def test_wait_formula(
    cls: type[Any], initial: float, extra: float, multiplier: float, n: int
) -> None:
    """Equals min(maximum, initial * multiplier**n) exactly when jitter is 0."""
    maximum = initial + extra
    policy = cls(initial=initial, maximum=maximum, multiplier=multiplier, jitter=0.0)

    assert min(maximum, initial * multiplier**n) == policy.wait(n)


@settings(max_examples=200, deadline=None)
@given(
    cls=st.sampled_from(POLICIES),
    initial=st.floats(0.001, 100),
    extra=st.floats(0, 1000),
    multiplier=st.floats(1, 10),
    jitter=st.floats(0, 1),
    n=st.integers(0, 60),
    r=st.floats(0, 1, exclude_max=True),
)
def test_jitter_bounds(
    cls: type[Any],
    initial: float,
    extra: float,
    multiplier: float,
    jitter: float,
    n: int,
    r: float,
) -> None:
    """Spreads each wait by at most jitter either way, never below zero."""
    maximum = initial + extra
    policy = cls(initial=initial, maximum=maximum, multiplier=multiplier, jitter=jitter)
    base = min(maximum, initial * multiplier**n)

    wait = policy.wait(n, rand=lambda: r)

    assert 0 <= wait
    assert base * (1 - jitter) - 1e-9 * base <= wait <= base * (1 + jitter) + 1e-9 * base


@pytest.mark.parametrize(("r", "factor"), [(0.0, 0.75), (0.5, 1.0), (0.75, 1.125)])
def test_jitter_uses_rand(r: float, factor: float) -> None:
    """Maps rand() in [0, 1) linearly onto [1 - jitter, 1 + jitter) of the wait."""
    policy = PollPolicy(initial=4.0, maximum=4.0, jitter=0.25)

    assert pytest.approx(4.0 * factor) == policy.wait(0, rand=lambda: r)


@pytest.mark.parametrize("cls", POLICIES)
@pytest.mark.parametrize("n", [1_100, 10**6, sys.maxsize, 10**400])
def test_huge_n(cls: type[Any], n: int) -> None:
    """Caps the wait at maximum for huge n instead of overflowing."""
    policy = cls(initial=1.0, maximum=30.0, multiplier=2.0, jitter=0.0)

    assert 30.0 == policy.wait(n)


def test_huge_n_with_zero_initial() -> None:
    """Keeps waiting initial * multiplier**n == 0 when a retry's initial is 0, however large n."""
    policy = RetryPolicy(initial=0.0, maximum=10.0, multiplier=1.5, jitter=0.0)

    assert [0.0, 0.0] == [policy.wait(10), policy.wait(10_000)]


class TestRetryAfter:
    NOW = datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [("120", 120.0), ("0", 0.0), ("1.5", 1.5), (" 3 ", 3.0), ("0.25", 0.25)],
    )
    def test_seconds(self, value: str, expected: float) -> None:
        """Reads delta-seconds, whole or fractional."""
        assert expected == parse_retry_after(value, now=self.NOW)

    def test_http_date_in_future(self) -> None:
        """Reads an HTTP date as the seconds from now until then."""
        assert 60.0 == parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=self.NOW)

    def test_http_date_other_zone(self) -> None:
        """Takes an HTTP date's numeric zone into account."""
        assert 90.0 == parse_retry_after("Wed, 21 Oct 2015 09:28:30 +0200", now=self.NOW)

    def test_http_date_from_now_default(self) -> None:
        """Measures an HTTP date from the current time when no ``now`` is given."""
        future = datetime.now(UTC) + timedelta(days=2)
        header = future.strftime("%a, %d %b %Y %H:%M:%S GMT")

        seconds = parse_retry_after(header)

        assert seconds is not None
        assert timedelta(days=1).total_seconds() < seconds <= timedelta(days=2).total_seconds()

    @pytest.mark.parametrize(
        "value", ["Wed, 21 Oct 2015 07:26:00 GMT", "Wed, 21 Oct 2015 07:27:00 GMT"]
    )
    def test_http_date_past(self, value: str) -> None:
        """Ignores a date already past."""
        assert None is parse_retry_after(value, now=self.NOW)

    @pytest.mark.parametrize(
        "value",
        [
            None,
            "",
            "   ",
            "soon",
            "-1",
            "-0.5",
            "nan",
            "inf",
            "-inf",
            "Wed, 99 Foo 2015",
            "Wed, 21 Oct 99999 07:28:00 GMT",
            "1e999",
        ],
    )
    def test_unusable(self, value: str | None) -> None:
        """Gives None for an absent, garbled, negative or non-finite header."""
        assert None is parse_retry_after(value, now=self.NOW)

    @settings(max_examples=200, deadline=None)
    @given(value=st.text(max_size=40))
    def test_any_text(self, value: str) -> None:
        """Gives None or a finite, non-negative number for any header text."""
        seconds = parse_retry_after(value, now=self.NOW)

        assert seconds is None or (math.isfinite(seconds) and seconds >= 0)
