"""How much a repeated measurement varies, and when a difference is inside that variation.

Only metrics measured over the timed repeats (registry source `repeats`: TTFT, TPOT, end-to-end
latency, tokens/s, examples/s, ...) have a spread. Each repeat gives one sample; a cell keeps them all.

**n.s. (not significant).** A difference between a cell and its baseline is marked `n.s.` when the
two cells' ranges of repeats overlap, i.e. `cell.min <= baseline.max and baseline.min <= cell.max`,
or when either side has fewer than 2 repeats (one sample has no spread to judge by). The rule is
deliberately conservative: it never needs a distribution assumption, and a difference it calls real
has every repeat of one side beyond every repeat of the other. Metrics measured once (memory
peaks, load time, quality) carry no spread and no mark.

**Noisy.** A row is flagged noisy when any of its cells has a coefficient of variation over the
repeats (standard deviation / mean) above `NOISY_CV_PCT` (10%). On a shared machine that is the sign
that the host, not the backend, moved the number (the record's load average at the start and end
of the run says how busy it was).

**Spread columns** (csv/jsonl): beside the median `<name><unit>` each repeated metric has
`<name>_<q><unit>` for its slow tail — p90 and p99 for a time or anything lower-is-better (90% of
repeats were at least this fast), p10 and p1 for a rate (higher is better: 90% of repeats reached at
least this rate) — then `<name>_min<unit>`, `<name>_max<unit>`, `<name>_cv_pct` and `<name>_n` (the
number of repeats). So `ttft_p90_ms` is the 90th percentile of TTFT and `output_tokens_p10_per_s` the
10th percentile of the per-repeat output rate. Percentiles are linearly interpolated between samples.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runners.measure.stats import percentile
from runners.report.metrics import Better, is_number, tails

NOISY_CV_PCT = 10.0
MIN_REPEATS = 2


@dataclass(frozen=True)
class Spread:
    median: float
    min: float
    max: float
    cv_pct: float | None
    n: int
    mean: float | None = None
    quantiles: dict[str, float] = field(default_factory=dict)  # "p90" -> value, from the samples

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
        return Spread(med, lo, hi, cv, n, mean, wanted)

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


def within_spread(a: Spread | None, b: Spread | None) -> bool | None:
    """True: the difference is inside the spread (n.s.); False: outside; None: no spread to judge."""
    if a is None or b is None:
        return None
    if a.n < MIN_REPEATS or b.n < MIN_REPEATS:
        return True
    return a.min <= b.max and b.min <= a.max
