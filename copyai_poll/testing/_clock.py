"""Clocks the fake server reads run ages from."""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs

#: Any zero-argument callable returning seconds; only differences between readings matter.
Clock = Callable[[], float]

#: The clock a server uses when none is given.
wall_clock: Clock = time.monotonic


@attrs.define(repr=False)
class ManualClock:
    """A clock that moves only when a test says so.

    A `FakeCopyAI` given this clock re-checks its runs on every `advance`, so webhook
    events for runs that just finished are sent at once, deterministically.
    """

    _now: float = attrs.field(default=0.0, alias="start", converter=float)
    _listeners: list[Callable[[], None]] = attrs.field(factory=list, init=False)

    def __call__(self) -> float:
        """Return the current reading, in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward.

        Args:
            seconds: How far to move; must not be negative.

        Raises:
            ValueError: ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError(f"a clock cannot go back ({seconds!r} seconds)")
        self._now += seconds
        for listener in list(self._listeners):
            listener()

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after every `advance`.

        Args:
            listener: A zero-argument callable.

        Returns:
            A function that undoes the subscription.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"
