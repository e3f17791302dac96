"""The benchmark's webhooks rows (virtual time): what waiting with a receiver costs."""

from __future__ import annotations

import random

from bench import strategies
from copyai_poll import WebhookReceiver


def test_a_delivered_30_second_run_costs_two_requests() -> None:
    """The first poll and the woken one; the lag is the delivery's."""
    wait_for = strategies.webhooks(WebhookReceiver.SAFETY_NET)

    assert (2, strategies.DELIVERY_S) == wait_for(30.0, random.Random(0))


def test_a_lost_delivery_is_caught_by_the_safety_net() -> None:
    """With every delivery lost, the safety net's poll at 36 to 44 s detects a 30 s run."""
    requests, lag = strategies.webhooks(WebhookReceiver.SAFETY_NET, lost=1.0)(
        30.0, random.Random(0)
    )

    assert 2 == requests
    assert 6.0 <= lag <= 14.0


def test_the_webhooks_rows_beat_polling_on_both_axes() -> None:
    """Over the same runs, webhooks cost fewer requests than the default policy, with less lag."""
    outcomes = strategies.simulate_all(500)
    polling = outcomes["PollPolicy() (default)"]
    woken = outcomes["webhooks, SAFETY_NET"]

    assert woken.requests_per_run < polling.requests_per_run / 3
    assert woken.lag_p95_s < polling.lag_p95_s
