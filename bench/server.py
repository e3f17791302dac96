"""The fake Copy.ai API the contenders poll, in a process of its own, with a control port.

``python -m bench.server`` serves a `FakeCopyAI` on the wall clock and a second small
HTTP app, the control port, through which a pass has its runs started and scripted, and
counts their GETs. It
prints one JSON line (``base_url``, ``control_url``, ``api_key``) once both listen, and
serves until SIGTERM or SIGINT.

Each pass scripts its own fresh runs with a `DueScript`: NEW for a moment, PROCESSING,
then COMPLETE at a moment fixed on ``time.monotonic``, the clock every process of this
machine shares, so a client can tell how late it noticed.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import attrs
from aiohttp import web

from copyai_poll.testing import FakeCopyAI, Phase, Script, Step, serve

from .contenders import API_KEY_HEADER, WORKFLOW_ID

API_KEY = "bench-key"

_NEW = Phase(status="NEW")
_PROCESSING = Phase(status="PROCESSING")
_COMPLETE = Phase(status="COMPLETE", output={"Output 1": "Generated for the benchmark."})
# The fake re-checks a run once its script's steps are over (for webhooks, unused here):
# steps that never end keep due-time runs out of that heap.
_FOREVER = (Step("PROCESSING", 1e9),)


@attrs.frozen(kw_only=True)
class DueScript(Script):
    """NEW until ``processing_at``, PROCESSING until ``due``, then COMPLETE.

    Both moments are readings of ``time.monotonic`` (the fake's own clock here), not ages.
    """

    processing_at: float
    due: float
    steps: tuple[Step, ...] = _FOREVER

    def phase_at(self, age: float) -> Phase:
        """The phase now (``age`` is ignored: the moments are absolute)."""
        now = time.monotonic()
        if now >= self.due:
            return _COMPLETE
        return _NEW if now < self.processing_at else _PROCESSING


async def start_runs(fake: FakeCopyAI, count: int) -> list[str]:
    """Start ``count`` fresh runs through the fake's own API, 100 requests at a time.

    Done here rather than by the pass's process, so that the pass starts from a clean
    heap: its peak RSS then counts what watching the runs took, not starting them.
    """
    url = f"{fake.base_url}/workflow/{WORKFLOW_ID}/run"
    headers = {API_KEY_HEADER: fake.api_key}
    body = {"startVariables": {"Input 1": "benchmark"}}
    slots = asyncio.Semaphore(100)

    async def start(session: aiohttp.ClientSession) -> str:
        async with slots, session.post(url, json=body, headers=headers) as response:
            response.raise_for_status()
            run_id: str = (await response.json())["data"]["id"]
            return run_id

    async with aiohttp.ClientSession() as session:
        return list(await asyncio.gather(*(start(session) for _ in range(count))))


def script_runs(fake: FakeCopyAI, run_ids: list[str], order: Mapping[str, Any]) -> list[float]:
    """Script the runs to end ``due_in`` (+ a spread) seconds from now; their ends.

    The runs end evenly across ``spread`` seconds, in an order shuffled against the order
    they are polled in: otherwise every run would end at the same point of its poll cycle,
    and every detection lag would be the same.
    """
    offsets = [float(order["spread"]) * j / len(run_ids) for j in range(len(run_ids))]
    random.Random(0).shuffle(offsets)
    now = time.monotonic()
    processing_at = now + float(order["new_for"])
    dues = []
    for run_id, offset in zip(run_ids, offsets, strict=True):
        due = now + float(order["due_in"]) + offset
        fake.set_script(DueScript(processing_at=processing_at, due=due), run_id=run_id)
        dues.append(due)
    return dues


def control_app(fake: FakeCopyAI) -> web.Application:
    """The control port: ``POST /start`` and ``POST /gets``, JSON in and out.

    ``/start`` takes ``runs``, ``new_for``, ``due_in`` and ``spread`` (seconds), starts
    and scripts that many runs, and answers their ``run_ids`` and when each is ``due``.
    ``/gets`` takes ``run_ids`` and answers how many GETs reached them in all.
    """

    async def start(request: web.Request) -> web.Response:
        order = await request.json()
        run_ids = await start_runs(fake, int(order["runs"]))
        # The fake logs every request: put what earlier passes left out of the cyclic
        # collector's sight, so that no full collection stalls the server mid-pass.
        gc.collect()
        gc.freeze()
        due = script_runs(fake, run_ids, order)
        return web.json_response({"run_ids": run_ids, "due": due})

    async def gets(request: web.Request) -> web.Response:
        run_ids = (await request.json())["run_ids"]
        return web.json_response({"gets": sum(fake.get_count(r) for r in run_ids)})

    app = web.Application()
    app.router.add_post("/start", start)
    app.router.add_post("/gets", gets)
    return app


async def main() -> None:
    """Serve the fake and its control port until SIGTERM or SIGINT."""
    fake = FakeCopyAI(api_key=API_KEY, seed=None)
    runner = web.AppRunner(control_app(fake), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        control_url = f"http://{host}:{port}"

        def ready(server: FakeCopyAI) -> None:
            line = {"base_url": server.base_url, "control_url": control_url, "api_key": API_KEY}
            print(json.dumps(line), flush=True)

        await serve(fake, announce=None, on_ready=ready)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
