"""The benchmark (``python -m bench``) works: each part runs on a tiny workload.

Nothing here asserts a timing or a ratio; docs/performance.md holds the figures of a real
run. The passes run in this process (`bench.worker.run`) except in one test, which runs
one in a process of its own as the command does.
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest

from bench import run, strategies, worker
from bench.contenders import CONTENDERS, RAW

TINY = ["--rounds", "1", "--runs", "3", "--big-runs", "4", "--interval", "0.05"]
TINY += ["--due-in", "0.05", "--big-due-in", "0.05", "--sim-runs", "50"]
TINY += ["--tracking-runs", "30", "--tracking-seeds", "1"]


def test_the_command_fills_every_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every section runs, every run resolves, and the headline comes last."""
    output = tmp_path / "results.json"

    assert 0 == run.main([*TINY, "--no-plot", "--output", str(output)], runner=worker.run)

    saved = json.loads(output.read_text())
    assert list(CONTENDERS) == list(saved["main"]) == list(saved["memory"])
    assert [RAW, run.LIBRARY] == list(saved["big"])
    if importlib.util.find_spec("uvloop") is not None:
        assert [RAW, run.LIBRARY] == list(saved["uvloop"])
    assert list(strategies.STRATEGIES) == list(saved["strategies"])
    modes = [line.split(" | ")[0] for line in saved["tracking"] if line.startswith("| ")]
    assert ["| per-run polling", "| per-run, learn=True", "| sweep=True"] == modes[1:4]
    resolved = {
        s["resolved"] for section in ("main", "memory", "uvloop") for s in _all(saved, section)
    }
    assert {3} == resolved
    assert {4} == {s["resolved"] for s in _all(saved, "big")}
    assert all("ticks" in s for s in _all(saved, "big"))
    assert all(s["traced_peak_kib"] is not None for s in _all(saved, "memory"))
    lines = capsys.readouterr().out.splitlines()
    headline = next(i for i, line in enumerate(lines) if line.startswith("Headline"))
    assert not any(line.startswith("|") for line in lines[headline:])
    assert "  4 runs, poll_until_done: 4 of 4 resolved" == lines[-1]


def _all(saved: dict[str, dict[str, list[dict[str, object]]]], section: str) -> list[dict]:
    return [sample for samples in saved.get(section, {}).values() for sample in samples]


def test_a_pass_runs_in_a_process_of_its_own() -> None:
    """The command's way: one pass in a fresh process, against the fake in another."""
    with run.fake_server() as server:
        spec = worker.Spec(contender="poll_many", runs=2, interval=0.05, due_in=0.05, **server)
        sample = run.in_a_process(spec)

    assert 2 == sample["resolved"]
    assert 2 <= sample["requests"]


def test_a_failed_pass_says_why() -> None:
    """A pass that cannot reach its server fails the command with the worker's error."""
    spec = worker.Spec(
        contender=RAW,
        runs=1,
        interval=0.05,
        due_in=0.0,
        base_url="http://127.0.0.1:9/api",
        control_url="http://127.0.0.1:9",
        api_key="k",
    )

    with pytest.raises(RuntimeError, match="a pass of raw aiohttp failed"):
        run.in_a_process(spec)


def test_polling_is_simulated_on_the_policy_schedule() -> None:
    """Polled every second, a 2.5-second run takes 4 polls and is seen 0.5 s after its end."""
    wait_for = strategies.polling(strategies.fixed(1.0))

    assert (4, 0.5) == wait_for(2.5, random.Random(0))


def test_durations_stay_within_their_range() -> None:
    """Simulated runs last from 5 s to 10 min."""
    durations = strategies.durations(1000)

    assert 1000 == len(durations)
    assert all(5 <= d <= 600 for d in durations)


def test_the_plot_is_drawn(tmp_path: Path) -> None:
    """The plot is a PNG with a point per strategy (matplotlib is in the dev extra)."""
    from bench.plot import plot

    path = tmp_path / "img" / "plot.png"
    plot(strategies.simulate_all(50), 50, path)

    assert path.read_bytes().startswith(b"\x89PNG")
