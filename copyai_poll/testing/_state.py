"""The fake's state: runs, webhooks and credits, with no I/O.

Handlers in ``_app`` translate HTTP to calls here; `ApiFailure` is the only way this
module says no.
"""

from __future__ import annotations

import heapq
import itertools
import random
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from ._clock import Clock
from ._quirks import Quirks
from ._scripts import Phase, Script
from ._wire import ApiFailure, RunFacts, Webhook, run_object, validation_error

STARTED = "workflowRun.started"
COMPLETED = "workflowRun.completed"
FAILED = "workflowRun.failed"
EVENT_TYPES = (STARTED, COMPLETED, FAILED)
_TERMINAL_EVENTS = {"COMPLETE": COMPLETED, "FAILED": FAILED}


@attrs.frozen(kw_only=True)
class Notice:
    """A webhook event that is due: where to send it and what."""

    webhook: Webhook
    event_type: str
    run_id: str
    payload: Mapping[str, Any]


@attrs.define(kw_only=True)
class _Run:
    facts: RunFacts
    started: float
    script: Script
    manual: Phase | None = None
    notified: set[str] = attrs.field(factory=set)
    foreign: bool = False  # started by "another client" (`Quirks.foreign_runs_per_second`)

    def phase_at(self, now: float) -> Phase:
        return self.manual or self.script.phase_at(now - self.started)


def _ignore(_: Notice) -> None:
    return None


@attrs.define(kw_only=True)
class FakeState:
    """Every run and webhook the fake knows, and the rules that answer for them."""

    clock: Clock
    default_script: Script = attrs.field(factory=Script)
    default_quirks: Quirks = attrs.field(factory=Quirks)
    credits_per_run: int = 2
    credit_budget: int | None = None
    seed: int | None = 0
    notify: Callable[[Notice], None] = _ignore
    credits_used: int = 0
    get_counts: Counter[str] = attrs.field(factory=Counter)
    _ids: random.Random = attrs.field(init=False)
    _runs: dict[str, _Run] = attrs.field(factory=dict, init=False)
    _queued: deque[Script] = attrs.field(factory=deque, init=False)
    _workflow_scripts: dict[str, Script] = attrs.field(factory=dict, init=False)
    _workflow_quirks: dict[str, Quirks] = attrs.field(factory=dict, init=False)
    _run_quirks: dict[str, Quirks] = attrs.field(factory=dict, init=False)
    _webhooks: dict[str, Webhook] = attrs.field(factory=dict, init=False)
    # (when it is due to finish, tie-break, run id): `check` looks only at runs whose
    # finish is due, so a request costs the same however many runs are in progress.
    _due: list[tuple[float, int, str]] = attrs.field(factory=list, init=False)
    _order: Iterator[int] = attrs.field(factory=itertools.count, init=False)
    _lists: random.Random = attrs.field(init=False)
    # `createdAt` follows the fake's clock (a manual clock included), from this instant.
    _epoch: datetime = attrs.field(init=False)
    _clock_at_epoch: float = attrs.field(init=False)
    # Per workflow with foreign runs: (when the rate began, how many were started).
    _foreign: dict[str, tuple[float, int]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        self._ids = random.Random(f"ids-{self.seed}" if self.seed is not None else None)
        self._lists = random.Random(f"lists-{self.seed}" if self.seed is not None else None)
        self._epoch, self._clock_at_epoch = datetime.now(UTC), self.clock()

    def _created_at(self, when: float) -> datetime:
        return self._epoch + timedelta(seconds=when - self._clock_at_epoch)

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{uuid.UUID(int=self._ids.getrandbits(128), version=4)}"

    # Runs.

    def start_run(self, workflow_id: str, body: Any) -> str:
        """Start a run from a request body; return its id."""
        start_variables, metadata = _parse_start(body)
        if self.credit_budget is not None and (
            self.credits_used + self.credits_per_run > self.credit_budget
        ):
            raise ApiFailure(400, "WORKFLOW_CREDIT_LIMIT_REACHED")
        self.credits_used += self.credits_per_run
        self._start_foreign(workflow_id)
        run = self._new_run(workflow_id, start_variables, metadata, self.clock())
        self._emit(run, STARTED)
        return run.facts.id

    def _new_run(
        self,
        workflow_id: str,
        start_variables: Mapping[str, Any],
        metadata: Mapping[str, Any] | None,
        started: float,
        *,
        foreign: bool = False,
    ) -> _Run:
        facts = RunFacts(
            id=self._new_id("WRUN"),
            workflow_id=workflow_id,
            input=start_variables,
            metadata=metadata,
            created_at=self._created_at(started),
            credits=self.credits_per_run,
        )
        # Strangers' runs follow the workflow's script, never the queue meant for ours.
        script = (
            self._workflow_scripts.get(workflow_id, self.default_script)
            if foreign
            else self._script_for(workflow_id)
        )
        run = _Run(facts=facts, started=started, script=script, foreign=foreign)
        self._runs[facts.id] = run
        self._expect_finish(run)
        return run

    def _start_foreign(self, workflow_id: str) -> None:
        """Start the runs "other clients" started since the last look, in order."""
        rate = self._workflow_quirks.get(workflow_id, self.default_quirks).foreign_runs_per_second
        if not rate:
            return
        now = self.clock()
        began, started = self._foreign.setdefault(workflow_id, (now, 0))
        due = int((now - began) * rate)
        for n in range(started, due):
            when = began + (n + 1) / rate
            self._new_run(workflow_id, {"from": "another client"}, None, when, foreign=True)
        self._foreign[workflow_id] = (began, max(started, due))

    def _script_for(self, workflow_id: str) -> Script:
        if self._queued:
            return self._queued.popleft()
        return self._workflow_scripts.get(workflow_id, self.default_script)

    def quirks_for(self, run_id: str) -> Quirks:
        """Return the quirks one run shows: its own, else its workflow's, else the default."""
        if run_id in self._run_quirks:
            return self._run_quirks[run_id]
        run = self._run(run_id)
        return self._workflow_quirks.get(run.facts.workflow_id, self.default_quirks)

    def _run(self, run_id: str) -> _Run:
        try:
            return self._runs[run_id]
        except KeyError:
            raise KeyError(f"no run {run_id!r} on this fake server") from None

    def view(self, run_id: str) -> dict[str, Any]:
        """Return the run object as a GET would show it now (ignoring ``not_found_for``)."""
        run = self._run(run_id)
        return run_object(run.facts, run.phase_at(self.clock()), self.quirks_for(run_id))

    def _visible(self, run: _Run) -> bool:
        hidden_for = self.quirks_for(run.facts.id).not_found_for
        return self.clock() - run.started >= hidden_for

    def get_run(self, workflow_id: str, run_id: str) -> dict[str, Any]:
        """Answer a get-run request; 404 for unknown, foreign or not yet visible runs."""
        self._start_foreign(workflow_id)
        run = self._runs.get(run_id)
        if run is None or run.facts.workflow_id != workflow_id or not self._visible(run):
            raise ApiFailure(404, "NOT_FOUND")
        return self.view(run_id)

    def list_runs(self, workflow_id: str, size: int, page: int) -> dict[str, Any]:
        """Answer a list-runs request: page 1 is the first, in the workflow's list order.

        The workflow's quirks decide the order (oldest first by default), and whether
        items lack ``status``, lag behind GET, or are left out of the page.
        """
        self._start_foreign(workflow_id)
        quirks = self._workflow_quirks.get(workflow_id, self.default_quirks)
        ids = [
            run_id
            for run_id, run in self._runs.items()
            if run.facts.workflow_id == workflow_id and self._visible(run)
        ]
        if quirks.list_order == "newest_first":
            ids.reverse()
        elif quirks.list_order == "shuffled":
            self._lists.shuffle(ids)
        chosen = ids[(page - 1) * size : page * size]
        total: int | str = str(len(ids)) if quirks.total_as_string else len(ids)
        data = [
            self._listed(run_id, quirks)
            for run_id in chosen
            if not (quirks.list_drop and self._lists.random() < quirks.list_drop)
        ]
        return {"total": total, "data": data}

    def _listed(self, run_id: str, quirks: Quirks) -> dict[str, Any]:
        run = self._runs[run_id]
        at = self.clock() - quirks.list_lag
        phase = run.phase_at(at) if quirks.list_lag and run.manual is None else None
        item = (
            self.view(run_id)
            if phase is None
            else run_object(run.facts, phase, self.quirks_for(run_id))
        )
        if quirks.list_missing_status and self._lists.random() < quirks.list_missing_status:
            del item["status"]
        return item

    def run_ids(self, workflow_id: str | None = None) -> list[str]:
        """Return the ids of the runs started so far (not by "other clients"), oldest first."""
        return [
            run_id
            for run_id, run in self._runs.items()
            if (workflow_id is None or run.facts.workflow_id == workflow_id) and not run.foreign
        ]

    # Configuration.

    def set_script(
        self, script: Script, *, workflow_id: str | None = None, run_id: str | None = None
    ) -> None:
        """Set the script of one run, of one workflow's future runs, or the default."""
        if run_id is not None:
            run = self._run(run_id)
            run.script, run.manual = script, None
            self._expect_finish(run)
        elif workflow_id is not None:
            self._workflow_scripts[workflow_id] = script
        else:
            self.default_script = script

    def queue_scripts(self, scripts: Iterable[Script]) -> None:
        """Give the next runs started (of any workflow) these scripts, in order."""
        self._queued.extend(scripts)

    def set_quirks(
        self, quirks: Quirks, *, workflow_id: str | None = None, run_id: str | None = None
    ) -> None:
        """Set the quirks of one run, of one workflow, or the default."""
        if run_id is not None:
            self._run(run_id)
            self._run_quirks[run_id] = quirks
        elif workflow_id is not None:
            self._workflow_quirks[workflow_id] = quirks
        else:
            self.default_quirks = quirks

    def set_status(
        self,
        run_id: str,
        status: str,
        *,
        output: Mapping[str, Any] | None = None,
        error: Any = None,
    ) -> None:
        """Move a run by hand; its script no longer drives it."""
        run = self._run(run_id)
        run.manual = Phase(status=status, output=output or {}, error=error)
        self._expect_finish(run)
        self.check()

    # Events.

    def check(self) -> None:
        """Emit the completed/failed events of runs that have just finished."""
        now = self.clock()
        while self._due and self._due[0][0] <= now:
            _, _, run_id = heapq.heappop(self._due)
            run = self._runs[run_id]
            phase = run.phase_at(now)
            if phase.terminal:
                self._emit(run, _TERMINAL_EVENTS[phase.status])
            elif run.manual is None:
                # A stale entry (the script changed since), or rounding that puts the
                # script's end a hair after `started + duration`: look again then.
                self._push(run_id, max(now + 1e-9, run.started + run.script.duration))

    def _expect_finish(self, run: _Run) -> None:
        due = self.clock() if run.manual else run.started + run.script.duration
        self._push(run.facts.id, due)

    def _push(self, run_id: str, due: float) -> None:
        heapq.heappush(self._due, (due, next(self._order), run_id))

    def _emit(self, run: _Run, event_type: str) -> None:
        if event_type in run.notified:
            return
        run.notified.add(event_type)
        payload = {**self.view(run.facts.id), "type": event_type}
        for hook in list(self._webhooks.values()):
            if hook.event_type == event_type and hook.workflow_id in (
                None,
                run.facts.workflow_id,
            ):
                self.notify(
                    Notice(
                        webhook=hook, event_type=event_type, run_id=run.facts.id, payload=payload
                    )
                )

    # Webhooks.

    def create_webhook(self, body: Any) -> Webhook:
        """Register a webhook from a request body."""
        if not isinstance(body, Mapping):
            raise validation_error("body", "Expected an object")
        url, event_type, workflow_id = (
            body.get("url"),
            body.get("eventType"),
            body.get("workflowId"),
        )
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise validation_error("url", "Expected an http(s) URL")
        if event_type not in EVENT_TYPES:
            raise validation_error("eventType", f"Expected one of {', '.join(EVENT_TYPES)}")
        if workflow_id is not None and not isinstance(workflow_id, str):
            raise validation_error("workflowId", "Expected a string")
        hook = Webhook(
            id=self._new_id("WHK"), url=url, event_type=event_type, workflow_id=workflow_id
        )
        self._webhooks[hook.id] = hook
        return hook

    def get_webhook(self, webhook_id: str) -> Webhook:
        """Return a registered webhook, or fail with 404."""
        if webhook_id not in self._webhooks:
            raise ApiFailure(404, "NOT_FOUND")
        return self._webhooks[webhook_id]

    def delete_webhook(self, webhook_id: str) -> Webhook:
        """Unregister a webhook, or fail with 404."""
        hook = self.get_webhook(webhook_id)
        del self._webhooks[webhook_id]
        return hook

    def list_webhooks(self, size: int, page: int) -> dict[str, Any]:
        """Answer a list-webhooks request: page 0 is the first."""
        hooks = list(self._webhooks.values())
        chosen = hooks[page * size : (page + 1) * size]
        return {"total": len(hooks), "data": [hook.to_api() for hook in chosen]}


def _parse_start(body: Any) -> tuple[Mapping[str, Any], Mapping[str, Any] | None]:
    if not isinstance(body, Mapping):
        raise validation_error("body", "Expected an object")
    start_variables = body.get("startVariables")
    if not isinstance(start_variables, Mapping):
        raise validation_error("startVariables", "Required: an object of input values")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise validation_error("metadata", "Expected an object")
    return dict(start_variables), metadata
