"""Summary statistics for latency samples (milliseconds). Pure functions, no dependencies."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks (numpy default).

    With n samples only percentiles up to about 100 * (n - 1) / n are measured rather than
    interpolated toward the maximum: at n = 30, p99 lies between the two largest samples.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """n, min, median, p90, p99, max, mean."""
    return {
        "n": len(values),
        "min": min(values) if values else math.nan,
        "median": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
        "mean": sum(values) / len(values) if values else math.nan,
    }


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; NaN when the denominator is zero or either side is missing."""
    if not denominator or math.isnan(numerator) or math.isnan(denominator):
        return math.nan
    return numerator / denominator


def ratios(deal: dict, baseline: dict, keys: Sequence[str] = ("median", "p99")) -> dict:
    """deal / baseline for each summary key."""
    return {k: ratio(float(deal[k]), float(baseline[k])) for k in keys}
