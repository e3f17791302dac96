"""A realistic mix of runs and faults, for demos on a wall clock."""

from __future__ import annotations

import random

from ._faults import Fault
from ._scripts import Script, Step

#: The workflow id demos use; any id works, this one just looks real.
DEMO_WORKFLOW_ID = "WCFG-84e56597-ebaf-4b49-a98c-75cacd4aecaa"


def demo_scripts(seed: int = 0, count: int = 20) -> list[Script]:
    """Return varied scripts lasting a few seconds each, as real runs do.

    Every fifth run fails; every fourth passes through RETRYING; the seventh shows an
    undocumented ``QUEUED`` status. The lengths vary with ``seed``.

    Args:
        seed: Seeds the durations.
        count: How many scripts.

    Returns:
        The scripts, in the order runs should take them.
    """
    rng = random.Random(seed)
    return [_demo_script(rng, index) for index in range(count)]


def _demo_script(rng: random.Random, index: int) -> Script:
    def step(status: str, low: float, high: float) -> Step:
        return Step(status, round(rng.uniform(low, high), 1))

    steps = [step("NEW", 0.2, 1.0)]
    if index == 6:
        steps.append(step("QUEUED", 0.5, 1.5))
    if rng.random() < 0.4:
        steps.append(step("WAITING", 0.5, 2.0))
    steps.append(step("PROCESSING", 1.0, 6.0))
    if index % 4 == 1:
        steps += [step("RETRYING", 0.5, 1.5), step("PROCESSING", 1.0, 3.0)]
    if index % 5 == 3:
        return Script.fails(*steps, error={"message": f"Step {index % 3 + 1} failed: timeout"})
    return Script.completes(*steps, output={"Output 1": f"Demo draft #{index + 1}"})


def demo_faults() -> list[tuple[str, Fault, float]]:
    """Return ``(route, fault, probability)`` triples for a lightly flaky demo server.

    Only polls meet faults: a started run is never lost to one.
    """
    return [
        ("get_run", Fault.server_error(503), 0.05),
        ("get_run", Fault.rate_limited(retry_after=1), 0.03),
        ("get_run", Fault.html(502), 0.02),
        ("get_run", Fault.slow(0.5), 0.05),
    ]
