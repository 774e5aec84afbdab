"""Summary statistics of repeated measurements: the spread every number is shown with."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field


@dataclass
class Stat:
    """Summary of repeated measurements of one quantity."""

    median: float
    mean: float
    p90: float
    p99: float
    min: float
    max: float
    cv_pct: float  # standard deviation / mean, in percent: the spread a reader should trust
    n: int
    samples: list[float] = field(default_factory=list)

    @staticmethod
    def from_dict(d: dict) -> "Stat":
        known = Stat.__dataclass_fields__
        return Stat(**{k: v for k, v in d.items() if k in known})

    @staticmethod
    def of(values: list[float]) -> "Stat":
        if not values:
            raise ValueError("no samples")
        xs = sorted(float(v) for v in values)
        mean = statistics.fmean(xs)
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return Stat(
            median=statistics.median(xs), mean=mean, p90=percentile(xs, 90), p99=percentile(xs, 99),
            min=xs[0], max=xs[-1], cv_pct=(100.0 * sd / mean) if mean else 0.0, n=len(xs),
            samples=[float(v) for v in values],
        )


def percentile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of an already sorted list."""
    if not sorted_xs:
        raise ValueError("no samples")
    pos = (len(sorted_xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)
