"""The benchmark of copyai_poll against the polling loops users write by hand.

``python -m bench`` (from the repository root) regenerates every table and the plot of
docs/performance.md; ``python -m bench --help`` lists the knobs. See docs/performance.md.
"""
