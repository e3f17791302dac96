"""Scale-out: three arq worker processes on a real Redis, one SIGKILLed mid-way."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.jobs import Job

from copyai_poll import RunFailedError
from copyai_poll import arq as copyai_arq
from copyai_poll.testing import FakeCopyAI, Fault, Script

WORKER = Path(__file__).with_name("worker.py")
ROOT = WORKER.parent.parent.parent
RUNS = 300
SCRIPTS = {
    "WCFG-quick": Script.completes(("PROCESSING", 0.5)),
    "WCFG-slow": Script.completes(("NEW", 0.5), ("PROCESSING", 4.0)),
    "WCFG-fails": Script.fails(("PROCESSING", 2.0), error="boom"),
}
EXPECTED = {"WCFG-quick": "COMPLETE", "WCFG-slow": "COMPLETE", "WCFG-fails": "FAILED"}
WORKFLOWS = list(SCRIPTS)


def posts(server: FakeCopyAI) -> Counter[str]:
    """The start key of every POST the fake received."""
    starts = [r for r in server.requests if r.route == "start_run"]
    return Counter(r.body["metadata"][copyai_arq.KEY_FIELD] for r in starts)


async def results(redis: ArqRedis, job_ids: list[str], deadline: float) -> dict[str, Any]:
    """Every job's result, waiting for them until ``deadline`` (monotonic)."""
    found: dict[str, Any] = {}
    while len(found) < len(job_ids) and time.monotonic() < deadline:
        for job_id in job_ids:
            if job_id not in found:
                info = await Job(job_id, redis).result_info()
                if info is not None:
                    assert info.success, f"{job_id}: {info.result!r}"
                    found[job_id] = info.result
        await asyncio.sleep(0.2)
    missing = sorted(set(job_ids) - set(found))
    assert not missing, f"{len(missing)} jobs never finished, e.g. {missing[:3]}"
    return found


async def in_progress(redis: ArqRedis) -> dict[str, int]:
    """The jobs in progress, each with the PID of the worker that runs it."""
    held = {}
    async for key in redis.scan_iter(match="arq:in-progress:*"):
        job_id = key.decode().removeprefix("arq:in-progress:")
        owner = await redis.get(f"copyai_test:owner:{job_id}")
        if owner is not None:
            held[job_id] = int(owner)
    return held


def kinds_held(held: dict[str, int], pid: int) -> tuple[int, int]:
    """For the jobs in progress on ``pid``: (the fewer of its starts and waits, all of them)."""
    mine = [job for job, owner in held.items() if owner == pid]
    starts = sum(job.startswith("copyai_poll:start:") for job in mine)
    return min(starts, len(mine) - starts), len(mine)


async def until(condition: Any, deadline: float) -> None:
    """Wait until ``await condition()`` is true, or the deadline passed."""
    while not await condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
@pytest.mark.timeout(90)
@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
async def test_three_workers_one_killed(
    redis_url: str, arq_redis: ArqRedis, tmp_path: Path
) -> None:
    """300 runs through 3 workers, one SIGKILLed: true end states, one POST each, no wait left."""
    deadline = time.monotonic() + 60
    async with FakeCopyAI(seed=None) as server:
        for workflow_id, script in SCRIPTS.items():
            server.set_script(script, workflow_id=workflow_id)
        # Every start is slow, so the kill finds POSTs sent but not yet answered.
        server.fault_rate("start_run", Fault.slow(1.0), 1.0)
        env = {k: v for k, v in os.environ.items() if not k.startswith("COPYAI_")}
        env |= {"REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
        env |= {"COPYAI_BASE_URL": server.base_url, "COPYAI_API_KEY": server.api_key}
        log = (tmp_path / "workers.log").open("wb")
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable, str(WORKER), env=env, stdout=log, stderr=log
            )
            for _ in range(3)
        ]
        try:
            pids = {f"copyai_test:ready:{worker.pid}" for worker in workers}

            async def ready() -> bool:
                return len(pids) == await arq_redis.exists(*pids)

            await until(ready, deadline)
            keys = {f"req-{n}": WORKFLOWS[n % 3] for n in range(RUNS)}
            for key, workflow_id in keys.items():
                await copyai_arq.enqueue_start(arq_redis, workflow_id, {"n": key}, key=key)
                await asyncio.sleep(0.01)  # a steady stream: every worker gets both kinds

            async def mid_way() -> bool:
                """A third of the POSTs are in, and some worker is amid starts and waits."""
                if sum(posts(server).values()) < RUNS // 3:
                    return False
                held = await in_progress(arq_redis)
                return any(kinds_held(held, worker.pid)[0] for worker in workers)

            await until(mid_way, deadline)
            # Kill the worker in the middle of the most starts and waits at once.
            held = await in_progress(arq_redis)
            victim = max(workers, key=lambda worker: kinds_held(held, worker.pid))
            victim.kill()
            await victim.wait()
            held = await in_progress(arq_redis)
            orphans = [job for job, pid in held.items() if pid == victim.pid]
            assert min(kinds_held(held, victim.pid)) > 0, "the kill must orphan both kinds"

            starts = {copyai_arq.start_job_id(wf, key): key for key, wf in keys.items()}
            run_ids = await results(arq_redis, list(starts), deadline)
            waits = {
                copyai_arq.wait_job_id(keys[starts[job]], run_id): run_id
                for job, run_id in run_ids.items()
            }
            outcomes = await results(arq_redis, list(waits), deadline)

            assert Counter(dict.fromkeys(keys, 1)) == posts(server)
            assert sorted(server.run_ids()) == sorted(run_ids.values())
            for outcome in outcomes.values():
                true_status = server.run(outcome.run_id)["status"]
                assert EXPECTED[outcome.workflow_id] == true_status == outcome.run.status
                expected_error = RunFailedError if true_status == "FAILED" else type(None)
                assert expected_error is type(outcome.error)
            # What the killed worker held was finished by the others.
            owners = [await arq_redis.get(f"copyai_test:owner:{job}") for job in orphans]
            assert str(victim.pid).encode() not in owners
            starts_held = sum(job.startswith("copyai_poll:start:") for job in orphans)
            print(
                f"killed worker held {starts_held} starts, {len(orphans) - starts_held} waits",
                file=sys.stderr,
            )
            # Nothing waits twice, nor at all, at the end: no job queued or in progress.
            assert 0 == await arq_redis.zcard("arq:queue")
            assert [] == [k async for k in arq_redis.scan_iter(match="arq:in-progress:*")]
            assert RUNS == len(set(outcomes)) == len({o.run_id for o in outcomes.values()})
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.terminate()
            for worker in workers:
                await worker.wait()
            log.close()
