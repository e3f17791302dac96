"""Run every benchmark; print the tables of docs/performance.md, the headline ratios last.

Usage, from the repository root (``pip install -e '.[bench]'`` first for the plot and the
uvloop rows)::

    python -m bench                 # everything: about 7 minutes on 2 cores
    python -m bench --rounds 3 --runs 200 --big-runs 2000 --sections main memory

One fake server (`bench.server`) runs in a process of its own for the whole benchmark.
Every pass, one contender waiting for its own fresh runs, runs in a fresh process
(`bench.worker`), so that its CPU time, peak RSS and allocations are the client's alone.
Within a round every contender of a section takes one pass; the order rotates from round
to round, and each table shows the median of the rounds, with ratios to the raw aiohttp
loop of the same section.

Sections:

``main``     every contender, ``--runs`` runs polled every ``--interval`` seconds: CPU per
             poll, peak RSS per watched run, requests per run, detection lag.
``memory``   the same passes under tracemalloc (which slows them several times over): its
             peak per watched run.
``big``      ``--big-runs`` runs, the raw loop against `poll_until_done`, with a ticker task
             measuring the event loop's lag.
``uvloop``   ``main``'s workload on uvloop, the raw loop against `poll_until_done`
             (skipped where uvloop is not installed).
``strategies`` waiting strategies in virtual time (`bench.strategies`), and their plot.
``tracking`` `RunTracker` fleets in virtual time (`bench.tracking`): per-run polling,
             sweeps and a learned head start, under every list quirk.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import attrs

from . import report
from .contenders import CONTENDERS, RAW
from .strategies import Outcome, simulate_all
from .worker import Spec

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
PLOT = ROOT / "docs" / "img" / "requests-vs-lag.png"
SECTIONS = ("main", "memory", "big", "uvloop", "strategies", "tracking")
LIBRARY = "poll_until_done"

Runner = Callable[[Spec], dict[str, Any]]


@attrs.frozen(kw_only=True)
class Config:
    """The command line, resolved."""

    rounds: int = 5
    runs: int = 1000
    interval: float = 1.0
    due_in: float = 3.0
    big_runs: int = 10_000
    big_due_in: float = 5.0
    sim_runs: int = 10_000
    tracking_runs: int = 1000
    tracking_seeds: int = 4
    sections: tuple[str, ...] = SECTIONS
    plot: Path | None = PLOT
    output: Path = RESULTS


@attrs.frozen(kw_only=True)
class Section:
    """Which contenders take turns, on what workload, measured how."""

    name: str
    contenders: tuple[str, ...]
    runs: int
    due_in: float
    trace_memory: bool = False
    ticker: bool = False
    loop: str = "asyncio"


def sections(cfg: Config) -> list[Section]:
    """The sections ``cfg`` asks for, uvloop's only where uvloop is installed."""
    every = tuple(CONTENDERS)
    pair = (RAW, LIBRARY)
    known = [
        Section(name="main", contenders=every, runs=cfg.runs, due_in=cfg.due_in),
        Section(
            name="memory", contenders=every, runs=cfg.runs, due_in=cfg.due_in, trace_memory=True
        ),
        Section(
            name="big", contenders=pair, runs=cfg.big_runs, due_in=cfg.big_due_in, ticker=True
        ),
        Section(name="uvloop", contenders=pair, runs=cfg.runs, due_in=cfg.due_in, loop="uvloop"),
    ]
    chosen = [s for s in known if s.name in cfg.sections]
    if importlib.util.find_spec("uvloop") is None:
        chosen = [s for s in chosen if s.loop != "uvloop"]
    return chosen


# -- processes -----------------------------------------------------------------------------


@contextmanager
def fake_server() -> Iterator[dict[str, str]]:
    """Serve `bench.server` in a process of its own; yield where (its first line)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.server"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark's fake server did not start")
        yield json.loads(line)
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()


def in_a_process(spec: Spec) -> dict[str, Any]:
    """Measure one pass in a fresh ``python -m bench.worker``."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.worker", json.dumps(attrs.asdict(spec))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"a pass of {spec.contender} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run_section(
    section: Section, cfg: Config, server: dict[str, str], runner: Runner
) -> dict[str, list[dict[str, Any]]]:
    """``cfg.rounds`` rounds of one pass per contender, the order rotated every round."""
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in section.contenders}
    names = list(section.contenders)
    for i in range(cfg.rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            spec = Spec(
                contender=name,
                runs=section.runs,
                interval=cfg.interval,
                due_in=section.due_in,
                loop=section.loop,
                trace_memory=section.trace_memory,
                ticker=section.ticker,
                **server,
            )
            began = time.perf_counter()
            samples[name].append(runner(spec))
            _progress(f"{section.name} round {i + 1}/{cfg.rounds}: {name}", began)
    return samples


def _progress(what: str, began: float) -> None:
    print(f"  {what} ({time.perf_counter() - began:.1f} s)", file=sys.stderr, flush=True)


# -- the report ----------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """The machine and the versions the numbers were taken with."""
    packages = ("copyai-poll", "aiohttp", "tenacity", "attrs", "uvloop", "matplotlib")
    versions = {}
    for name in packages:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "versions": versions,
        "commit": _commit(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "copyai_poll"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return f"{head}{' + uncommitted changes to copyai_poll/' if dirty else ''}" if head else None


def describe(env: dict[str, Any], cfg: Config, results: dict[str, Any]) -> str:
    """The lines that say where and how the numbers were taken."""
    v = env["versions"]
    loads = [
        sample["load_1min"]
        for name, section in results.items()
        if name not in ("strategies", "tracking")
        for samples in section.values()
        for sample in samples
    ]
    load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"
    return "\n".join(
        [
            f"{env['date']}: {env['cpus']} x {env['cpu_model']}, {env['platform']}",
            f"Python {env['python']}, aiohttp {v['aiohttp']}, tenacity {v['tenacity']}, "
            f"attrs {v['attrs']}, uvloop {v['uvloop']}; copyai-poll {v['copyai-poll']} "
            f"at {env['commit']}",
            f"1-minute load average {env['load_average_1min_at_start']} at the start, "
            f"{load} at the ends of the passes",
            f"median of {cfg.rounds} rounds; {cfg.runs:,} runs polled every {cfg.interval:g} s "
            f"(ending {cfg.due_in:g}-{cfg.due_in + cfg.interval:g} s into a pass); "
            f"{cfg.big_runs:,} runs ending {cfg.big_due_in:g}-{cfg.big_due_in + cfg.interval:g} s "
            "into a pass",
        ]
    )


def tables(results: dict[str, Any], cfg: Config) -> list[str]:
    """Every table the results hold, each under a title."""
    out = []
    main, memory = results.get("main"), results.get("memory")
    if main or memory:
        rows = []
        if main:
            rows += [(main, report.CPU)]
        if memory:
            rows += [(memory, report.TRACED)]
        if main:
            rows += [(main, m) for m in (report.RSS, report.REQUESTS, report.LAG_P50)]
            rows += [(main, report.LAG_P95)]
        out += [f"{cfg.runs:,} runs at once, polled every {cfg.interval:g} s", ""]
        out += [report.table("measure (median; x raw)", rows), ""]
    if big := results.get("big"):
        measures = (report.CPU, report.RSS, report.LOOP_P50, report.LOOP_P99, report.LOOP_MAX)
        measures += (report.REQUESTS, report.LAG_P50, report.LAG_P95, report.RESOLVED)
        out += [f"{cfg.big_runs:,} runs at once, polled every {cfg.interval:g} s, with a ticker"]
        out += ["", report.table("measure (median; x raw)", [(big, m) for m in measures]), ""]
    if uv := results.get("uvloop"):
        measures = (report.CPU, report.RSS, report.REQUESTS, report.LAG_P50, report.LAG_P95)
        out += [f"uvloop: {cfg.runs:,} runs at once, polled every {cfg.interval:g} s", ""]
        out += [report.table("measure (median; x raw)", [(uv, m) for m in measures]), ""]
    if outcomes := results.get("strategies"):
        out += [
            f"Waiting strategies, virtual time: {cfg.sim_runs:,} runs of 5 s to 10 min "
            "(log-normal, median 30 s)",
            "",
            report.strategies_table(outcomes),
            "",
        ]
    if lines := results.get("tracking"):
        out += [
            f"Tracking many runs, virtual time: {cfg.tracking_runs:,} runs started within a "
            f"minute, {cfg.tracking_seeds} seeds pooled",
            *lines[1:],
            "",
        ]
    return out


def headline(results: dict[str, Any], cfg: Config) -> list[str]:
    """The ratios that matter, against the raw loop of the same section."""
    lines = ["Headline: median ratio to the raw aiohttp loop (lowest-highest of the rounds)"]
    main, memory = results.get("main"), results.get("memory")
    rows = [(main, report.CPU)] if main else []
    rows += [(memory, report.TRACED)] if memory else []
    rows += [(main, report.RSS)] if main else []
    if rows:
        lines += report.headline(f"  {cfg.runs:,} runs, ", rows)
    if uv := results.get("uvloop"):
        lines += report.headline("  uvloop, ", [(uv, report.CPU), (uv, report.RSS)])
    if big := results.get("big"):
        measures = (report.CPU, report.RSS, report.LOOP_P99)
        lines += report.headline(f"  {cfg.big_runs:,} runs, ", [(big, m) for m in measures])
        least = min(s["resolved"] for s in big[LIBRARY])
        lines += [f"  {cfg.big_runs:,} runs, {LIBRARY}: {least:,} of {cfg.big_runs:,} resolved"]
    return lines


# -- running -------------------------------------------------------------------------------


def run_all(cfg: Config, runner: Runner = in_a_process) -> dict[str, Any]:
    """Every section ``cfg`` asks for; the samples by section and contender."""
    results: dict[str, Any] = {}
    chosen = sections(cfg)
    if chosen:
        with fake_server() as server:
            for section in chosen:
                results[section.name] = run_section(section, cfg, server, runner)
    if "strategies" in cfg.sections:
        outcomes = simulate_all(cfg.sim_runs)
        results["strategies"] = outcomes
        if cfg.plot is not None:
            _plot(outcomes, cfg)
    if "tracking" in cfg.sections:
        from . import tracking  # the library's tracker, imported only when asked for

        results["tracking"] = tracking.report(cfg.tracking_runs, range(cfg.tracking_seeds))
    return results


def _plot(outcomes: dict[str, Outcome], cfg: Config) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot", file=sys.stderr)
        return
    from .plot import plot  # only here: matplotlib is optional

    assert cfg.plot is not None
    plot(outcomes, cfg.sim_runs, cfg.plot)
    print(f"plot written to {cfg.plot}", file=sys.stderr)


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").split("\n\n")[0]
    )
    default = Config()
    add = parser.add_argument
    add("--rounds", type=int, default=default.rounds, help="rounds per section (default 5)")
    add("--runs", type=int, default=default.runs, help="runs of main, memory, uvloop")
    add("--interval", type=float, default=default.interval, help="seconds between polls")
    add("--due-in", type=float, default=default.due_in, help="seconds until the runs end")
    add("--big-runs", type=int, default=default.big_runs, help="runs of the big section")
    add("--big-due-in", type=float, default=default.big_due_in, help="the same, big section")
    add("--sim-runs", type=int, default=default.sim_runs, help="runs of the simulation")
    add("--tracking-runs", type=int, default=default.tracking_runs, help="runs per fleet")
    add("--tracking-seeds", type=int, default=default.tracking_seeds, help="fleets pooled")
    add("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="which")
    add("--plot", type=Path, default=default.plot, help="where the PNG goes")
    add("--no-plot", action="store_true", help="draw no plot")
    add("--output", type=Path, default=default.output, help="where the JSON samples go")
    args = parser.parse_args(argv)
    if min(args.rounds, args.runs, args.big_runs, args.sim_runs, args.tracking_runs) < 1:
        parser.error("--rounds, --runs, --big-runs, --sim-runs and --tracking-runs >= 1")
    if args.tracking_seeds < 1:
        parser.error("--tracking-seeds must be at least 1")
    if not (args.interval > 0 and args.due_in >= 0 and args.big_due_in >= 0):
        parser.error("--interval must be > 0, --due-in and --big-due-in >= 0")
    return Config(
        rounds=args.rounds,
        runs=args.runs,
        interval=args.interval,
        due_in=args.due_in,
        big_runs=args.big_runs,
        big_due_in=args.big_due_in,
        sim_runs=args.sim_runs,
        tracking_runs=args.tracking_runs,
        tracking_seeds=args.tracking_seeds,
        sections=tuple(args.sections),
        plot=None if args.no_plot else args.plot,
        output=args.output,
    )


def main(argv: Sequence[str] | None = None, runner: Runner = in_a_process) -> int:
    """Run the benchmarks, write the JSON samples, print the tables, the headline last."""
    cfg = parse_args(argv)
    env = environment()
    began = time.perf_counter()
    results = run_all(cfg, runner)
    seconds = time.perf_counter() - began
    saved = {
        "environment": env,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in attrs.asdict(cfg).items()},
        "seconds": round(seconds, 1),
        **{k: v for k, v in results.items() if k != "strategies"},
        "strategies": {k: attrs.asdict(v) for k, v in results.get("strategies", {}).items()},
    }
    cfg.output.write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
    print(describe(env, cfg, results), "", *tables(results, cfg), sep="\n")
    print(f"{seconds:.0f} s in all; every sample is in {cfg.output}", "", sep="\n")
    print(*headline(results, cfg), sep="\n")
    return 0
