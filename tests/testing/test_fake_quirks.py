"""Quirks seen in the wild, on demand, per workflow or per run."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
import pytest

from copyai_poll.testing import FakeCopyAI, ManualClock, Quirks, Script
from tests.testing.fake_helpers import WF, Api


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("quirks", "check"),
    [
        (Quirks(credits_as_string=True), lambda run: run["credits"] == "2"),
        (Quirks(metadata="null"), lambda run: run["metadata"] is None),
        (Quirks(metadata="missing"), lambda run: "metadata" not in run),
        (Quirks(ids="id"), lambda run: "id" in run and "workflowRunId" not in run),
        (Quirks(ids="workflowRunId"), lambda run: "workflowRunId" in run and "id" not in run),
        (
            Quirks(created_at_ms=False),
            lambda run: re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", run["createdAt"]),
        ),
    ],
)
async def test_quirk_shows_in_the_run_object(
    fake: FakeCopyAI, api: Api, quirks: Quirks, check: Any
) -> None:
    """Each quirk changes the run object the way it was seen in the wild."""
    fake.set_quirks(quirks, workflow_id=WF)

    run = await api.run(await api.start())

    assert check(run), run


@pytest.mark.asyncio
async def test_quirks_per_run_win_over_the_workflow(fake: FakeCopyAI, api: Api) -> None:
    """A run's own quirks win over its workflow's, which win over the default."""
    fake.set_quirks(Quirks(metadata="null"))
    fake.set_quirks(Quirks(credits_as_string=True), workflow_id=WF)
    first, second, other = await api.start(), await api.start(), await api.start("WCFG-2")
    fake.set_quirks(Quirks(ids="id"), run_id=second)

    runs = [await api.run(first), await api.run(second), await api.run(other, "WCFG-2")]

    assert ["2", 2, 2] == [run["credits"] for run in runs]
    assert [{}, {}, None] == [run["metadata"] for run in runs]
    assert [True, False, True] == ["workflowRunId" in run for run in runs]


@pytest.mark.asyncio
async def test_output_values_as_json_text(
    fake: FakeCopyAI, api: Api, manual_clock: ManualClock
) -> None:
    """json_values sends non-string output values as JSON text; json_text the whole output."""
    output = {"list": ["a", "b"], "text": "plain"}
    fake.set_script(Script.completes(output=output))
    fake.set_quirks(Quirks(output_format="json_values"), workflow_id=WF)
    fake.set_quirks(Quirks(output_format="json_text"), workflow_id="WCFG-2")
    values_id, text_id = await api.start(), await api.start("WCFG-2")
    manual_clock.advance(1)

    values = (await api.run(values_id))["output"]
    text = (await api.run(text_id, "WCFG-2"))["output"]

    assert {"list": '["a", "b"]', "text": "plain"} == values
    assert output == json.loads(text)


@pytest.mark.asyncio
async def test_not_found_for_hides_a_new_run(
    fake: FakeCopyAI, api: Api, manual_clock: ManualClock
) -> None:
    """With not_found_for, a run answers 404 (and is left out of lists) until it is that old."""
    fake.set_quirks(Quirks(not_found_for=2))
    run_id = await api.start()
    path = f"/workflow/{WF}/run/{run_id}"

    early = await api.call("GET", path)
    _, early_page = await api.call("GET", f"/workflow/{WF}/run")
    manual_clock.advance(2)
    late = await api.call("GET", path)

    assert (404, {"status": "error", "errorCode": "NOT_FOUND"}) == early
    assert 0 == early_page["data"]["total"]
    assert 200 == late[0]


@pytest.mark.asyncio
async def test_total_as_string(fake: FakeCopyAI, api: Api) -> None:
    """total_as_string sends a page's total as text."""
    fake.set_quirks(Quirks(total_as_string=True), workflow_id=WF)
    await api.start()

    _, page = await api.call("GET", f"/workflow/{WF}/run")

    assert "1" == page["data"]["total"]


def test_nonsense_quirk_is_a_value_error() -> None:
    """An unknown metadata shape is refused at construction."""
    with pytest.raises(ValueError, match="metadata"):
        Quirks(metadata="maybe")  # type: ignore[arg-type]


async def _first_id(seed: int | None) -> str:
    async with (
        FakeCopyAI(clock=ManualClock(), seed=seed) as server,
        aiohttp.ClientSession(headers={"x-copy-ai-api-key": server.api_key}) as session,
    ):
        return await Api(session, server.base_url).start()


@pytest.mark.asyncio
async def test_seeded_ids_repeat() -> None:
    """Two fakes with the same seed hand out the same run ids; seed=None gives fresh ones."""
    assert await _first_id(3) == await _first_id(3)
    assert await _first_id(None) != await _first_id(None)
