"""How much a repeated measurement varies, and when a difference is inside that variation.

Only metrics measured over the timed repeats (registry source `repeats`: TTFT, TPOT, end-to-end
latency, tokens/s, examples/s, ...) have a spread. Each repeat gives one sample; a cell keeps them all.

**Intervals** (runners.measure.stats, from the samples, so old records get them too). The median of
each cell has a distribution-free 95% interval: the order statistics [x_(k), x_(n-k+1)] with the
largest k whose coverage 1 - 2*BinomCDF(k-1; n, 1/2) is >= 95%; it needs >= 6 repeats, and with
fewer there is none (the reason says so). The difference to the baseline, median(cell) -
median(baseline) and the same in % of the baseline median, has a 95% percentile-bootstrap interval:
each side's samples resampled independently 2000 times, numpy's default_rng seeded by a hash of the
samples, so a table rebuilt from the same records is the same.

**n.s. (not significant).** A difference is marked `n.s.` unless its 95% interval excludes 0. It has
no interval, and so is `n.s.`, when either side has fewer than 5 repeats ("too few repeats": the
bootstrap needs 5 a side) or keeps no samples. Metrics measured once (memory peaks, load time,
quality) carry no spread and no mark.

**Noisy.** A row is flagged noisy when any of its cells has a coefficient of variation over the
repeats (standard deviation / mean) above `NOISY_CV_PCT` (10%). On a shared machine that is the sign
that the host, not the backend, moved the number (the record's load average at the start and end
of the run says how busy it was).

**Spread columns** (csv/jsonl): beside the median `<name><unit>` each repeated metric has
`<name>_<q><unit>` for its slow tail — p90 and p99 for a time or anything lower-is-better (90% of
repeats were at least this fast), p10 and p1 for a rate (higher is better: 90% of repeats reached at
least this rate) — then `<name>_min<unit>`, `<name>_max<unit>`, `<name>_cv_pct`, `<name>_n` (the
number of repeats) and the median's 95% interval `<name>_ci_low<unit>`, `<name>_ci_high<unit>`; the
change vs the baseline has `<name>_vs_baseline_ci_low_pct` and `<name>_vs_baseline_ci_high_pct`. So
`ttft_p90_ms` is the 90th percentile of TTFT and `output_tokens_p10_per_s` the 10th percentile of the
per-repeat output rate. Percentiles are linearly interpolated between samples.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runners.measure.stats import (DifferenceInterval, MedianInterval, median_difference_interval, median_interval,
                                   percentile)
from runners.report.metrics import Better, is_number, tails

NOISY_CV_PCT = 10.0
NO_SAMPLES = "the record keeps no samples"


@dataclass(frozen=True)
class Spread:
    median: float
    min: float
    max: float
    cv_pct: float | None
    n: int
    mean: float | None = None
    quantiles: dict[str, float] = field(default_factory=dict)  # "p90" -> value, from the samples
    samples: tuple[float, ...] = ()  # every repeat, sorted
    median_ci: MedianInterval | None = None  # the median's 95% interval, or why there is none

    @staticmethod
    def of(stat: Any, better: Better) -> "Spread | None":
        """The spread of a record's Stat dict, or None when it holds no median."""
        if not isinstance(stat, dict) or not is_number(stat.get("median")):
            return None
        med = float(stat["median"])
        samples = sorted(float(v) for v in stat.get("samples") or [] if is_number(v))
        lo = float(stat["min"]) if is_number(stat.get("min")) else (samples[0] if samples else med)
        hi = float(stat["max"]) if is_number(stat.get("max")) else (samples[-1] if samples else med)
        n = int(stat["n"]) if is_number(stat.get("n")) else len(samples) or 1
        q: dict[str, float] = {}
        for name in ("p1", "p10", "p90", "p99"):
            if samples:
                q[name] = percentile(samples, float(name[1:]))
            elif is_number(stat.get(name)):
                q[name] = float(stat[name])
        wanted = {k: q[k] for k in tails(better) if k in q}
        wanted.update({k: v for k, v in q.items() if k not in wanted})
        cv = float(stat["cv_pct"]) if is_number(stat.get("cv_pct")) else None
        mean = float(stat["mean"]) if is_number(stat.get("mean")) else None
        ci = median_interval(samples) if samples else MedianInterval(None, None, reason=NO_SAMPLES)
        return Spread(med, lo, hi, cv, n, mean, wanted, tuple(samples), ci)

    @property
    def ci_low(self) -> float | None:
        return self.median_ci.low if self.median_ci else None

    @property
    def ci_high(self) -> float | None:
        return self.median_ci.high if self.median_ci else None

    @property
    def ci_reason(self) -> str | None:
        """Why the median has no interval; None when it has one."""
        return self.median_ci.reason if self.median_ci else NO_SAMPLES

    def stat(self, name: str) -> float | None:
        """median, mean, min, max, cv, p1/p10/p50/p90/p99 by name; None when not known."""
        direct = {"median": self.median, "p50": self.median, "min": self.min, "max": self.max,
                  "cv": self.cv_pct, "mean": self.mean}
        if name in direct:
            return direct[name]
        return self.quantiles.get(name)

    @property
    def noisy(self) -> bool:
        return self.cv_pct is not None and self.cv_pct > NOISY_CV_PCT


def difference(a: Spread, b: Spread) -> DifferenceInterval:
    """The 95% interval of median(a) - median(b) (and in % of b's median), from both sides' samples."""
    if not a.samples or not b.samples:
        return DifferenceInterval(None, None, reason=NO_SAMPLES)
    return median_difference_interval(list(a.samples), list(b.samples))


def within_spread(a: Spread | None, b: Spread | None) -> bool | None:
    """True: the difference is not significant (n.s.: its 95% interval includes 0, or there is no
    interval); False: significant; None: no spread to judge by."""
    if a is None or b is None:
        return None
    return not difference(a, b).significant
