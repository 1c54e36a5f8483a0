"""Summary statistics of benchmark samples.

Percentiles use numpy's default method, ``numpy.percentile(..., method="linear")``: linear
interpolation between closest ranks, definition 7 of Hyndman & Fan (1996), "Sample Quantiles in
Statistical Packages", The American Statistician 50(4). With few samples p99 is close to the max.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

#: numpy.percentile method used for every percentile in the report (Hyndman & Fan definition 7).
PERCENTILE_METHOD: Final = "linear"
#: How the report names that method (``config.percentile_method``).
PERCENTILE_SOURCE = f"numpy.percentile method={PERCENTILE_METHOD!r} (Hyndman & Fan type 7)"


@dataclass
class Stats:
    """Summary of a sample of durations, all in the unit named by the field holding it.

    ``stdev`` is the sample standard deviation (``ddof=1``; 0 for a single sample); percentiles
    are ``numpy.percentile(method="linear")`` (Hyndman & Fan definition 7).
    """

    n: int
    min: float
    p50: float
    p90: float
    p99: float
    max: float
    mean: float
    stdev: float


def summarize(samples: Sequence[float]) -> Stats:
    """:class:`Stats` of ``samples`` (any unit; the result is in the same unit).

    Raises :class:`ValueError` on an empty sample.
    """
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    p50, p90, p99 = np.percentile(a, [50, 90, 99], method=PERCENTILE_METHOD)
    return Stats(n=int(a.size), min=float(a.min()), p50=float(p50), p90=float(p90), p99=float(p99),
                 max=float(a.max()), mean=float(a.mean()),
                 stdev=float(a.std(ddof=1)) if a.size > 1 else 0.0)


def histogram(samples: Sequence[float], bins: int = 12) -> dict[str, Any]:
    """Histogram of ``samples`` with ``bins`` equal-width bins from the minimum to the p99
    (``numpy.histogram``); the few samples above the p99 are counted in ``above`` rather than
    stretching every bin. Returns ``{"edges": [bins + 1], "counts": [bins], "above": int}`` in
    the samples' unit. Raises :class:`ValueError` on an empty sample."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    lo = float(a.min())
    hi = float(np.percentile(a, 99, method=PERCENTILE_METHOD))
    if hi <= lo:
        hi = float(a.max()) if a.max() > lo else lo + 1e-9
    counts, edges = np.histogram(a[a <= hi], bins=bins, range=(lo, hi))
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts],
            "above": int((a > hi).sum())}
