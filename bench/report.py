"""The tables and the headline: medians over rounds, and ratios to the raw loop."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from .contenders import RAW
from .strategies import Outcome

Samples = Mapping[str, Sequence[Mapping[str, Any]]]

#: (label, key, decimals) of the measures of a comparison, in the order the rows show.
CPU = ("client CPU per poll (µs)", "cpu_per_poll_us", 0)
TRACED = ("tracemalloc peak per watched run (KiB)", "traced_peak_per_run_kib", 1)
RSS = ("peak RSS per watched run (KiB)", "rss_peak_per_run_kib", 1)
REQUESTS = ("requests per run", "requests_per_run", 2)
LAG_P50 = ("detection lag p50 (ms)", "lag_p50_ms", 0)
LAG_P95 = ("detection lag p95 (ms)", "lag_p95_ms", 0)
LOOP_P50 = ("event-loop lag p50 (ms)", "loop_lag_p50_ms", 1)
LOOP_P99 = ("event-loop lag p99 (ms)", "loop_lag_p99_ms", 0)
LOOP_MAX = ("event-loop lag max (ms)", "loop_lag_max_ms", 0)
RESOLVED = ("runs resolved (least of the rounds)", "resolved", 0)
Measure = tuple[str, str, int]


def median(samples: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """The median of ``key`` over the rounds, None where it was not measured."""
    values = [s[key] for s in samples if s.get(key) is not None]
    return statistics.median(values) if values else None


def ratio(samples: Samples, name: str, key: str) -> float | None:
    """``name``'s median over the raw loop's median, in the same section."""
    mine, raw = median(samples[name], key), median(samples[RAW], key)
    return mine / raw if mine is not None and raw else None


def ratio_range(samples: Samples, name: str, key: str) -> tuple[float, float] | None:
    """The lowest and highest ratio to the raw loop's pass of the same round."""
    pairs = zip(samples[name], samples[RAW], strict=True)
    ratios = [s[key] / r[key] for s, r in pairs if s.get(key) is not None and r.get(key)]
    return (min(ratios), max(ratios)) if ratios else None


def _cell(samples: Samples, name: str, measure: Measure) -> str:
    _, key, decimals = measure
    if key == "resolved":
        return str(min(s["resolved"] for s in samples[name]))
    value = median(samples[name], key)
    if value is None:
        return "-"
    text = f"{value:,.{decimals}f}"
    share = ratio(samples, name, key)
    return text if name == RAW or share is None else f"{text} ({share:.2f}x)"


def table(header: str, rows: Sequence[tuple[Samples, Measure]]) -> str:
    """A Markdown table: one row per measure, one column per contender.

    Each row brings its own samples: memory is traced in passes of its own, since
    tracemalloc slows a pass several times over.
    """
    names = list(rows[0][0])
    cells = [[header, *names]]
    cells += [[measure[0], *(_cell(s, n, measure) for n in names)] for s, measure in rows]
    return markdown(cells)


def markdown(cells: Sequence[Sequence[str]]) -> str:
    """Cells as a Markdown table, padded so that it reads as well in a terminal."""
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]

    def line(row: Sequence[str]) -> str:
        padded = [row[0].ljust(widths[0])]
        padded += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(cells[0]), rule, *map(line, cells[1:])])


def strategies_table(outcomes: Mapping[str, Outcome]) -> str:
    """The simulated waiting strategies, one row each."""
    cells = [["strategy", "requests per run", "lag p50 (s)", "lag p95 (s)", "lag max (s)"]]
    for name, o in outcomes.items():
        cells.append(
            [
                name,
                f"{o.requests_per_run:.1f}",
                f"{o.lag_p50_s:.2f}",
                f"{o.lag_p95_s:.2f}",
                f"{o.lag_max_s:.2f}",
            ]
        )
    return markdown(cells)


def headline(label: str, rows: Sequence[tuple[Samples, Measure]]) -> list[str]:
    """One line per contender: its ratios to the raw loop, with the range over rounds."""
    lines = []
    for name in rows[0][0]:
        if name == RAW:
            continue
        parts = []
        for samples, (measure_label, key, _) in rows:
            share, spread = ratio(samples, name, key), ratio_range(samples, name, key)
            if share is not None and spread is not None:
                short = measure_label.split(" (")[0]
                parts.append(f"{short} {share:.2f}x ({spread[0]:.2f}-{spread[1]:.2f})")
        lines.append(f"{label}{name}: " + "; ".join(parts))
    return lines
