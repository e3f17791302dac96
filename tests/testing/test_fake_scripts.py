"""Runs follow their scripts on the server's clock, or move by hand."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from copyai_poll.testing import FakeCopyAI, ManualClock, Phase, Script, Step
from tests.testing.fake_helpers import WF, Api

LIFE = Script.completes(
    ("NEW", 0.2),
    ("WAITING", 0.5),
    ("PROCESSING", 2),
    ("RETRYING", 0.5),
    ("PROCESSING", 1),
    output={"Output 1": "done"},
)


def test_phase_at_walks_the_steps() -> None:
    """A script shows each step for its seconds, then its final status for ever."""
    ages = [0, 0.19, 0.2, 0.69, 0.7, 2.7, 3.2, 4.19, 4.2, 1000]

    statuses = [LIFE.phase_at(age).status for age in ages]

    expected = ["NEW", "NEW", "WAITING", "WAITING", "PROCESSING", "RETRYING", "PROCESSING"]
    assert [*expected, "PROCESSING", "COMPLETE", "COMPLETE"] == statuses


def test_output_only_once_complete() -> None:
    """Output is empty while running and the script's output once COMPLETE."""
    assert (Phase(status="PROCESSING"), {"Output 1": "done"}) == (
        LIFE.phase_at(1),
        dict(LIFE.phase_at(LIFE.duration).output),
    )


def test_failing_script_ends_failed_with_its_error() -> None:
    """A failing script ends FAILED carrying its error and no output."""
    script = Script.fails(("NEW", 1), error={"message": "boom"})

    assert Phase(status="FAILED", error={"message": "boom"}) == script.phase_at(1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Step("NEW", -1),
        lambda: Script(final="DONE"),
    ],
)
def test_nonsense_scripts_are_value_errors(make: object) -> None:
    """Negative durations and finals other than COMPLETE/FAILED are refused."""
    with pytest.raises(ValueError):  # noqa: PT011 -- attrs' message varies by version
        make()  # type: ignore[operator]


def test_manual_clock_refuses_to_go_back() -> None:
    """ManualClock.advance with a negative amount is a ValueError."""
    with pytest.raises(ValueError, match="cannot go back"):
        ManualClock().advance(-1)


@given(
    st.lists(st.tuples(st.sampled_from(["NEW", "QUEUED", "X"]), st.floats(0, 5)), max_size=6),
    st.floats(0, 40),
)
def test_phase_is_a_step_until_the_duration_then_final(
    steps: list[tuple[str, float]], age: float
) -> None:
    """Before its duration a run shows one of its steps; from then on its final status."""
    script = Script(steps=steps)

    status = script.phase_at(age).status

    if age >= script.duration:
        assert "COMPLETE" == status
    else:
        assert status in {step.status for step in script.steps}


@pytest.mark.asyncio
async def test_run_status_follows_the_clock(
    fake: FakeCopyAI, manual_clock: ManualClock, api: Api
) -> None:
    """A GET sees NEW, WAITING, PROCESSING, RETRYING, PROCESSING, then COMPLETE with outputs."""
    fake.set_script(LIFE)
    run_id = await api.start()
    seen = []
    for gap in (0, 0.3, 0.5, 2, 0.5, 1):
        manual_clock.advance(gap)
        seen.append((await api.run(run_id))["status"])

    final = await api.run(run_id)

    assert ["NEW", "WAITING", "PROCESSING", "RETRYING", "PROCESSING", "COMPLETE"] == seen
    assert {"Output 1": "done"} == final["output"]
    assert "error" not in final


@pytest.mark.asyncio
async def test_failed_run_carries_error(
    fake: FakeCopyAI, manual_clock: ManualClock, api: Api
) -> None:
    """A run whose script fails shows FAILED and an error, which it did not show before."""
    fake.set_script(Script.fails(("PROCESSING", 1), error="step 2 failed"))
    run_id = await api.start()
    before = await api.run(run_id)
    manual_clock.advance(1)

    after = await api.run(run_id)

    assert ("PROCESSING", False) == (before["status"], "error" in before)
    assert ("FAILED", "step 2 failed") == (after["status"], after["error"])


@pytest.mark.asyncio
async def test_scripts_per_workflow_per_run_and_queued(fake: FakeCopyAI, api: Api) -> None:
    """Queued scripts come first, then the workflow's, then the default; a run's own wins."""
    fake.set_script(Script.completes(), workflow_id=WF)
    fake.set_script(Script.completes(("WAITING", 9)), workflow_id=WF)
    fake.set_script(Script.completes(("NEW", 9)))
    fake.queue_scripts(Script.fails(), Script.completes(("QUEUED", 9)))

    ids = [await api.start(), await api.start(), await api.start(), await api.start("WCFG-2")]
    fake.set_script(Script.completes(("RETRYING", 9)), run_id=ids[3])

    statuses = [
        (await api.run(i, w))["status"] for i, w in zip(ids, [WF] * 3 + ["WCFG-2"], strict=True)
    ]
    assert ["FAILED", "QUEUED", "WAITING", "RETRYING"] == statuses


@pytest.mark.asyncio
async def test_manual_move_overrides_the_script(
    fake: FakeCopyAI, manual_clock: ManualClock, api: Api
) -> None:
    """set_status moves a run at once, and the clock no longer changes it."""
    fake.set_script(Script.fails(("NEW", 1)))
    run_id = await api.start()

    fake.set_status(run_id, "COMPLETE", output={"text": "by hand"})
    manual_clock.advance(100)
    run = await api.run(run_id)

    assert ("COMPLETE", {"text": "by hand"}) == (run["status"], run["output"])
    assert run == fake.run(run_id)


@pytest.mark.asyncio
async def test_manual_move_to_failed_shows_error(fake: FakeCopyAI, api: Api) -> None:
    """A run moved to FAILED by hand shows the given error."""
    run_id = await api.start()

    fake.set_status(run_id, "FAILED", error="stopped by test")

    assert ("FAILED", "stopped by test") == (
        (await api.run(run_id))["status"],
        (await api.run(run_id))["error"],
    )


@pytest.mark.asyncio
async def test_undocumented_status_step_is_served(fake: FakeCopyAI, api: Api) -> None:
    """A step may carry a status nobody documented, such as QUEUED, and GET shows it."""
    fake.set_script(Script.completes(("QUEUED", 1)))

    run_id = await api.start()

    assert "QUEUED" == (await api.run(run_id))["status"]


def test_unknown_run_is_a_key_error() -> None:
    """Asking the fake about a run it never started is a KeyError naming the run."""
    with pytest.raises(KeyError, match="WRUN-x"):
        FakeCopyAI().set_status("WRUN-x", "COMPLETE")
