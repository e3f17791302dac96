"""`FakeCopyAI`: the fake server as an async context manager on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

import attrs
from aiohttp import web

from ._app import Backend, make_app
from ._clock import Clock, ManualClock, wall_clock
from ._demo import demo_faults, demo_scripts
from ._faults import Fault, FaultPlan
from ._log import RequestRecord
from ._quirks import Quirks
from ._scripts import Script
from ._state import FakeState
from ._webhooks import Delivery, DeliveryPlan, WebhookSender


@attrs.define(kw_only=True, repr=False)
class FakeCopyAI:
    """A fake Copy.ai Workflows API that behaves like the real one, quirks and all.

    ``async with FakeCopyAI() as server:`` serves on 127.0.0.1 on a free port; point a
    client at ``server.base_url`` with ``server.api_key``.

    Args:
        api_key: The key every request must send in ``x-copy-ai-api-key``.
        host: The address to bind.
        port: The port to bind; 0 picks a free one.
        clock: Where run ages are read from: `time.monotonic` by default, or a
            `ManualClock` (or any zero-argument callable returning seconds).
        script: The default `Script` of every run.
        quirks: The default `Quirks` of every run.
        credits_per_run: What each run costs, and reports as ``credits``.
        credit_budget: Credits available in all; None for no limit.
        seed: Seeds run ids and random faults, so runs repeat exactly; None for fresh ones.
        tick: Seconds between checks for finished runs (webhook events) on a wall clock.
        webhook_timeout: Seconds a webhook receiver gets to answer.
    """

    api_key: str = "test-key"
    host: str = "127.0.0.1"
    port: int = 0
    clock: Clock = wall_clock
    script: Script = attrs.field(factory=Script)
    quirks: Quirks = attrs.field(factory=Quirks)
    credits_per_run: int = 2
    credit_budget: int | None = None
    seed: int | None = 0
    tick: float = 0.05
    webhook_timeout: float = 5.0
    _state: FakeState = attrs.field(init=False)
    _faults: FaultPlan = attrs.field(init=False)
    _backend: Backend = attrs.field(init=False)
    _sender: WebhookSender = attrs.field(init=False)
    _runner: web.AppRunner | None = attrs.field(default=None, init=False)
    _bound_port: int | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self._sender = WebhookSender(clock=self.clock, timeout=self.webhook_timeout)
        self._state = FakeState(
            clock=self.clock,
            default_script=self.script,
            default_quirks=self.quirks,
            credits_per_run=self.credits_per_run,
            credit_budget=self.credit_budget,
            seed=self.seed,
            notify=self._sender.send,
        )
        self._faults = FaultPlan(seed=self.seed)
        self._backend = Backend(api_key=self.api_key, state=self._state, faults=self._faults)

    @classmethod
    def demo(cls, *, runs: int = 20, **options: Any) -> FakeCopyAI:
        """A fake for demos on a wall clock: varied runs of seconds, some flaky polls.

        The first ``runs`` runs started take `demo_scripts` in turn (some fail, some pass
        through RETRYING, one shows an undocumented status); later ones take 3.5 seconds
        to complete. Credits come as strings; a few polls meet 503s, 429s with
        ``Retry-After: 1``, HTML 502 pages or half-second delays.

        Args:
            runs: How many varied scripts to queue.
            options: Passed to `FakeCopyAI` (``seed`` also varies the scripts).

        Returns:
            The fake, not yet started.
        """
        options.setdefault("quirks", Quirks(credits_as_string=True))
        options.setdefault("script", Script.completes(("NEW", 0.5), ("PROCESSING", 3.0)))
        server = cls(**options)
        server.queue_scripts(*demo_scripts(server.seed or 0, runs))
        for route, fault, probability in demo_faults():
            server.fault_rate(route, fault, probability)
        return server

    def __repr__(self) -> str:
        where = self.base_url if self._bound_port is not None else "not started"
        return f"<FakeCopyAI {where} runs={len(self._state.run_ids())}>"

    # Lifecycle.

    def make_app(self) -> web.Application:
        """Return a new aiohttp application serving this fake, to mount or run yourself.

        Returns:
            An `aiohttp.web.Application` with the routes under ``/api``; its startup and
            cleanup open and close the webhook sender.
        """
        app = make_app(self._backend)
        app.cleanup_ctx.append(self._lifecycle)
        app.on_shutdown.append(self._release_waiters)
        return app

    async def start(self) -> None:
        """Bind and start serving; `close` undoes it."""
        if self._runner is not None:
            raise RuntimeError("this FakeCopyAI is already serving")
        runner = web.AppRunner(self.make_app(), shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])

    async def close(self) -> None:
        """Stop serving, release hanging requests, and finish webhook deliveries."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeCopyAI:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _lifecycle(self, _: web.Application) -> AsyncIterator[None]:
        self._backend.closing = asyncio.Event()
        self._sender.open()
        if isinstance(self.clock, ManualClock):
            unsubscribe = self.clock.subscribe(self._state.check)
            ticker = None
        else:
            unsubscribe = None
            ticker = asyncio.get_running_loop().create_task(self._tick())
        try:
            yield
        finally:
            if unsubscribe is not None:
                unsubscribe()
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            await self._sender.close()

    async def _release_waiters(self, _: web.Application) -> None:
        # Runs before aiohttp waits for handlers, so "hang" and "slow" ones end promptly.
        self._backend.closing.set()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            self._state.check()

    # Where it is.

    @property
    def base_url(self) -> str:
        """The API's base URL, e.g. ``http://127.0.0.1:54321/api``.

        Raises:
            RuntimeError: The server has not been started.
        """
        if self._bound_port is None:
            raise RuntimeError("start the FakeCopyAI (async with) before asking its base_url")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._bound_port}/api"

    # Runs.

    def set_script(
        self, script: Script, *, workflow_id: str | None = None, run_id: str | None = None
    ) -> None:
        """Set the script of one run, of a workflow's future runs, or of every run.

        Args:
            script: The new script; a run's age still counts from its start.
            workflow_id: Only runs of this workflow started from now on.
            run_id: Only this run (which then stops following any manual move).
        """
        self._state.set_script(script, workflow_id=workflow_id, run_id=run_id)

    def queue_scripts(self, *scripts: Script) -> None:
        """Give the next runs started, of any workflow, these scripts in order."""
        self._state.queue_scripts(scripts)

    def set_quirks(
        self, quirks: Quirks, *, workflow_id: str | None = None, run_id: str | None = None
    ) -> None:
        """Set the quirks of one run, of one workflow, or of every run.

        Args:
            quirks: Which odd shapes the answers take.
            workflow_id: Only this workflow's runs (and its pages of runs).
            run_id: Only this run.
        """
        self._state.set_quirks(quirks, workflow_id=workflow_id, run_id=run_id)

    def set_status(
        self,
        run_id: str,
        status: str,
        *,
        output: Mapping[str, Any] | None = None,
        error: Any = None,
    ) -> None:
        """Move a run by hand; from now on its script no longer drives it.

        Args:
            run_id: The run.
            status: Any status text, e.g. ``"COMPLETE"``.
            output: Its ``output`` from now on.
            error: Its ``error`` (shown when ``status`` is FAILED).
        """
        self._state.set_status(run_id, status, output=output, error=error)

    def run(self, run_id: str) -> dict[str, Any]:
        """Return the run object a GET would show now (``not_found_for`` aside).

        Raises:
            KeyError: No such run.
        """
        return self._state.view(run_id)

    def run_ids(self, workflow_id: str | None = None) -> list[str]:
        """Return the ids of the runs started so far (of one workflow), oldest first."""
        return self._state.run_ids(workflow_id)

    def get_count(self, run_id: str) -> int:
        """Return how many GET requests reached this run's URL, faulted ones included."""
        return self._state.get_counts[run_id]

    @property
    def credits_used(self) -> int:
        """Credits spent by the runs started so far."""
        return self._state.credits_used

    # Faults.

    def add_faults(self, route: str, *faults: Fault) -> None:
        """Give the next ``len(faults)`` requests to ``route`` these faults, in order.

        Args:
            route: ``"start_run"``, ``"get_run"``, ``"list_runs"``, ``"create_webhook"``,
                ``"get_webhook"``, ``"delete_webhook"``, ``"list_webhooks"``, or a group:
                ``"runs"``, ``"webhooks"``, ``"*"``.
            faults: One per request.
        """
        self._faults.queue(route, faults)

    def fault_rate(self, route: str, fault: Fault, probability: float) -> None:
        """Give each request to ``route`` ``fault`` with ``probability`` (seeded RNG).

        Queued faults (`add_faults`) come first.
        """
        self._faults.add_rate(route, fault, probability)

    def clear_faults(self) -> None:
        """Forget every queued fault and every fault rate."""
        self._faults.clear()

    # What happened.

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request received so far, oldest first, API key redacted."""
        return list(self._backend.requests)

    def register_webhook(
        self, url: str, event_type: str, *, workflow_id: str | None = None
    ) -> str:
        """Register a webhook without an HTTP request; return its id."""
        body = {"url": url, "eventType": event_type, "workflowId": workflow_id}
        return self._state.create_webhook(body).id

    def set_delivery_plan(self, plan: DeliveryPlan) -> None:
        """Drop, delay or duplicate a share of webhook deliveries, or change their shape.

        Args:
            plan: Applies to deliveries from now on; ``DeliveryPlan()`` restores the
                default (each sent once, at once, as the run object plus ``"type"``).
        """
        self._sender.set_plan(plan)

    @property
    def deliveries(self) -> list[Delivery]:
        """Every finished webhook delivery attempt, in the order they finished."""
        return list(self._sender.deliveries)

    async def flush_webhooks(self) -> list[Delivery]:
        """Wait for every webhook delivery due so far; return all deliveries."""
        self._state.check()
        await self._sender.flush()
        return self.deliveries
