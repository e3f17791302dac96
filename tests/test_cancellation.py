"""Cancellation over real sockets: nothing of ours is left running or open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from copyai_poll import CopyAIClient, PollPolicy, PollTimeoutError
from tests.helpers import KEY, RUN, WF, body


class HangingServer:
    """A loopback server whose get-run answers PROCESSING, then never answers again."""

    def __init__(self) -> None:
        self.requests = 0
        self.open_requests = 0
        self.hanging = asyncio.Event()

    async def get_run(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.requests == 1:
            return web.json_response(body("PROCESSING"))
        self.open_requests += 1
        self.hanging.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.open_requests -= 1
        raise AssertionError("unreachable")


@pytest_asyncio.fixture
async def server() -> AsyncIterator[tuple[HangingServer, str]]:
    """The hanging server on 127.0.0.1, on a free port."""
    state = HangingServer()
    app = web.Application()
    app.router.add_get("/api/workflow/{wf}/run/{run}", state.get_run)
    # handler_cancellation: a client closing its connection cancels the handler, which
    # is how the tests observe that the connection really closed.
    runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield state, f"http://127.0.0.1:{port}/api"
    await runner.cleanup()


async def wait_until(condition: asyncio.Event) -> None:
    """Wait for the server to reach a state, bounded so a bug fails instead of hanging."""
    async with asyncio.timeout(10):
        await condition.wait()


async def wait_for_server_to_let_go(state: HangingServer) -> None:
    """Wait until the server saw every connection of the client close."""
    async with asyncio.timeout(10):
        while state.open_requests or len(asyncio.all_tasks()) > 1:
            await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_failing_sibling_cancels_an_in_flight_poll(
    server: tuple[HangingServer, str],
) -> None:
    """A TaskGroup sibling's failure cancels the poll mid-request; its connection closes."""
    state, base_url = server
    policy = PollPolicy(initial=0.01, maximum=0.01)

    async def sibling() -> None:
        await wait_until(state.hanging)
        raise LookupError("sibling failed")

    async with CopyAIClient(KEY, base_url=base_url) as client:
        with pytest.raises(ExceptionGroup) as info:
            async with asyncio.TaskGroup() as group:
                poll = group.create_task(client.poll_until_done(WF, RUN, policy=policy))
                group.create_task(sibling())
        assert poll.cancelled()
        assert info.value.subgroup(LookupError) is not None
        assert client._session is not None
        assert 0 == len(client._session.connector._acquired)  # type: ignore[union-attr]

    await wait_for_server_to_let_go(state)


@pytest.mark.asyncio
async def test_deadline_cuts_a_hanging_request(server: tuple[HangingServer, str]) -> None:
    """The poll's timeout bounds a request that never answers, and frees the connection."""
    state, base_url = server

    async with CopyAIClient(KEY, base_url=base_url) as client:
        with pytest.raises(PollTimeoutError) as info:
            await client.poll_until_done(
                WF, RUN, timeout=0.3, policy=PollPolicy(initial=0.01, maximum=0.01)
            )
        assert client._session is not None
        assert 0 == len(client._session.connector._acquired)  # type: ignore[union-attr]

    assert "PROCESSING" == info.value.last_run.raw_status
    await wait_for_server_to_let_go(state)
