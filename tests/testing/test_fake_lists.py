"""Pages of runs as the real list endpoint may show them: order, gaps, lag, strangers."""

from __future__ import annotations

from typing import Any

import pytest

from copyai_poll.testing import FakeCopyAI, ManualClock, Quirks, Script, Step
from tests.testing.fake_helpers import WF, Api


async def _page(api: Api, page: int = 1, size: int = 100) -> tuple[Any, list[dict[str, Any]]]:
    status, payload = await api.call(
        "GET", f"/workflow/{WF}/run", params={"size": size, "page": page}
    )
    assert 200 == status, payload
    return payload["data"]["total"], payload["data"]["data"]


async def _start_spaced(api: Api, clock: ManualClock, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        ids.append(await api.start())
        clock.advance(1)
    return ids


@pytest.mark.asyncio
@pytest.mark.parametrize(("order", "reverse"), [("oldest_first", False), ("newest_first", True)])
async def test_list_order_follows_the_quirk(
    fake: FakeCopyAI, api: Api, manual_clock: ManualClock, order: str, reverse: bool
) -> None:
    """Pages list runs oldest or newest first, and createdAt follows the fake's clock."""
    fake.set_quirks(Quirks(list_order=order), workflow_id=WF)  # type: ignore[arg-type]
    ids = await _start_spaced(api, manual_clock, 5)

    _, items = await _page(api)

    assert (ids[::-1] if reverse else ids) == [item["id"] for item in items]
    created = [item["createdAt"] for item in items]
    assert sorted(created, reverse=reverse) == created
    assert len(set(created)) == 5


@pytest.mark.asyncio
async def test_shuffled_lists_change_order_between_requests(
    fake: FakeCopyAI, api: Api, manual_clock: ManualClock
) -> None:
    """A shuffled list shows every run, in an order that changes from one request to the next."""
    fake.set_quirks(Quirks(list_order="shuffled"), workflow_id=WF)
    ids = await _start_spaced(api, manual_clock, 20)

    orders = [[item["id"] for item in (await _page(api))[1]] for _ in range(3)]

    assert all(sorted(ids) == sorted(order) for order in orders)
    assert len({tuple(order) for order in orders}) > 1


@pytest.mark.asyncio
async def test_items_without_status_and_dropped_items(
    fake: FakeCopyAI, api: Api, manual_clock: ManualClock
) -> None:
    """Shares of listed runs lack a status or are left out, while total still counts them."""
    fake.set_quirks(Quirks(list_missing_status=0.5, list_drop=0.3), workflow_id=WF)
    await _start_spaced(api, manual_clock, 100)

    total, items = await _page(api)

    assert 100 == total
    assert 50 <= len(items) <= 90
    missing = sum("status" not in item for item in items)
    assert 0 < missing < len(items)
    for item in items[:5]:
        assert "status" in await api.run(item["id"])


@pytest.mark.asyncio
async def test_a_stale_list_shows_the_status_of_a_while_ago(
    fake: FakeCopyAI, api: Api, manual_clock: ManualClock
) -> None:
    """With list_lag, a run that GET shows COMPLETE is still listed as it was."""
    fake.set_script(Script(steps=(Step("PROCESSING", 10),)), workflow_id=WF)
    fake.set_quirks(Quirks(list_lag=5), workflow_id=WF)
    run_id = await api.start()
    manual_clock.advance(12)

    _, items = await _page(api)

    assert "COMPLETE" == (await api.run(run_id))["status"]
    assert [(run_id, "PROCESSING")] == [(item["id"], item["status"]) for item in items]
    manual_clock.advance(3)
    assert "COMPLETE" == (await _page(api))[1][0]["status"]


@pytest.mark.asyncio
async def test_other_clients_start_runs_at_a_steady_rate(
    fake: FakeCopyAI, api: Api, manual_clock: ManualClock
) -> None:
    """Foreign runs appear in the pages at their rate, in creation order, but not in run_ids."""
    fake.set_quirks(Quirks(foreign_runs_per_second=10, list_order="newest_first"), workflow_id=WF)
    await _page(api)  # the rate starts counting
    manual_clock.advance(2)
    mine = await api.start()
    manual_clock.advance(1)

    total, items = await _page(api)

    assert 31 == total
    assert [mine] == fake.run_ids(WF)
    listed = [item["id"] for item in items]
    assert 10 == listed.index(mine)
    created = [item["createdAt"] for item in items]
    assert sorted(created, reverse=True) == created


def test_list_quirks_refuse_nonsense() -> None:
    """Shares outside 0..1 and negative lags or rates are a ValueError."""
    for bad in (
        {"list_drop": 1.5},
        {"list_missing_status": -0.1},
        {"list_lag": -1},
        {"foreign_runs_per_second": -2},
        {"list_order": "sideways"},
    ):
        with pytest.raises(ValueError):  # noqa: PT011
            Quirks(**bad)
