"""The contenders: every way of waiting for runs that the benchmark compares.

Each contender waits for every run of ``run_ids`` to end, calling ``done(run_id)`` the
moment its caller would know that the run ended, and opens (and closes) whatever session
or client it needs itself, as its user would: that cost is part of what is measured.
All of them poll at the same fixed interval.

To add a contender (the tracker with and without ``sweep``, waiting with webhooks, ...),
write one more function of this shape and name it in `CONTENDERS`; every table picks it up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

import aiohttp
import attrs
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from copyai_poll import CopyAIClient, PollPolicy, poll_many, poll_until_done

WORKFLOW_ID = "WCFG-bench"
API_KEY_HEADER = "x-copy-ai-api-key"
TERMINAL = frozenset({"COMPLETE", "FAILED"})


@attrs.frozen(kw_only=True)
class Target:
    """Where the runs are and how often to poll them."""

    base_url: str
    api_key: str
    interval: float

    def run_url(self, run_id: str) -> str:
        """The URL of one run of the benchmark's workflow."""
        return f"{self.base_url}/workflow/{WORKFLOW_ID}/run/{run_id}"

    def fixed_policy(self) -> PollPolicy:
        """The library's policy for polling at exactly ``interval``."""
        return PollPolicy(initial=self.interval, maximum=self.interval, multiplier=1.0, jitter=0.0)


Done = Callable[[str], None]
Contender = Callable[[Target, list[str], Done], Awaitable[None]]


async def _each(run_ids: list[str], wait: Callable[[str], Awaitable[Any]], done: Done) -> None:
    """Wait for every run at once with ``wait``, calling ``done`` as each one ends."""

    async def one(run_id: str) -> None:
        await wait(run_id)
        done(run_id)

    await asyncio.gather(*(one(run_id) for run_id in run_ids))


# -- by hand -------------------------------------------------------------------------------


async def raw_aiohttp(target: Target, run_ids: list[str], done: Done) -> None:
    """The floor: ``session.get``, ``json()``, ``asyncio.sleep``, and nothing else."""
    headers = {API_KEY_HEADER: target.api_key}

    async with aiohttp.ClientSession() as session:

        async def wait(run_id: str) -> dict[str, Any]:
            url = target.run_url(run_id)
            while True:
                async with session.get(url, headers=headers) as response:
                    body = await response.json()
                run: dict[str, Any] = body["data"]
                if run["status"] in TERMINAL:
                    return run
                await asyncio.sleep(target.interval)

        await _each(run_ids, wait, done)


@retry(
    stop=stop_after_attempt(4),
    wait=wait_exponential(multiplier=0.5, max=8),
    retry=retry_if_exception_type((aiohttp.ClientError, TimeoutError)),
    reraise=True,
)
async def _fetch_run(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> dict[str, Any]:
    async with session.get(url, headers=headers) as response:
        response.raise_for_status()
        body: dict[str, Any] = await response.json()
    return body


async def tenacity_by_hand(target: Target, run_ids: list[str], done: Done) -> None:
    """What users write instead of this library: a ``@retry`` fetch in a ``while`` loop."""
    headers = {API_KEY_HEADER: target.api_key}

    async with aiohttp.ClientSession() as session:

        async def wait(run_id: str) -> dict[str, Any]:
            url = target.run_url(run_id)
            while True:
                run: dict[str, Any] = (await _fetch_run(session, url, headers))["data"]
                if run["status"] in TERMINAL:
                    return run
                await asyncio.sleep(target.interval)

        await _each(run_ids, wait, done)


# -- copyai_poll ---------------------------------------------------------------------------


async def library_poll_until_done(target: Target, run_ids: list[str], done: Done) -> None:
    """`poll_until_done` for every run at once, through one shared `CopyAIClient`."""
    policy = target.fixed_policy()
    async with CopyAIClient(target.api_key, base_url=target.base_url) as client:

        def wait(run_id: str) -> Awaitable[Any]:
            return poll_until_done(client, WORKFLOW_ID, run_id, policy=policy)

        await _each(run_ids, wait, done)


async def library_poll_many(target: Target, run_ids: list[str], done: Done) -> None:
    """`poll_many` over every run, through one `CopyAIClient`, acting on each outcome."""
    runs = [(WORKFLOW_ID, run_id) for run_id in run_ids]
    async with (
        CopyAIClient(target.api_key, base_url=target.base_url) as client,
        aclosing(poll_many(client, runs, policy=target.fixed_policy())) as outcomes,
    ):
        async for outcome in outcomes:
            if not outcome.ok:
                raise RuntimeError(f"run {outcome.run_id} did not complete: {outcome.error}")
            done(outcome.run_id)


#: Every contender, by the name the tables show; the first is the floor the others are
#: compared with. The tracker (with and without ``sweep``) and waiting with webhooks
#: belong here once the library has them.
CONTENDERS: dict[str, Contender] = {
    "raw aiohttp": raw_aiohttp,
    "tenacity by hand": tenacity_by_hand,
    "poll_until_done": library_poll_until_done,
    "poll_many": library_poll_many,
}
RAW = "raw aiohttp"
