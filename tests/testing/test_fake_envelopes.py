"""The seven endpoints answer with Copy.ai's real envelopes."""

from __future__ import annotations

import re

import aiohttp
import pytest

from copyai_poll.testing import FakeCopyAI, ManualClock
from tests.testing.fake_helpers import WF, Api

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.mark.asyncio
async def test_start_run_answers_only_the_id(api: Api) -> None:
    """Starting a run answers {"status": "success", "data": {"id": "WRUN-..."}} and nothing else."""
    status, body = await api.call("POST", f"/workflow/{WF}/run", json={"startVariables": {}})

    assert 200 == status
    assert ["id"] == list(body["data"])
    assert "success" == body["status"]
    assert body["data"]["id"].startswith("WRUN-")


@pytest.mark.asyncio
async def test_get_run_answers_the_full_run_object(api: Api) -> None:
    """A run object carries every documented field, input and metadata as sent."""
    _, started = await api.call(
        "POST",
        f"/workflow/{WF}/run",
        json={"startVariables": {"Input 1": "hi"}, "metadata": {"api": True}},
    )
    run_id = started["data"]["id"]

    status, body = await api.call("GET", f"/workflow/{WF}/run/{run_id}")

    assert 200 == status
    assert "success" == body["status"]
    run = body["data"]
    expected = {
        "status": "NEW",
        "input": {"Input 1": "hi"},
        "output": {},
        "metadata": {"api": True},
        "id": run_id,
        "workflowRunId": run_id,
        "workflowId": WF,
        "credits": 2,
    }
    assert expected == {k: v for k, v in run.items() if k != "createdAt"}
    assert ISO_MS.match(run["createdAt"])


@pytest.mark.asyncio
async def test_unknown_run_is_404_not_found(api: Api) -> None:
    """A run nobody started is a 404 with errorCode NOT_FOUND."""
    status, body = await api.call("GET", f"/workflow/{WF}/run/WRUN-nope")

    assert (404, {"status": "error", "errorCode": "NOT_FOUND"}) == (status, body)


@pytest.mark.asyncio
async def test_run_of_another_workflow_is_404(api: Api) -> None:
    """A run asked for under the wrong workflow id is not found."""
    run_id = await api.start()

    status, _ = await api.call("GET", f"/workflow/WCFG-other/run/{run_id}")

    assert 404 == status


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"json": {}}, "startVariables"),
        ({"json": {"startVariables": "text"}}, "startVariables"),
        ({"json": [1, 2]}, "body"),
        ({"data": b"{not json"}, "body"),
        ({}, "body"),
        ({"json": {"startVariables": {}, "metadata": 3}}, "metadata"),
    ],
)
async def test_start_without_start_variables_is_422(
    api: Api, kwargs: dict[str, object], path: str
) -> None:
    """A start body without an object of startVariables is a 422 VALIDATION_ERROR with details."""
    status, body = await api.call("POST", f"/workflow/{WF}/run", **kwargs)

    assert 422 == status
    assert ("error", "VALIDATION_ERROR") == (body["status"], body["errorCode"])
    assert [path] == body["details"][0]["path"]


@pytest.mark.asyncio
async def test_credit_budget_runs_out_with_400() -> None:
    """Once the credit budget is spent, starting a run is 400 WORKFLOW_CREDIT_LIMIT_REACHED."""
    async with (
        FakeCopyAI(clock=ManualClock(), credit_budget=5, credits_per_run=2) as server,
        aiohttp.ClientSession(headers={"x-copy-ai-api-key": server.api_key}) as session,
    ):
        api = Api(session, server.base_url)
        await api.start()
        await api.start()
        status, body = await api.call("POST", f"/workflow/{WF}/run", json={"startVariables": {}})

        assert 400 == status
        assert {"status": "error", "errorCode": "WORKFLOW_CREDIT_LIMIT_REACHED"} == body
        assert (4, 2) == (server.credits_used, len(server.run_ids()))


@pytest.mark.asyncio
async def test_list_runs_pages_start_at_one(api: Api) -> None:
    """Run pages count from 1, oldest first, wrapped in the success envelope with a total."""
    ids = [await api.start() for _ in range(3)]
    await api.start("WCFG-other")

    _, first = await api.call("GET", f"/workflow/{WF}/run", params={"size": 2, "page": 1})
    _, second = await api.call("GET", f"/workflow/{WF}/run", params={"size": 2, "page": 2})

    assert "success" == first["status"]
    assert (3, ids[:2]) == (first["data"]["total"], [r["id"] for r in first["data"]["data"]])
    assert (3, ids[2:]) == (second["data"]["total"], [r["id"] for r in second["data"]["data"]])


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"size": 100}, 200),
        ({"size": 101}, 422),
        ({"size": 0}, 422),
        ({"size": "ten"}, 422),
        ({"page": 0}, 422),
    ],
)
async def test_list_runs_validates_size_and_page(
    api: Api, params: dict[str, object], expected: int
) -> None:
    """size must be 1..100 and page at least 1, else 422."""
    status, _ = await api.call("GET", f"/workflow/{WF}/run", params=params)

    assert expected == status


@pytest.mark.asyncio
async def test_webhook_create_get_delete(api: Api) -> None:
    """Webhooks are created, read and deleted with success envelopes; then they are gone."""
    sent = {"url": "http://127.0.0.1:9/hook", "eventType": "workflowRun.completed"}
    status, created = await api.call("POST", "/webhook", json={**sent, "workflowId": WF})
    hook = created["data"]
    expected = {"id": hook["id"], **sent, "workflowId": WF}

    assert (200, "success", expected) == (status, created["status"], hook)
    assert (200, {"status": "success", "data": expected}) == await api.call(
        "GET", f"/webhook/{hook['id']}"
    )
    assert 200 == (await api.call("DELETE", f"/webhook/{hook['id']}"))[0]
    assert 404 == (await api.call("GET", f"/webhook/{hook['id']}"))[0]
    assert 404 == (await api.call("DELETE", f"/webhook/{hook['id']}"))[0]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "body",
    [
        {"url": "not a url", "eventType": "workflowRun.completed"},
        {"url": "http://x/", "eventType": "workflowRun.exploded"},
        {"url": "http://x/", "eventType": "workflowRun.completed", "workflowId": 5},
        ["a list"],
    ],
)
async def test_invalid_webhook_is_422(api: Api, body: object) -> None:
    """A webhook without an http(s) url or with an unknown eventType is a 422."""
    status, answer = await api.call("POST", "/webhook", json=body)

    assert (422, "VALIDATION_ERROR") == (status, answer["errorCode"])


@pytest.mark.asyncio
async def test_list_webhooks_pages_start_at_zero_without_wrapper(api: Api) -> None:
    """Webhook pages count from 0 and have no status wrapper: {"total", "data"} only."""
    for n in range(3):
        await api.call(
            "POST", "/webhook", json={"url": f"http://h/{n}", "eventType": "workflowRun.started"}
        )

    _, first = await api.call("GET", "/webhook", params={"size": 2, "page": 0})
    _, second = await api.call("GET", "/webhook", params={"size": 2, "page": 1})

    assert ["data", "total"] == sorted(first)
    assert (3, ["http://h/0", "http://h/1"]) == (first["total"], [h["url"] for h in first["data"]])
    assert ["http://h/2"] == [h["url"] for h in second["data"]]


ROUTES = [
    ("POST", f"/workflow/{WF}/run"),
    ("GET", f"/workflow/{WF}/run/WRUN-1"),
    ("GET", f"/workflow/{WF}/run"),
    ("POST", "/webhook"),
    ("GET", "/webhook/WHK-1"),
    ("DELETE", "/webhook/WHK-1"),
    ("GET", "/webhook"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("headers", [{}, {"x-copy-ai-api-key": "wrong"}])
async def test_every_endpoint_needs_the_key(
    fake: FakeCopyAI, method: str, path: str, headers: dict[str, str]
) -> None:
    """A missing or wrong x-copy-ai-api-key is a 401 UNAUTHORIZED on every endpoint."""
    async with aiohttp.ClientSession(headers=headers) as session:
        status, body = await Api(session, fake.base_url).call(method, path, json={})

    assert (401, {"status": "error", "errorCode": "UNAUTHORIZED"}) == (status, body)


@pytest.mark.asyncio
async def test_unknown_path_is_a_json_404(api: Api) -> None:
    """A path outside the API is a 404 with the error envelope, not an HTML page."""
    status, body = await api.call("GET", "/nothing/here")

    assert (404, {"status": "error", "errorCode": "NOT_FOUND"}) == (status, body)
