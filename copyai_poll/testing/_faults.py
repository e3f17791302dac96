"""Faults: broken answers on demand, per route, by sequence or by seeded chance."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from typing import Literal

import attrs

FaultKind = Literal["status", "html", "truncated", "slow", "drop", "hang"]

#: The route names faults can target, one per endpoint.
ROUTES = (
    "start_run",
    "get_run",
    "list_runs",
    "create_webhook",
    "get_webhook",
    "delete_webhook",
    "list_webhooks",
)
#: Names that cover several routes at once.
GROUPS = {
    "runs": ROUTES[:3],
    "webhooks": ROUTES[3:],
    "*": ROUTES,
}


@attrs.frozen(kw_only=True)
class Fault:
    """One way an answer goes wrong. Build them with the classmethods.

    Attributes:
        kind: ``"status"``, ``"html"``, ``"truncated"``, ``"slow"``, ``"drop"`` or ``"hang"``.
        status: The HTTP status of ``"status"`` and ``"html"`` faults.
        retry_after: The ``Retry-After`` header to send, if any.
        delay: Seconds a ``"slow"`` answer waits (real time, not the server's clock).
        after_handling: The request takes effect (a run is started, ...) before the fault
            replaces the answer, like a gateway timing out on a server that did the work.
    """

    kind: FaultKind
    status: int = 500
    retry_after: str | None = None
    delay: float = 0.0
    after_handling: bool = False

    @classmethod
    def server_error(cls, status: int = 500, *, after_handling: bool = False) -> Fault:
        """A JSON error answer with a 5xx status (500, 502, 503, 504)."""
        return cls(kind="status", status=status, after_handling=after_handling)

    @classmethod
    def rate_limited(cls, retry_after: float | str | None = None) -> Fault:
        """A 429, with ``Retry-After`` (seconds, or any text such as an HTTP date) if given."""
        header = None if retry_after is None else _header_value(retry_after)
        return cls(kind="status", status=429, retry_after=header)

    @classmethod
    def html(cls, status: int = 502) -> Fault:
        """An HTML error page (``text/html``), as a proxy in front of the API sends."""
        return cls(kind="html", status=status)

    @classmethod
    def truncated(cls) -> Fault:
        """A 200 whose JSON body is cut off halfway."""
        return cls(kind="truncated", status=200, after_handling=True)

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """The normal answer, after ``seconds`` of real time."""
        return cls(kind="slow", status=200, delay=seconds)

    @classmethod
    def drop(cls, *, after_handling: bool = False) -> Fault:
        """Close the connection without answering."""
        return cls(kind="drop", status=0, after_handling=after_handling)

    @classmethod
    def hang(cls) -> Fault:
        """Never answer; the connection is closed only when the server shuts down."""
        return cls(kind="hang", status=0)


def _header_value(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def _check_route(route: str) -> str:
    if route not in ROUTES and route not in GROUPS:
        names = ", ".join((*ROUTES, *GROUPS))
        raise ValueError(f"unknown route {route!r}; expected one of {names}")
    return route


def _keys_for(route: str) -> list[str]:
    """The names that can target ``route``, most specific first."""
    return [route, *(name for name, members in GROUPS.items() if route in members)]


@attrs.define
class FaultPlan:
    """Which faults the next requests get: queued ones first, then by chance.

    Args:
        seed: Seeds the random draws, so a run of a test suite can be repeated exactly.
    """

    seed: int | None = 0
    _rng: random.Random = attrs.field(init=False)
    _queued: dict[str, deque[Fault]] = attrs.field(factory=dict, init=False)
    _rates: dict[str, list[tuple[Fault, float]]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def queue(self, route: str, faults: Iterable[Fault]) -> None:
        """The next requests to ``route`` get ``faults``, one each, in order."""
        self._queued.setdefault(_check_route(route), deque()).extend(faults)

    def add_rate(self, route: str, fault: Fault, probability: float) -> None:
        """Each request to ``route`` gets ``fault`` with ``probability`` (0 to 1)."""
        if not 0 <= probability <= 1:
            raise ValueError(f"probability must be between 0 and 1, got {probability!r}")
        self._rates.setdefault(_check_route(route), []).append((fault, probability))

    def clear(self) -> None:
        """Forget every queued fault and every rate."""
        self._queued.clear()
        self._rates.clear()

    def pick(self, route: str) -> Fault | None:
        """Return the fault the next request to ``route`` gets, if any."""
        keys = _keys_for(route)
        for key in keys:
            queue = self._queued.get(key)
            if queue:
                return queue.popleft()
        rates = [rate for key in keys for rate in self._rates.get(key, ())]
        if not rates:
            return None
        draw, cumulative = self._rng.random(), 0.0
        for fault, probability in rates:
            cumulative += probability
            if draw < cumulative:
                return fault
        return None
