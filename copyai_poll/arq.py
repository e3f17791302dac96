"""Start and await Copy.ai runs as arq jobs, across any number of worker processes.

Install with ``pip install 'copyai-poll[arq]'``. Starting a run and waiting for it are two
jobs, so that a wait survives the process that started the run:

- the start job (`START_JOB`, id from `start_job_id`: your own key for the request) sends
  the POST once per key. It claims the key in Redis before the POST and records
  the run id after it, and sends the key in the run's ``metadata`` (`KEY_FIELD`). A try
  that finds a claim without a run id (its worker died mid-POST, or the answer was lost)
  looks the run up by that key in ``list_runs`` and adopts it; only a claim older than
  ``start_grace`` whose run the list does not show is sent again. It then enqueues the
  wait, and returns the run id.
- the wait job (`WAIT_JOB`, id from `wait_job_id`: the run id) polls in slices of
  ``slice_seconds``; a slice that ends before the run does re-enqueues the same job
  (arq's `Retry`). A job whose worker dies stays marked in progress until its lease (its
  arq timeout plus 10 s) runs out; then another worker runs it again. The job's result is
  a `RunOutcome`, the same value `poll_many` yields.

Job ids are unique in arq while a job is queued, running or its result is kept, so
enqueueing a start or a wait twice is harmless: the second enqueue returns None.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any

import attrs

try:
    from arq.connections import ArqRedis
    from arq.jobs import Job
    from arq.worker import Function, Retry, func
except ImportError as exc:  # pragma: no cover - exercised only where arq is absent
    raise ImportError("copyai_poll.arq needs arq: pip install 'copyai-poll[arq]'") from exc

from ._client import CopyAIClient
from ._errors import (
    APIConnectionError,
    APIError,
    CopyAIError,
    PollTimeoutError,
    RateLimitError,
    ResponseFormatError,
    RunFailedError,
    ServerError,
)
from ._models import WorkflowRun
from ._policy import PollPolicy
from ._poll import DEFAULT_TIMEOUT, RunOutcome, poll_until_done

__all__ = [
    "CLIENT",
    "KEY_FIELD",
    "OnDone",
    "START_JOB",
    "WAIT_JOB",
    "enqueue_start",
    "enqueue_wait",
    "functions",
    "shutdown",
    "start_job_id",
    "startup",
    "wait_job_id",
]

CLIENT = "copyai_client"
"""The key of the worker's ``ctx`` that holds the `CopyAIClient` the jobs use."""
KEY_FIELD = "copyai_poll_key"
"""The ``metadata`` field of a started run that carries its start key."""
START_JOB = "copyai_poll.start_run"
"""The arq function name of the start job."""
WAIT_JOB = "copyai_poll.wait_run"
"""The arq function name of the wait job."""

OnDone = Callable[[dict[Any, Any], RunOutcome], Awaitable[None]]
"""The type of ``on_done``: ``async def on_done(ctx, outcome: RunOutcome) -> None``."""

# Errors after which a POST may or may not have started the run.
_AMBIGUOUS = (APIConnectionError, ServerError, ResponseFormatError)
# A wait without a deadline still needs one for arq's job key: a year.
_FOREVER = 365 * 86400.0


def start_job_id(workflow_id: str, key: str) -> str:
    """The arq job id of the start of ``workflow_id`` for your request ``key``."""
    return f"copyai_poll:start:{workflow_id}:{key}"


def wait_job_id(workflow_id: str, run_id: str) -> str:
    """The arq job id of the wait for one run: one run, one wait."""
    return f"copyai_poll:wait:{workflow_id}:{run_id}"


def _claim_key(workflow_id: str, key: str) -> str:
    return f"copyai_poll:claim:{workflow_id}:{key}"


async def enqueue_start(
    redis: ArqRedis,
    workflow_id: str,
    start_variables: Mapping[str, Any],
    *,
    key: str,
    metadata: Mapping[str, Any] | None = None,
) -> Job | None:
    """Enqueue the start of a run, at most one per ``key``.

    Args:
        redis: arq's pool, from `arq.create_pool`.
        workflow_id: The workflow to run.
        start_variables: Its ``startVariables``.
        key: Your id for this request (an order id, a document id, ...): however often it
            is enqueued, and whatever happens to workers, it starts at most one run.
        metadata: The run's ``metadata``; `KEY_FIELD` is added to it.

    Returns:
        The start job, whose result is the run id; None if that key's start job is
        already queued, running, or its result is still kept.
    """
    return await redis.enqueue_job(
        START_JOB,
        workflow_id,
        dict(start_variables),
        key,
        dict(metadata or {}),
        _job_id=start_job_id(workflow_id, key),
    )


async def enqueue_wait(
    redis: ArqRedis, workflow_id: str, run_id: str, *, timeout: float | None = DEFAULT_TIMEOUT
) -> Job | None:
    """Enqueue the wait for a run started anywhere, e.g. to resume waits after a restart.

    Args:
        redis: arq's pool.
        workflow_id: The run's workflow.
        run_id: The run: the only state a wait needs.
        timeout: Seconds from now the whole wait may last; None waits for ever.

    Returns:
        The wait job, whose result is a `RunOutcome`; None if that run's wait is already
        queued, running, or its result is still kept.
    """
    now = time.time()
    deadline = None if timeout is None else now + timeout
    expires = (_FOREVER if timeout is None else timeout) + 3600.0
    return await redis.enqueue_job(
        WAIT_JOB,
        workflow_id,
        run_id,
        deadline,
        now,
        _job_id=wait_job_id(workflow_id, run_id),
        _expires=timedelta(seconds=expires),
    )


async def startup(ctx: dict[Any, Any]) -> None:
    """An ``on_startup`` that gives the jobs a `CopyAIClient` configured from the environment.

    To configure the client yourself, put your own in ``ctx[CLIENT]`` instead.
    """
    ctx.setdefault(CLIENT, CopyAIClient())


async def shutdown(ctx: dict[Any, Any]) -> None:
    """An ``on_shutdown`` that closes the client in ``ctx[CLIENT]``."""
    client = ctx.get(CLIENT)
    if isinstance(client, CopyAIClient):
        await client.close()


@attrs.frozen
class _Jobs:
    """The two jobs, sharing their settings."""

    policy: PollPolicy
    timeout: float | None
    slice_seconds: float
    start_grace: float
    claim_ttl: int
    on_done: OnDone | None

    async def start(
        self,
        ctx: dict[Any, Any],
        workflow_id: str,
        start_variables: dict[str, Any],
        key: str,
        metadata: dict[str, Any],
    ) -> str:
        """The start job: start the run once, enqueue its wait, return its id."""
        redis: ArqRedis = ctx["redis"]
        client: CopyAIClient = ctx[CLIENT]
        claim = _claim_key(workflow_id, key)
        now = time.time()
        if not await redis.set(claim, json.dumps({"at": now}), nx=True, ex=self.claim_ttl):
            run_id = await self._recover(redis, client, workflow_id, key, now)
            if run_id is not None:
                return await self._started(redis, workflow_id, key, run_id)
        try:
            started = await client.start_run(
                workflow_id, start_variables, metadata={**metadata, KEY_FIELD: key}
            )
        except RateLimitError as exc:
            # Refused before it was acted on: the next try may POST again at once.
            await redis.delete(claim)
            raise Retry(defer=exc.retry_after or 1.0) from exc
        except _AMBIGUOUS as exc:
            # Maybe started: the next try looks for the run by its key before any POST.
            raise Retry(defer=self.start_grace) from exc
        except APIError:
            # Refused (400, 401, 403, 404): nothing started, so the key is free again.
            await redis.delete(claim)
            raise
        return await self._started(redis, workflow_id, key, started.id)

    async def _recover(
        self, redis: ArqRedis, client: CopyAIClient, workflow_id: str, key: str, now: float
    ) -> str | None:
        """After an earlier try claimed the key: its run id, or None to POST (re-claimed)."""
        claim = _claim_key(workflow_id, key)
        raw = await redis.get(claim)
        recorded = json.loads(raw) if raw else {"at": now}
        if recorded.get("run_id"):
            return str(recorded["run_id"])
        async for run in client.list_runs(workflow_id):
            if run.metadata.get(KEY_FIELD) == key:
                return run.id
        age = now - float(recorded["at"])
        if age < self.start_grace:
            # The list may lag behind a start: look again before concluding it never was.
            raise Retry(defer=self.start_grace - age)
        await redis.set(claim, json.dumps({"at": now}), ex=self.claim_ttl)
        return None

    async def _started(self, redis: ArqRedis, workflow_id: str, key: str, run_id: str) -> str:
        record = json.dumps({"at": time.time(), "run_id": run_id})
        await redis.set(_claim_key(workflow_id, key), record, ex=self.claim_ttl)
        await enqueue_wait(redis, workflow_id, run_id, timeout=self.timeout)
        return run_id

    async def wait(
        self,
        ctx: dict[Any, Any],
        workflow_id: str,
        run_id: str,
        deadline: float | None,
        began: float,
    ) -> RunOutcome:
        """The wait job: poll one slice; re-enqueue itself, or return the `RunOutcome`."""
        outcome = await self._slice(ctx[CLIENT], workflow_id, run_id, deadline, began)
        if self.on_done is not None:
            await self.on_done(ctx, outcome)
        return outcome

    async def _slice(
        self,
        client: CopyAIClient,
        workflow_id: str,
        run_id: str,
        deadline: float | None,
        began: float,
    ) -> RunOutcome:
        now = time.time()
        left = math.inf if deadline is None else max(0.0, deadline - now)
        this_slice = min(self.slice_seconds, left)
        # The grace for 404s counts from the first slice, not from this one.
        grace = max(0.0, self.policy.not_found_grace - (now - began))
        policy = attrs.evolve(self.policy, not_found_grace=grace)
        try:
            run = await poll_until_done(
                client, workflow_id, run_id, policy=policy, timeout=this_slice
            )
        except PollTimeoutError as exc:
            if left > this_slice:
                raise Retry() from exc  # the next slice, on whichever worker is free
            return _outcome(workflow_id, run_id, exc.last_run, exc)
        except RunFailedError as exc:
            return _outcome(workflow_id, run_id, exc.run, exc)
        except CopyAIError as exc:
            return _outcome(workflow_id, run_id, None, exc)
        return _outcome(workflow_id, run_id, run, None)


def _outcome(
    workflow_id: str, run_id: str, run: WorkflowRun | None, error: Exception | None
) -> RunOutcome:
    return RunOutcome(workflow_id=workflow_id, run_id=run_id, run=run, error=error)


def functions(
    *,
    policy: PollPolicy | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    slice_seconds: float = 60.0,
    start_grace: float = 30.0,
    start_timeout: float = 120.0,
    margin: float = 30.0,
    claim_ttl: float = 7 * 86400.0,
    on_done: OnDone | None = None,
) -> list[Function]:
    """The start and wait jobs, for a worker's ``functions``.

    Args:
        policy: When to poll inside a slice (`PollPolicy`); its ``not_found_grace`` counts
            from the first slice.
        timeout: Seconds a wait enqueued by a start job may last in all; None: for ever.
        slice_seconds: How long one wait job polls before it re-enqueues itself. A
            shorter slice spreads waits over workers sooner; each slice starts with a poll.
        start_grace: How long a claimed start whose run the list does not show is
            awaited before it is sent again (the list may lag behind a start).
        start_timeout: arq's timeout for one start job: the POST, its retries, a lookup.
        margin: Added to ``slice_seconds`` for the wait job's arq timeout.
        claim_ttl: Seconds a key's claim (and so its run id) is remembered in Redis.
        on_done: ``await on_done(ctx, outcome)`` runs in the wait job once the run is
            over, before the job completes; a worker dying in between runs it again, so
            make it idempotent (the run id is a natural key).

    Returns:
        Two `arq.worker.Function`s, named `START_JOB` and `WAIT_JOB`.
    """
    jobs = _Jobs(
        policy=policy or PollPolicy(),
        timeout=timeout,
        slice_seconds=slice_seconds,
        start_grace=start_grace,
        claim_ttl=math.ceil(claim_ttl),
        on_done=on_done,
    )
    # The wait's tries are its slices: its deadline, not a count, bounds it.
    return [
        func(jobs.start, name=START_JOB, timeout=start_timeout, max_tries=10),
        func(jobs.wait, name=WAIT_JOB, timeout=slice_seconds + margin, max_tries=2**31),
    ]
