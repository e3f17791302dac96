"""One measured pass of one contender, in a process of its own.

``python -m bench.worker SPEC`` (SPEC: the JSON of a `Spec`) prints the JSON of its
`measure`. A fresh process per pass keeps the passes apart: the client's CPU time, its
peak RSS and its allocations are this contender's alone, and nothing one pass leaves
behind (pools, arenas, caches) flatters the next.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import sys
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import attrs

from .contenders import CONTENDERS, Target
from .strategies import percentile

#: How often the ticker task asks to be woken; its lateness is the event loop's lag.
TICK = 0.01
_STATUS = Path("/proc/self/status")


@attrs.frozen(kw_only=True)
class Spec:
    """What one pass does: which contender waits for how many runs, and how."""

    contender: str
    runs: int
    interval: float
    #: Seconds from the start of the pass to the first run's end; the last ends one
    #: ``interval`` later, so that the runs end evenly across a poll interval.
    due_in: float
    base_url: str
    control_url: str
    api_key: str
    loop: str = "asyncio"
    trace_memory: bool = False
    ticker: bool = False


# -- memory --------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        found = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) if found else None


def reset_peak_rss() -> bool:
    """Start counting the peak RSS from now (Linux); False where that cannot be done."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_kib() -> int | None:
    """The resident set size now, in KiB (Linux)."""
    return _status_kib("VmRSS")


def peak_rss_kib() -> int | None:
    """The peak RSS since `reset_peak_rss`, in KiB (Linux)."""
    return _status_kib("VmHWM")


# -- one pass ------------------------------------------------------------------------------


async def _control(session: aiohttp.ClientSession, url: str, order: dict[str, Any]) -> Any:
    async with session.post(url, json=order) as response:
        response.raise_for_status()
        return await response.json()


async def _tick(lateness: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + TICK
        await asyncio.sleep(TICK)
        lateness.append(loop.time() - due)


async def measure(spec: Spec) -> dict[str, Any]:
    """Have fresh runs started and scripted, then measure the contender waiting for them."""
    contender = CONTENDERS[spec.contender]
    target = Target(base_url=spec.base_url, api_key=spec.api_key, interval=spec.interval)
    async with aiohttp.ClientSession() as control:
        order = {
            "runs": spec.runs,
            "new_for": spec.interval / 2,
            "due_in": spec.due_in,
            "spread": spec.interval,
        }
        started = await _control(control, f"{spec.control_url}/start", order)
        run_ids, due = started["run_ids"], started["due"]
        seen: dict[str, float] = {}
        lateness: list[float] = []
        sample = await _timed(spec, lambda: contender(target, run_ids, _recorder(seen)), lateness)
        gets = (await _control(control, f"{spec.control_url}/gets", {"run_ids": run_ids}))["gets"]
    if len(seen) != spec.runs:
        raise RuntimeError(f"{spec.contender}: {len(seen)} of {spec.runs} runs resolved")
    lags = [seen[run_id] - d for run_id, d in zip(run_ids, due, strict=True)]
    sample |= {
        "resolved": len(seen),
        # Other work on the machine moves every figure: kept beside each sample.
        "load_1min": os.getloadavg()[0],
        "requests": gets,
        "cpu_per_poll_us": sample["cpu_s"] / gets * 1e6,
        "requests_per_run": gets / spec.runs,
        "lag_p50_ms": percentile(lags, 50) * 1e3,
        "lag_p95_ms": percentile(lags, 95) * 1e3,
        "lag_max_ms": max(lags) * 1e3,
    }
    if spec.ticker:
        sample["ticks"] = len(lateness)  # none at all in a pass shorter than a tick
    if lateness:
        sample |= {
            "loop_lag_p50_ms": percentile(lateness, 50) * 1e3,
            "loop_lag_p99_ms": percentile(lateness, 99) * 1e3,
            "loop_lag_max_ms": max(lateness) * 1e3,
        }
    for key in ("traced_peak_kib", "rss_peak_kib"):
        if sample.get(key) is not None:
            sample[key.replace("_kib", "_per_run_kib")] = sample[key] / spec.runs
    return sample


def _recorder(seen: dict[str, float]) -> Callable[[str], None]:
    def done(run_id: str) -> None:
        seen[run_id] = time.monotonic()

    return done


async def _timed(
    spec: Spec, wait: Callable[[], Coroutine[Any, Any, None]], lateness: list[float]
) -> dict[str, Any]:
    """Run ``wait``, measuring this process's CPU, its peak RSS and allocations."""
    gc.collect()
    tracing = spec.trace_memory and not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    traced_base = tracemalloc.get_traced_memory()[0]
    rss_base = rss_kib() if reset_peak_rss() else None
    ticker = asyncio.create_task(_tick(lateness)) if spec.ticker else None
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        await wait()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        peak = peak_rss_kib()
        traced_peak = tracemalloc.get_traced_memory()[1] - traced_base
    finally:
        if tracing:
            tracemalloc.stop()
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "rss_peak_kib": peak - rss_base if peak is not None and rss_base is not None else None,
        "traced_peak_kib": traced_peak / 1024 if spec.trace_memory else None,
    }


def run(spec: Spec) -> dict[str, Any]:
    """Measure one pass on the event loop ``spec.loop`` names (asyncio or uvloop)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if spec.loop == "uvloop":
        import uvloop  # optional: only the uvloop rows need it

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(measure(spec))


def main(argv: list[str]) -> int:
    """Measure the pass the JSON ``argv[0]`` describes; print the results as JSON."""
    spec = Spec(**json.loads(argv[0]))
    print(json.dumps(run(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
