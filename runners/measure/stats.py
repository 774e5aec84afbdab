"""Summary statistics of repeated measurements: the spread every number is shown with, and the
confidence intervals of a median and of a difference of medians (computed from the samples a record
keeps, so records written before the intervals existed get them too).

- **Median**: the distribution-free order-statistic interval [x_(k), x_(n-k+1)] of the sorted
  samples, with the largest k whose coverage 1 - 2*BinomCDF(k-1; n, 1/2) is at least `CI_LEVEL`
  (95%). It needs n >= 6 at 95% (n = 6: [min, max], 96.9%); with fewer there is no interval, and the
  reason says so.
- **Difference** (cell - baseline, and in % of the baseline median): a percentile bootstrap of the
  difference of medians, each side resampled independently `BOOTSTRAP_RESAMPLES` (2000) times with
  numpy's default_rng seeded by a hash of the two sorted sample sets (the same records give the same
  interval). It is significant when its 95% interval excludes 0; with fewer than
  `MIN_BOOTSTRAP_REPEATS` (5) repeats a side there is no interval ("too few repeats").
"""
from __future__ import annotations

import hashlib
import math
import statistics
from dataclasses import dataclass, field

import numpy as np


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


# -- confidence intervals ------------------------------------------------------------------------
# Every interval the report shows is at this level.
CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000
# Below 5 repeats a side the percentile bootstrap claims more than the data hold: 3 vs 3 samples
# that do not overlap always give an interval clear of 0, yet an exact rank test of the same data
# reaches only p = 0.10 (two-sided); 4 vs 4 can reach p = 0.029, 5 vs 5 p = 0.008. Five leaves a
# margin for the bootstrap's known under-coverage at small n.
MIN_BOOTSTRAP_REPEATS = 5
TOO_FEW_REPEATS = "too few repeats"


@dataclass(frozen=True)
class MedianInterval:
    """A distribution-free interval of the median: [x_(k), x_(n-k+1)] of the sorted samples."""

    low: float | None
    high: float | None
    coverage: float | None = None  # the exact coverage of that interval, at least the level asked
    reason: str | None = None  # why there is none

    def half_width_pct(self, median: float) -> float | None:
        """Half the interval's width in % of the median; None without an interval or a zero median."""
        if self.low is None or self.high is None or median == 0:
            return None
        return 100.0 * (self.high - self.low) / 2.0 / abs(median)


@dataclass(frozen=True)
class DifferenceInterval:
    """A percentile-bootstrap interval of median(cell) - median(baseline), and of it in % of the baseline."""

    low: float | None
    high: float | None
    low_pct: float | None = None
    high_pct: float | None = None
    reason: str | None = None  # why there is no interval (the difference is then not significant)

    @property
    def significant(self) -> bool:
        """The interval excludes zero."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def binom_cdf_half(k: int, n: int) -> float:
    """P(B <= k) for B ~ Binomial(n, 1/2), exact in integers until the one division."""
    if k < 0:
        return 0.0
    return sum(math.comb(n, i) for i in range(min(k, n) + 1)) / 2 ** n


def median_rank(n: int, level: float = CI_LEVEL) -> tuple[int, float] | None:
    """(k, coverage): the largest k whose [x_(k), x_(n-k+1)] covers the median with probability
    1 - 2 P(B <= k-1) >= level; None when even [min, max] falls short."""
    best = None
    for k in range(1, (n + 1) // 2 + 1):
        coverage = 1.0 - 2.0 * binom_cdf_half(k - 1, n)
        if coverage < level:
            break
        best = (k, coverage)
    return best


def min_repeats_for_median_interval(level: float = CI_LEVEL) -> int:
    """The fewest samples with a distribution-free interval of the median at `level` (6 at 95%)."""
    n = 1
    while median_rank(n, level) is None:
        n += 1
    return n


def median_interval(samples: list[float], level: float = CI_LEVEL) -> MedianInterval:
    xs = sorted(float(v) for v in samples)
    rank = median_rank(len(xs), level)
    if rank is None:
        need = min_repeats_for_median_interval(level)
        why = f"{len(xs)} repeats, fewer than the {need} a {level:.0%} interval needs"
        return MedianInterval(None, None, None, why)
    k, coverage = rank
    return MedianInterval(xs[k - 1], xs[len(xs) - k], coverage)


def _seed(first: np.ndarray, second: np.ndarray) -> int:
    """A seed that is a function of the samples alone, so that a table rebuilt from the same records
    shows the same intervals."""
    digest = hashlib.sha256()
    for xs in (first, second):
        digest.update(len(xs).to_bytes(4, "little"))
        digest.update(xs.astype("<f8").tobytes())
    return int.from_bytes(digest.digest()[:8], "little")


def _resampled_medians(a: np.ndarray, b: np.ndarray, resamples: int) -> tuple[np.ndarray, np.ndarray]:
    # Drawn in a fixed order of the two sides, so that comparing b with a gives exactly the negated
    # differences of comparing a with b: the verdict is symmetric.
    swap = a.astype("<f8").tobytes() > b.astype("<f8").tobytes()
    first, second = (b, a) if swap else (a, b)
    rng = np.random.default_rng(_seed(first, second))
    m1 = np.median(first[rng.integers(0, len(first), size=(resamples, len(first)))], axis=1)
    m2 = np.median(second[rng.integers(0, len(second), size=(resamples, len(second)))], axis=1)
    return (m2, m1) if swap else (m1, m2)


def median_difference_interval(cell: list[float], baseline: list[float], level: float = CI_LEVEL,
                               resamples: int = BOOTSTRAP_RESAMPLES,
                               min_repeats: int = MIN_BOOTSTRAP_REPEATS) -> DifferenceInterval:
    """Percentile bootstrap of median(cell) - median(baseline), each side resampled independently."""
    if len(cell) < min_repeats or len(baseline) < min_repeats:
        return DifferenceInterval(None, None, reason=f"{TOO_FEW_REPEATS}: {len(cell)} vs {len(baseline)}, "
                                                     f"the bootstrap needs >= {min_repeats} a side")
    a, b = np.sort(np.asarray(cell, dtype=float)), np.sort(np.asarray(baseline, dtype=float))
    ma, mb = _resampled_medians(a, b, resamples)
    # Order statistics, not interpolated percentiles: the difference and its % form then have the
    # same count of resamples below zero at the same ranks, so both exclude zero or neither does.
    j = math.floor(resamples * (1.0 - level) / 2.0 + 1e-9)
    diff = np.sort(ma - mb)
    low, high = float(diff[j]), float(diff[resamples - 1 - j])
    if np.any(mb <= 0):  # a % of a baseline median that can be 0 or negative means nothing
        return DifferenceInterval(low, high)
    rel = np.sort(100.0 * (ma / mb - 1.0))
    return DifferenceInterval(low, high, float(rel[j]), float(rel[resamples - 1 - j]))
