"""Percentiles and CDF points of latency samples (microseconds), shared by compare and report.

Percentiles use the nearest-rank definition on the sorted samples, the same convention as
HdrHistogram's ``get_value_at_percentile`` (up to its bucket precision).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

CDF_PERCENTILES: tuple[float, ...] = (
    0, 1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97.5, 99, 99.5, 99.9, 99.99, 100,
)


def percentile(sorted_us: Sequence[int | float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0..100) of already sorted samples; NaN if none."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    n = len(sorted_us)
    if n == 0:
        return math.nan
    rank = max(1, math.ceil(q / 100 * n))
    return float(sorted_us[rank - 1])


def summarize(samples_us: Sequence[int | float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max in milliseconds and the sample count."""
    s = sorted(samples_us)
    ms = 1000.0
    return {
        "count": len(s),
        "p50_ms": percentile(s, 50) / ms,
        "p90_ms": percentile(s, 90) / ms,
        "p99_ms": percentile(s, 99) / ms,
        "p999_ms": percentile(s, 99.9) / ms,
        "max_ms": percentile(s, 100) / ms,
    }


def cdf_points(samples_us: Sequence[int | float],
               percentiles: Sequence[float] = CDF_PERCENTILES) -> list[tuple[float, float]]:
    """``(percentile, latency_ms)`` pairs for a CDF plot, compact enough to keep in JSON."""
    s = sorted(samples_us)
    if not s:
        return []
    return [(q, percentile(s, q) / 1000.0) for q in percentiles]
