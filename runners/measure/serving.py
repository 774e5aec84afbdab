"""Serving statistics, computed in one place from raw per-request samples.

A load point (one offered request rate) keeps every request's sample: when it was sent, when each
streamed chunk of tokens arrived, how many output tokens it produced, whether it failed. Every
statistic is computed here from those samples, so each has its spread and the record can recompute it.

Definitions (quantbench's; they differ between tools, the README compares them):
- **TTFT**: request sent -> first output token received (queueing and prefill included).
- **ITL** (inter-token latency): each gap between two consecutive streamed chunks of one request
  (a chunk carrying n > 1 tokens counts as one gap, as vLLM's `bench serve` counts it).
- **TPOT** (time per output token): a request's (end-to-end - TTFT) / (output tokens - 1), then the
  percentiles over requests (vLLM's definition; GuideLLM's "TPOT" divides by all output tokens).
- **E2E latency**: request sent -> last token received.
- **Achieved rate**: completed requests / the load point's duration (first send to last completion);
  output tokens/s likewise.
- **SLO attainment**: the share of requests that met every per-request term (TTFT <= x, TPOT <= y,
  E2E <= z); failed requests never meet it. **Goodput**: requests that met every term per second.
- **Capacity** under an SLO: the highest offered rate up to which every load point meets every
  percentile term (e.g. TTFT p90 <= 500 ms and TPOT p90 <= 50 ms) with no failed request; between that
  rate and the lowest failing one, the rate where the binding term crosses its limit by linear
  interpolation (stated as interpolated). A rate passing above a failing one does not raise it. The
  all-at-once point (rate inf) is a burst of a fixed number of requests, not a higher sustained rate: it
  counts only when every finite rate passes. No passing rate: capacity absent, with the term that binds.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable

from backends.contract import Metric
from runners.measure.stats import Stat, percentile


@dataclass
class RequestSample:
    """One request of a load point, as the client saw it (times in seconds, the client's clock)."""

    sent_s: float
    chunk_times_s: list[float] = field(default_factory=list)  # arrival of each streamed chunk with tokens
    output_tokens: int = 0
    prompt_tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.chunk_times_s) and self.output_tokens > 0

    @property
    def ttft_ms(self) -> float | None:
        return (self.chunk_times_s[0] - self.sent_s) * 1e3 if self.ok else None

    @property
    def e2e_ms(self) -> float | None:
        return (self.chunk_times_s[-1] - self.sent_s) * 1e3 if self.ok else None

    @property
    def tpot_ms(self) -> float | None:
        if not self.ok or self.output_tokens < 2:
            return None
        return (self.e2e_ms - self.ttft_ms) / (self.output_tokens - 1)

    @property
    def itl_ms(self) -> list[float]:
        t = self.chunk_times_s
        return [(b - a) * 1e3 for a, b in zip(t, t[1:])] if self.ok else []

    def to_compact(self) -> list:
        """[sent, [chunk offsets in ms], output tokens, prompt tokens, error]: how a record keeps it."""
        return [round(self.sent_s, 6), [round((t - self.sent_s) * 1e3, 3) for t in self.chunk_times_s],
                self.output_tokens, self.prompt_tokens, self.error]

    @staticmethod
    def from_compact(row: list) -> "RequestSample":
        sent, offsets, out, prompt, error = row
        return RequestSample(sent, [sent + o / 1e3 for o in offsets], out, prompt, error)


SLO_METRICS = ("ttft", "tpot", "e2e")
SLO_STATS = {"median": 50.0, "p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
_TERM = re.compile(r"^\s*(ttft|tpot|e2e)(?:_(median|p50|p90|p95|p99|max))?(?:_ms)?\s*(<=|<)\s*"
                   r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$")


class SloError(ValueError):
    """An SLO that cannot be read; the message is one line and names the valid forms."""


@dataclass(frozen=True)
class SloTerm:
    key: str  # ttft_ms, tpot_ms or e2e_ms: a per-request latency
    percentile: float  # the percentile over requests that capacity holds to the limit
    limit_ms: float

    @property
    def text(self) -> str:
        return f"{self.key.removesuffix('_ms')} p{self.percentile:g} <= {self.limit_ms:g} ms"


@dataclass(frozen=True)
class Slo:
    """A serving SLO: per-request latency limits, each held at a percentile over a load point's requests.

    Written in the `--require` syntax: `ttft_p90<=500ms,tpot_p90<=50ms` (a term without a statistic is
    the median; `max` is every request). A request *meets* the SLO when each of its latencies is within
    its limit (goodput, attainment); a load point meets it when each term's percentile is (capacity)."""

    terms: tuple[SloTerm, ...] = ()

    @staticmethod
    def parse(text: str | None) -> "Slo | None":
        if text is None or not str(text).strip():
            return None
        terms = []
        for part in str(text).split(","):
            m = _TERM.match(part)
            if not m:
                raise SloError(f"report.slo: cannot read {part.strip()!r}; write METRIC[_STAT]<=NUMBER[ms|s] with "
                               f"METRIC one of {', '.join(SLO_METRICS)} (per-request latencies) and STAT one of "
                               f"{', '.join(SLO_STATS)}, e.g. ttft_p90<=500ms,tpot_p90<=50ms")
            metric, stat, _, number, unit = m.groups()
            limit = float(number) * (1e3 if unit == "s" else 1.0)
            if limit <= 0:
                raise SloError(f"report.slo: {part.strip()!r}: the limit must be > 0")
            terms.append(SloTerm(f"{metric}_ms", SLO_STATS[stat or "median"], limit))
        if len({t.key for t in terms}) != len(terms):
            raise SloError(f"report.slo: {text!r} names a metric twice")
        return Slo(tuple(terms))

    @property
    def text(self) -> str:
        return ", ".join(t.text for t in self.terms)

    def met_by(self, s: RequestSample) -> bool:
        if not s.ok:
            return False
        for term in self.terms:
            value = getattr(s, term.key)
            if value is None and term.key == "tpot_ms":
                continue  # one output token: no decode step to judge
            if value is None or value > term.limit_ms:
                return False
        return True


SERVE = "causal_lm"
METRICS: tuple[Metric, ...] = (
    Metric("ttft_ms", "TTFT, ms", "lower", "speed", "repeats", task=SERVE),
    Metric("tpot_ms", "Decode time per output token (TPOT), ms", "lower", "speed", "repeats", task=SERVE),
    Metric("itl_ms", "Inter-token latency (ITL), ms", "lower", "speed", "repeats", task=SERVE),
    Metric("e2e_ms", "End-to-end latency per request, ms", "lower", "speed", "repeats", task=SERVE),
    Metric("user_output_tokens_per_s", "Output tokens/s per user (1000 / TPOT)", "higher", "speed", "repeats",
           task=SERVE),
    Metric("achieved_rate_per_s", "Achieved request rate, req/s", "higher", "speed", "point", task=SERVE),
    Metric("served_output_tokens_per_s", "Served output tokens/s", "higher", "speed", "point", task=SERVE),
    Metric("goodput_per_s", "Goodput (requests meeting the SLO), req/s", "higher", "speed", "point",
           "no SLO given (report.slo)", task=SERVE, zero_is_real=True),
    Metric("slo_attainment_pct", "SLO attainment, %", "higher", "speed", "point", "no SLO given (report.slo)",
           task=SERVE, zero_is_real=True),
    Metric("failed_requests_pct", "Failed requests, %", "lower", "speed", "point", task=SERVE, zero_is_real=True),
)


@dataclass
class LoadPointStats:
    metrics: dict[str, Stat | float]
    absent: dict[str, str]


def load_point_stats(samples: Iterable[RequestSample], offered_rate_per_s: float,
                     slo: Slo | None = None) -> LoadPointStats:
    """Every statistic of one load point, from its samples."""
    samples = list(samples)
    ok = [s for s in samples if s.ok]
    metrics: dict[str, Stat | float] = {}
    absent: dict[str, str] = {}
    if samples:
        metrics["failed_requests_pct"] = 100.0 * (len(samples) - len(ok)) / len(samples)
    for key, values in (("ttft_ms", [s.ttft_ms for s in ok]), ("tpot_ms", [s.tpot_ms for s in ok]),
                        ("e2e_ms", [s.e2e_ms for s in ok]), ("itl_ms", [g for s in ok for g in s.itl_ms])):
        values = [v for v in values if v is not None]
        if values:
            metrics[key] = Stat.of(values)
        else:
            absent[key] = "no completed request" if not ok else "no request produced two or more tokens"
    per_user = [1e3 / s.tpot_ms for s in ok if s.tpot_ms]
    if per_user:
        metrics["user_output_tokens_per_s"] = Stat.of(per_user)
    else:
        absent["user_output_tokens_per_s"] = absent.get("tpot_ms", "no decode step measured")
    if isinstance(metrics.get("itl_ms"), Stat):
        metrics["itl_ms"].samples = []  # every gap is in the raw samples already; the record keeps them once
    if ok:
        start = min(s.sent_s for s in samples)
        end = max(s.chunk_times_s[-1] for s in ok)
        duration = max(end - start, 1e-9)
        metrics["achieved_rate_per_s"] = len(ok) / duration
        metrics["served_output_tokens_per_s"] = sum(s.output_tokens for s in ok) / duration
        if slo is not None and slo.terms:
            met = [s for s in samples if slo.met_by(s)]
            metrics["slo_attainment_pct"] = 100.0 * len(met) / len(samples)
            metrics["goodput_per_s"] = len(met) / duration
    if slo is None or not slo.terms:
        absent.update(goodput_per_s="no SLO given (report.slo)", slo_attainment_pct="no SLO given (report.slo)")
    return LoadPointStats(metrics, absent)


@dataclass(frozen=True)
class Capacity:
    rate_per_s: float | None  # None: no measured rate meets the SLO
    how: str  # "measured", "interpolated", "none", "above every measured rate"
    binding: str | None  # the term that stops it ("ttft_ms p90 = 612 ms > 500 ms")


def _term_value(stats: dict[str, Stat | float], key: str, pct: float) -> float | None:
    stat = stats.get(key)
    if not isinstance(stat, Stat):
        return None
    return percentile(sorted(stat.samples), pct) if stat.samples else None


def capacity(points: list[tuple[float, dict[str, Stat | float]]], slo: Slo) -> Capacity:
    """The highest offered rate meeting every percentile term of `slo` (see the module doc for the rule).
    `points`: (offered rate, that load point's metrics), any order; rate `inf` is "all at once"."""
    if not slo.terms:
        return Capacity(None, "none", "no SLO terms")
    rows = sorted(points, key=lambda p: p[0])

    def check(stats: dict[str, Stat | float]) -> tuple[bool, str | None, float, list[tuple[float, str]]]:
        """(passes, what binds, the worst ratio value/limit over the terms, each term's (ratio, words))."""
        if (stats.get("failed_requests_pct") or 0) > 0:
            return False, f"{stats['failed_requests_pct']:.0f}% of requests failed", math.inf, []
        terms = []
        for term in slo.terms:
            value = _term_value(stats, term.key, term.percentile)
            if value is None:
                return False, f"{term.key.removesuffix('_ms')} not measured", math.inf, []
            shown = f"{value:,.0f}" if value >= 100 else f"{value:.4g}"
            terms.append((value / term.limit_ms,
                          f"{term.key.removesuffix('_ms')} p{term.percentile:g} = {shown} ms > {term.limit_ms:g} ms"))
        worst, why = max(terms)
        return worst <= 1.0, (None if worst <= 1.0 else why), worst, terms

    results = [(rate, *check(stats)) for rate, stats in rows]
    if not results:
        return Capacity(None, "none", "no load point")
    finite = [r for r in results if math.isfinite(r[0])]
    burst = [r for r in results if not math.isfinite(r[0])]
    # The sustained rates decide: capacity ends below the lowest failing one, whatever a higher rate or the
    # all-at-once burst (a fixed number of requests, often fewer than a high rate's) did after it.
    fail = next((r for r in finite if not r[1]), None)
    if fail is None:
        if burst and burst[0][1]:
            return Capacity(math.inf, "measured (all at once)", None)
        if not finite:
            return Capacity(None, "none", burst[0][2])
        best = finite[-1]
        return Capacity(best[0], "measured", burst[0][2] if burst else None)
    below = [r for r in finite if r[0] < fail[0]]
    if not below:
        return Capacity(None, "none", fail[2])
    best = below[-1]
    if not math.isfinite(fail[3]):
        return Capacity(best[0], "measured", fail[2])
    # Each term over its limit at the failing rate crosses it between the two rates (its own ratio at
    # each, linearly): the first crossing is the capacity.
    crossings = [((1.0 - lo_r) / (hi_r - lo_r) if hi_r > lo_r else 0.0, why)
                 for (lo_r, _), (hi_r, why) in zip(best[4], fail[4]) if hi_r > 1.0]
    t, why = min(crossings) if crossings else (0.0, fail[2])
    return Capacity(best[0] + t * (fail[0] - best[0]), "interpolated", why)
