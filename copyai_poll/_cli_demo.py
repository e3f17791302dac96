"""``copyai-poll demo``: twenty scripted runs on an embedded fake server, watched live.

Below `_cli`, above `_cli_options`, `_cli_watch` and `_cli_display`.
"""

from __future__ import annotations

import collections
import functools
import statistics
import time
from typing import TYPE_CHECKING, Any

import attrs

from ._cli_display import DisplayLogHandler, Output
from ._cli_options import Options
from ._cli_watch import EXIT_FAILED, EXIT_OK, Watcher
from ._policy import PollPolicy, RetryPolicy

if TYPE_CHECKING:
    from .testing import FakeCopyAI

DEMO_RUNS = 20
DEMO_POLICY = PollPolicy(initial=0.2, maximum=1.0)
# Generous attempts: the demo's random faults must not end a run by bad luck.
DEMO_RETRY = RetryPolicy(attempts=6, initial=0.1, maximum=1.0)
DEMO_TIMEOUT = 60.0


async def demo(options: Options, log_handler: DisplayLogHandler, out: Output) -> int:
    """Start the demo's runs on an embedded fake and watch them; the exit code."""
    from .testing import DEMO_WORKFLOW_ID, FakeCopyAI, Fault, demo_scripts

    finals = [script.final for script in demo_scripts(0, DEMO_RUNS)]
    durations = [script.duration for script in demo_scripts(0, DEMO_RUNS)]
    fake = FakeCopyAI.demo(runs=DEMO_RUNS, seed=0)
    # Every kind of fault at least once, whatever the random draws bring.
    fake.add_faults(
        "get_run", Fault.server_error(503), Fault.rate_limited(retry_after=1), Fault.truncated()
    )
    options = attrs.evolve(options, policy=DEMO_POLICY, timeout=options.timeout or DEMO_TIMEOUT)
    watcher = options.watcher(out, log_handler)
    began = time.monotonic()
    async with fake:
        client = options.watching_client(
            watcher, api_key=fake.api_key, base_url=fake.base_url, retry=DEMO_RETRY
        )
        async with client:
            pairs = []
            for index in range(DEMO_RUNS):
                inputs = {"Input 1": f"Draft #{index + 1}"}
                metadata = {"demo": index + 1}
                run = await client.start_run(DEMO_WORKFLOW_ID, inputs, metadata=metadata)
                pairs.append((DEMO_WORKFLOW_ID, run.id))
            report = functools.partial(_demo_report, fake, finals, durations, began)
            code = await watcher.watch(client, pairs, summary=report)
    if code in (EXIT_OK, EXIT_FAILED):
        return EXIT_OK if not _unscripted(watcher, finals) else EXIT_FAILED
    return code


def _unscripted(watcher: Watcher, finals: list[str]) -> list[str]:
    """The runs that did not end as their script says."""
    views = list(watcher.views.values())
    return [v.run_id for v, final in zip(views, finals, strict=False) if v.outcome != final]


def _demo_report(
    fake: FakeCopyAI,
    finals: list[str],
    durations: list[float],
    began: float,
    watcher: Watcher,
) -> dict[str, Any]:
    """The demo's lines (and JSON fields) beyond the usual summary."""
    polls = [r for r in fake.requests if r.route == "get_run"]
    faults = collections.Counter(
        f"{r.fault.kind} {r.fault.status}" for r in polls if r.fault and r.fault.kind != "slow"
    )
    lags = _detection_lags(fake, durations, watcher)
    wrong = _unscripted(watcher, finals)
    fields = {
        "as_scripted": not wrong,
        "unscripted": wrong,
        "server_polls": len(polls),
        "faults": dict(faults),
        "lag_median": round(statistics.median(lags), 3) if lags else None,
        "lag_max": round(max(lags), 3) if lags else None,
        "seconds": round(time.monotonic() - began, 1),
    }
    fault_text = ", ".join(f"{k}: {n}" for k, n in sorted(faults.items())) or "none"
    lines = [
        "every run ended as scripted" if not wrong else f"not as scripted: {', '.join(wrong)}",
        f"server: {len(polls)} polls received; faults injected: {fault_text}",
    ]
    if lags:
        lines.append(
            f"detection lag (server's final transition -> client saw it): median "
            f"{fields['lag_median']:.2f}s, max {fields['lag_max']:.2f}s"
        )
    lines.append(f"demo took {fields['seconds']:.1f}s")
    return {"lines": lines, "fields": fields}


def _detection_lags(fake: FakeCopyAI, durations: list[float], watcher: Watcher) -> list[float]:
    """How long after each run's scripted end the client saw it end, in seconds.

    The fake runs on `time.monotonic`, like the display; a run's end is when its start
    request arrived plus its script's length.
    """
    starts = [r.time for r in fake.requests if r.route == "start_run" and r.status == 200]
    lags = []
    for view, start, duration in zip(watcher.views.values(), starts, durations, strict=False):
        if view.finished is not None and view.outcome in ("COMPLETE", "FAILED"):
            lags.append(max(0.0, view.finished - (start + duration)))
    return lags
