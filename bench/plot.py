"""The plot of docs/performance.md: requests per run against p95 detection lag.

matplotlib comes with the ``bench`` extra (``pip install -e '.[bench]'``) and is imported
here only, so that everything else in ``bench`` runs without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .strategies import LONGEST_S, MEDIAN_S, SHORTEST_S, Outcome


def plot(outcomes: Mapping[str, Outcome], runs: int, path: Path) -> None:
    """Draw one point per strategy into the PNG ``path``."""
    import matplotlib  # here only: the bench extra brings it

    matplotlib.use("Agg")  # no display; chosen before pyplot is imported
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    figure, axes = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    try:
        markers = "osD^vP*X"
        for i, (name, outcome) in enumerate(outcomes.items()):
            axes.scatter(
                outcome.lag_p95_s,
                outcome.requests_per_run,
                s=70,
                marker=markers[i % len(markers)],
                zorder=3,
                label=f"{name}: {outcome.requests_per_run:.1f} requests per run, "
                f"p95 lag {outcome.lag_p95_s:.1f} s",
            )
        axes.set_xscale("log")
        axes.set_yscale("log")
        for axis in (axes.xaxis, axes.yaxis):  # 1, 2, 5, 10... rather than 10^1
            axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            # "0.05", "0.1", "0.2": as many digits as the tick has (a fixed precision
            # printed 0.05 and 0.1 both as "0.1").
            axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axis.set_minor_formatter(NullFormatter())
        axes.set_xlabel("p95 detection lag (s): from a run's end to its waiter knowing")
        axes.set_ylabel("requests per run (mean)")
        axes.set_title(
            f"{runs:,} runs, log-normal durations {SHORTEST_S:g} s to {LONGEST_S / 60:g} min "
            f"(median {MEDIAN_S:g} s); virtual time",
            fontsize=9,
        )
        axes.grid(True, which="both", alpha=0.3, zorder=0)
        axes.margins(x=0.3, y=0.3)
        axes.legend(fontsize=8, loc="upper right")
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)
