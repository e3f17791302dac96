"""Test doubles shared by the unit tests: a virtual clock and a scripted fetcher."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from copyai_poll import WorkflowRun

WF = "WCFG-84e56597"
RUN = "WRUN-dc46baf3"
BASE = "https://api.copy.ai/api"
RUN_URL = f"{BASE}/workflow/{WF}/run/{RUN}"
START_URL = f"{BASE}/workflow/{WF}/run"
KEY = "sk-test-0123456789abcdef"


class FakeClock:
    """Virtual monotonic time: `sleep` advances it instead of waiting."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        target = self.now + seconds
        await asyncio.sleep(0)  # still a real suspension point, like asyncio.sleep
        self.now = max(self.now, target)


class ScriptedFetcher:
    """A `get_run` that answers from a list of runs or exceptions, one per call."""

    def __init__(self, answers: Iterable[WorkflowRun | BaseException]) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def get_run(self, workflow_id: str, run_id: str) -> WorkflowRun:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def run(status: str | None, **fields: Any) -> WorkflowRun:
    """A run of `WF`/`RUN` with the given raw status."""
    data: dict[str, Any] = {"id": RUN, "workflowId": WF, **fields}
    if status is not None:
        data["status"] = status
    return WorkflowRun.from_api(data)


def body(status: str | None = "PROCESSING", **fields: Any) -> dict[str, Any]:
    """A get-run response body."""
    data: dict[str, Any] = {"id": RUN, "workflowId": WF, **fields}
    if status is not None:
        data["status"] = status
    return {"status": "success", "data": data}
