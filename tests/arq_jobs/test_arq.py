"""The arq jobs, one in-process burst worker on a real Redis, against the fake server."""

from __future__ import annotations

import ast
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job
from arq.worker import Worker

from copyai_poll import (
    CopyAIClient,
    CreditLimitError,
    PollPolicy,
    PollTimeoutError,
    RetryPolicy,
    RunFailedError,
)
from copyai_poll import arq as copyai_arq
from copyai_poll.testing import FakeCopyAI, Fault, Script

# arq closes its pool with redis-py's deprecated close(); that is arq's business, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

QUICK = PollPolicy(initial=0.05, maximum=0.1)


async def run_jobs(redis_url: str, client: CopyAIClient, **options: Any) -> Worker:
    """Run a burst worker until the queue is empty (deferred retries included)."""
    options.setdefault("policy", QUICK)
    worker = Worker(
        copyai_arq.functions(**options),
        redis_settings=RedisSettings.from_dsn(redis_url),
        burst=True,
        poll_delay=0.02,
        handle_signals=False,
        ctx={copyai_arq.CLIENT: client},
        max_jobs=100,
    )
    try:
        await worker.main()
    finally:
        await worker.close()
    return worker


def started_keys(server: FakeCopyAI) -> Counter[str]:
    """How many POSTs the fake saw for each start key."""
    starts = [r for r in server.requests if r.route == "start_run"]
    return Counter(r.body["metadata"][copyai_arq.KEY_FIELD] for r in starts)


async def result(redis: ArqRedis, job_id: str) -> Any:
    return await Job(job_id, redis).result(timeout=5, poll_delay=0.02)


@pytest.mark.asyncio
async def test_start_then_wait(redis_url: str, arq_redis: ArqRedis) -> None:
    """A start job starts the run, returns its id and enqueues its wait, whose result is the outcome."""
    async with (
        FakeCopyAI() as server,
        CopyAIClient(api_key=server.api_key, base_url=server.base_url) as client,
    ):
        job = await copyai_arq.enqueue_start(
            arq_redis, "WCFG-1", {"Input 1": "x"}, key="order-1", metadata={"user": "7"}
        )
        assert job is not None
        await run_jobs(redis_url, client)
        run_id = await result(arq_redis, copyai_arq.start_job_id("WCFG-1", "order-1"))
        outcome = await result(arq_redis, copyai_arq.wait_job_id("WCFG-1", run_id))
        (start,) = [r for r in server.requests if r.route == "start_run"]
    assert {"user": "7", copyai_arq.KEY_FIELD: "order-1"} == start.body["metadata"]
    assert (run_id, "COMPLETE", None) == (outcome.run_id, outcome.run.status, outcome.error)


@pytest.mark.asyncio
async def test_one_key_one_run(redis_url: str, arq_redis: ArqRedis) -> None:
    """Enqueueing a key's start again, even after its job finished, starts no second run."""
    async with (
        FakeCopyAI() as server,
        CopyAIClient(api_key=server.api_key, base_url=server.base_url) as client,
    ):
        first = await copyai_arq.enqueue_start(arq_redis, "WCFG-1", {}, key="k")
        again = await copyai_arq.enqueue_start(arq_redis, "WCFG-1", {}, key="k")
        await run_jobs(redis_url, client)
        run_id = await result(arq_redis, copyai_arq.start_job_id("WCFG-1", "k"))
        # The job's result gone (say it expired), the key's claim still knows the run.
        await arq_redis.delete(f"arq:result:{copyai_arq.start_job_id('WCFG-1', 'k')}")
        assert await copyai_arq.enqueue_start(arq_redis, "WCFG-1", {}, key="k") is not None
        await run_jobs(redis_url, client)
        run_id_again = await result(arq_redis, copyai_arq.start_job_id("WCFG-1", "k"))
    assert (first is not None, again) == (True, None)
    assert run_id == run_id_again
    assert Counter({"k": 1}) == started_keys(server)


@pytest.mark.asyncio
async def test_lost_answer_adopts_the_run(redis_url: str, arq_redis: ArqRedis) -> None:
    """A start whose answer is lost after the server acted finds its run by key: one POST."""
    async with (
        FakeCopyAI() as server,
        CopyAIClient(
            api_key=server.api_key, base_url=server.base_url, retry=RetryPolicy(attempts=1)
        ) as client,
    ):
        server.add_faults("start_run", Fault.drop(after_handling=True))
        await copyai_arq.enqueue_start(arq_redis, "WCFG-1", {}, key="lost")
        await run_jobs(redis_url, client, start_grace=0.2)
        run_id = await result(arq_redis, copyai_arq.start_job_id("WCFG-1", "lost"))
        outcome = await result(arq_redis, copyai_arq.wait_job_id("WCFG-1", run_id))
        assert [run_id] == server.run_ids()
    assert Counter({"lost": 1}) == started_keys(server)
    assert outcome.ok


@pytest.mark.asyncio
async def test_claim_without_a_run_is_sent_again(redis_url: str, arq_redis: ArqRedis) -> None:
    """A claim left by a worker that died before its POST arrived is sent once start_grace passed."""
    await arq_redis.set("copyai_poll:claim:WCFG-1:orphan", json.dumps({"at": 0.0}))
    async with (
        FakeCopyAI() as server,
        CopyAIClient(api_key=server.api_key, base_url=server.base_url) as client,
    ):
        await copyai_arq.enqueue_start(arq_redis, "WCFG-1", {}, key="orphan")
        await run_jobs(redis_url, client)
        run_id = await result(arq_redis, copyai_arq.start_job_id("WCFG-1", "orphan"))
    assert [run_id] == server.run_ids()
    assert Counter({"orphan": 1}) == started_keys(server)


@pytest.mark.asyncio
async def test_refused_start_frees_its_key(redis_url: str, arq_redis: ArqRedis) -> None:
    """A start the server refuses fails its job with the error and leaves no claim behind."""
    async with (
        FakeCopyAI(credit_budget=0) as server,
        CopyAIClient(api_key=server.api_key, base_url=server.base_url) as client,
    ):
        await copyai_arq.enqueue_start(arq_redis, "WCFG-1", {}, key="broke")
        await run_jobs(redis_url, client)
        job = Job(copyai_arq.start_job_id("WCFG-1", "broke"), arq_redis)
        with pytest.raises(CreditLimitError):
            await job.result(timeout=5, poll_delay=0.02)
    assert [] == server.run_ids()
    assert 0 == await arq_redis.exists("copyai_poll:claim:WCFG-1:broke")


@pytest.mark.asyncio
async def test_long_wait_runs_in_slices(redis_url: str, arq_redis: ArqRedis) -> None:
    """A wait longer than a slice re-enqueues itself under the same id and still ends FAILED."""
    done: list[Any] = []

    async def on_done(ctx: dict[Any, Any], outcome: Any) -> None:
        done.append(outcome)

    script = Script.fails(("PROCESSING", 1.0), error="boom")
    async with (
        FakeCopyAI(script=script) as server,
        CopyAIClient(api_key=server.api_key, base_url=server.base_url) as client,
    ):
        run_id = (await client.start_run("WCFG-1", {})).id
        assert await copyai_arq.enqueue_wait(arq_redis, "WCFG-1", run_id) is not None
        assert await copyai_arq.enqueue_wait(arq_redis, "WCFG-1", run_id) is None
        await run_jobs(redis_url, client, slice_seconds=0.3, on_done=on_done)
        info = await Job(copyai_arq.wait_job_id("WCFG-1", run_id), arq_redis).result_info()
    assert info is not None
    assert info.job_try > 2  # a try per slice
    assert isinstance(info.result.error, RunFailedError)
    assert ("FAILED", "boom") == (info.result.run.status, info.result.run.error)
    assert [run_id] == [outcome.run_id for outcome in done]


@pytest.mark.asyncio
async def test_wait_ends_at_its_deadline(redis_url: str, arq_redis: ArqRedis) -> None:
    """A wait whose deadline passes ends with a PollTimeoutError outcome, not an endless retry."""
    async with (
        FakeCopyAI(script=Script.completes(("PROCESSING", 3600))) as server,
        CopyAIClient(api_key=server.api_key, base_url=server.base_url) as client,
    ):
        run_id = (await client.start_run("WCFG-1", {})).id
        await copyai_arq.enqueue_wait(arq_redis, "WCFG-1", run_id, timeout=0.5)
        await run_jobs(redis_url, client, slice_seconds=0.2)
        outcome = await result(arq_redis, copyai_arq.wait_job_id("WCFG-1", run_id))
    assert isinstance(outcome.error, PollTimeoutError)
    assert "PROCESSING" == outcome.run.status


def test_exports() -> None:
    """copyai_poll.arq's __all__ is sorted and names every public name it defines."""
    tree = ast.parse(Path(copyai_arq.__file__).read_text(encoding="utf-8"))
    defined = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            defined |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    public = {name for name in defined if not name.startswith("_")}
    assert sorted(copyai_arq.__all__) == copyai_arq.__all__
    assert public == set(copyai_arq.__all__)
