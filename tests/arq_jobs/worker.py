"""An arq worker running the `copyai_poll.arq` jobs against the fake, for the scale-out test.

Run as ``python tests/arq_jobs/worker.py`` with REDIS_URL, COPYAI_BASE_URL and
COPYAI_API_KEY set; it serves until SIGTERM (or SIGKILL, which is the point).
"""

from __future__ import annotations

import os
from typing import Any

from arq import run_worker
from arq.connections import RedisSettings

from copyai_poll import CopyAIClient, PollPolicy, RetryPolicy
from copyai_poll import arq as copyai_arq

# Short slices and leases, so that a killed worker's jobs move on within seconds.
FUNCTIONS = copyai_arq.functions(
    policy=PollPolicy(initial=0.2, maximum=0.5),
    timeout=120.0,
    slice_seconds=1.5,
    start_grace=1.0,
    start_timeout=3.0,
    margin=1.5,
)


async def startup(ctx: dict[Any, Any]) -> None:
    """A client with quick retries and a short request timeout, from the environment."""
    retry = RetryPolicy(attempts=3, initial=0.05, maximum=0.2)
    ctx[copyai_arq.CLIENT] = CopyAIClient(retry=retry, request_timeout=2.0)
    await ctx["redis"].set(f"copyai_test:ready:{os.getpid()}", 1, ex=600)


async def note_owner(ctx: dict[Any, Any]) -> None:
    """Record which process runs each job, so the test knows what the killed one held."""
    await ctx["redis"].set(f"copyai_test:owner:{ctx['job_id']}", os.getpid(), ex=600)


class WorkerSettings:
    functions = FUNCTIONS
    on_startup = startup
    on_shutdown = copyai_arq.shutdown
    on_job_start = note_owner
    redis_settings = RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://127.0.0.1"))
    max_jobs = 1000  # waits are I/O-bound: one worker holds hundreds
    poll_delay = 0.1


if __name__ == "__main__":
    run_worker(WorkerSettings)
