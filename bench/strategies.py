"""Waiting strategies in virtual time: requests per run against detection lag.

No server and no sleeping: a run of known duration is "polled" at the moments a
strategy's schedule gives, starting when the run starts, and the first poll at or after
its end detects it. For the polling strategies that schedule is the library's own,
`PollPolicy.wait`, jitter included (from a seeded generator); a request costs no time.
A run is taken to keep one status from its first poll to its end: a change on the way
would restart the default policy's backoff (``reset_on_change``) and cost a few polls more.

To add a strategy (the tracker's sweeps, webhooks, ...), give `STRATEGIES` one more
function from a run's duration (and a random generator) to its requests and lag.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable

import attrs

from copyai_poll import PollPolicy, WebhookReceiver

#: Run durations: log-normal around a median of 30 s, kept between 5 s and 10 min.
MEDIAN_S, SIGMA, SHORTEST_S, LONGEST_S = 30.0, 1.0, 5.0, 600.0

#: Seconds from a run's end until its webhook delivery has woken the wait and its GET is
#: answered: a round trip or two on a real network (the acceptance script measures ~5 ms
#: on loopback, bench/acceptance/webhooks.py).
DELIVERY_S = 0.1

#: (requests, detection lag in seconds) for a run of the given duration.
Strategy = Callable[[float, random.Random], tuple[int, float]]


def _log_mean() -> float:
    """The log-normal's mu that puts the median of the kept durations at `MEDIAN_S`.

    Cutting at 5 s removes more of the distribution than cutting at 10 min does, so mu is
    a little below ``log(MEDIAN_S)``; found by bisection.
    """
    low, high = math.log(SHORTEST_S), math.log(LONGEST_S)
    lo, hi = low, high
    for _ in range(60):
        mu = (lo + hi) / 2
        cdf = statistics.NormalDist(mu, SIGMA).cdf
        below = (cdf(math.log(MEDIAN_S)) - cdf(low)) / (cdf(high) - cdf(low))
        lo, hi = (lo, mu) if below < 0.5 else (mu, hi)
    return (lo + hi) / 2


def durations(n: int, seed: int = 0) -> list[float]:
    """``n`` run durations in seconds, log-normal, median 30 s, between 5 s and 10 min."""
    rng = random.Random(seed)
    mu = _log_mean()
    found: list[float] = []
    while len(found) < n:
        d = rng.lognormvariate(mu, SIGMA)
        if SHORTEST_S <= d <= LONGEST_S:
            found.append(d)
    return found


def polling(policy: PollPolicy) -> Strategy:
    """Poll at once, then after ``policy.wait(0)``, ``policy.wait(1)``, ... seconds."""

    def wait_for(duration: float, rng: random.Random) -> tuple[int, float]:
        t, polls = 0.0, 1
        while t < duration:
            t += policy.wait(polls - 1, rand=rng.random)
            polls += 1
        return polls, t - duration

    return wait_for


def webhooks(policy: PollPolicy, lost: float = 0.0) -> Strategy:
    """Poll at once, then on ``policy``'s schedule; a delivery wakes one more poll.

    The delivery comes `DELIVERY_S` after the run's end, unless it is lost (with
    probability ``lost``); a scheduled poll that comes first detects the end itself.
    """

    def wait_for(duration: float, rng: random.Random) -> tuple[int, float]:
        woken = duration + DELIVERY_S if rng.random() >= lost else math.inf
        t, polls = 0.0, 1
        while t < duration:
            following = t + policy.wait(polls - 1, rand=rng.random)
            if woken <= following:
                return polls + 1, DELIVERY_S
            t, polls = following, polls + 1
        return polls, t - duration

    return wait_for


def fixed(seconds: float) -> PollPolicy:
    """A policy that polls every ``seconds``, exactly."""
    return PollPolicy(initial=seconds, maximum=seconds, multiplier=1.0, jitter=0.0)


#: Every strategy the plot shows, by its label. The tracker and webhooks go here too.
STRATEGIES: dict[str, Strategy] = {
    "fixed 1 s": polling(fixed(1.0)),
    "fixed 5 s": polling(fixed(5.0)),
    "PollPolicy() (default)": polling(PollPolicy()),
    "webhooks, SAFETY_NET": webhooks(WebhookReceiver.SAFETY_NET),
    "webhooks, 10% lost": webhooks(WebhookReceiver.SAFETY_NET, lost=0.1),
}


@attrs.frozen(kw_only=True)
class Outcome:
    """What one strategy cost and how late it was, over the same runs."""

    requests_per_run: float
    lag_p50_s: float
    lag_p95_s: float
    lag_max_s: float


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def simulate(strategy: Strategy, runs: list[float], seed: int = 0) -> Outcome:
    """Wait for every run of ``runs`` (their durations) with ``strategy``."""
    rng = random.Random(seed)
    results = [strategy(duration, rng) for duration in runs]
    lags = [lag for _, lag in results]
    return Outcome(
        requests_per_run=statistics.fmean(requests for requests, _ in results),
        lag_p50_s=percentile(lags, 50),
        lag_p95_s=percentile(lags, 95),
        lag_max_s=max(lags),
    )


def simulate_all(n: int, seed: int = 0) -> dict[str, Outcome]:
    """Every strategy of `STRATEGIES` over the same ``n`` runs."""
    runs = durations(n, seed)
    return {name: simulate(strategy, runs, seed) for name, strategy in STRATEGIES.items()}
