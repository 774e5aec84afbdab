"""Serving statistics from raw per-request samples, checked against a hand computation."""
from __future__ import annotations

import math

import pytest

from runners.measure.serving import RequestSample, Slo, SloError, capacity, load_point_stats


def _req(sent: float, ttft: float, gaps: list[float], tokens: int | None = None, error: str | None = None):
    times = [sent + ttft]
    for g in gaps:
        times.append(times[-1] + g)
    return RequestSample(sent, times, tokens if tokens is not None else len(times), 8, error)


def test_ttft_tpot_itl_e2e_by_hand():
    # Two requests: TTFT 0.1 s and 0.3 s; chunks every 0.02 s / 0.04 s; 5 tokens each.
    a = _req(0.0, 0.1, [0.02] * 4)
    b = _req(0.5, 0.3, [0.04] * 4)
    assert a.ttft_ms == pytest.approx(100) and a.e2e_ms == pytest.approx(180) and a.tpot_ms == pytest.approx(20)
    assert b.itl_ms == pytest.approx([40.0] * 4)
    st = load_point_stats([a, b], offered_rate_per_s=2.0)
    assert st.metrics["ttft_ms"].median == pytest.approx(200) and st.metrics["tpot_ms"].max == pytest.approx(40)
    assert st.metrics["itl_ms"].n == 8 and st.metrics["failed_requests_pct"] == 0
    # Duration: first send (0.0) to last token (0.5 + 0.3 + 0.16 = 0.96 s): 2 requests, 10 tokens.
    assert st.metrics["achieved_rate_per_s"] == pytest.approx(2 / 0.96)
    assert st.metrics["served_output_tokens_per_s"] == pytest.approx(10 / 0.96)
    assert "goodput_per_s" in st.absent


def test_goodput_counts_only_requests_meeting_every_term_and_failures_never_meet_it():
    good = _req(0.0, 0.1, [0.02] * 4)
    slow_first = _req(0.1, 0.9, [0.02] * 4)
    failed = RequestSample(0.2, [], 0, 8, "HTTP 500")
    st = load_point_stats([good, slow_first, failed], 3.0, Slo.parse("ttft_p90<=500ms,tpot_p90<=50ms"))
    assert st.metrics["slo_attainment_pct"] == pytest.approx(100 / 3)
    duration = (0.1 + 0.9 + 0.08) - 0.0
    assert st.metrics["goodput_per_s"] == pytest.approx(1 / duration)
    assert st.metrics["failed_requests_pct"] == pytest.approx(100 / 3)


def test_samples_survive_the_compact_form_a_record_keeps():
    a = _req(12.5, 0.1, [0.02, 0.03])
    back = RequestSample.from_compact(a.to_compact())
    assert back.ttft_ms == pytest.approx(a.ttft_ms, abs=1e-3) and back.itl_ms == pytest.approx(a.itl_ms, abs=1e-3)


def _point(rate: float, ttft_s: float, gap_s: float, n: int = 20) -> tuple[float, dict]:
    reqs = [_req(i * 0.1, ttft_s, [gap_s] * 9) for i in range(n)]
    return rate, load_point_stats(reqs, rate).metrics


def test_capacity_measured_interpolated_and_none():
    slo = Slo.parse("ttft_p90<=500ms,tpot_p90<=50ms")
    pts = [_point(1, 0.1, 0.02), _point(2, 0.3, 0.03), _point(4, 0.7, 0.04)]
    cap = capacity(pts, slo)
    # TTFT p90 is 300 ms at 2 req/s (ratio 0.6) and 700 ms at 4 req/s (1.4): it crosses 1.0 halfway.
    assert cap.how == "interpolated" and cap.rate_per_s == pytest.approx(3.0) and cap.binding.startswith("ttft p90")
    assert capacity(pts[:2], slo) == capacity(pts[:2], slo) and capacity(pts[:2], slo).how == "measured"
    none = capacity([_point(1, 0.9, 0.02)], slo)
    assert none.rate_per_s is None and "ttft p90 = 900 ms > 500 ms" in none.binding
    assert math.isfinite(cap.rate_per_s)


def test_slo_syntax():
    slo = Slo.parse("ttft_p99<=0.5s, tpot<=20ms,e2e_max_ms<3000")
    assert [(t.key, t.percentile, t.limit_ms) for t in slo.terms] == [
        ("ttft_ms", 99.0, 500.0), ("tpot_ms", 50.0, 20.0), ("e2e_ms", 100.0, 3000.0)]
    assert Slo.parse(None) is None and Slo.parse("  ") is None
    for bad in ("kl_mean<=0.05", "ttft_p90>=5ms", "ttft_p90<=5GiB", "ttft<=1ms,ttft_p90<=2ms", "ttft<=0ms"):
        with pytest.raises(SloError) as err:
            Slo.parse(bad)
        assert "\n" not in str(err.value) and "report.slo" in str(err.value)


def test_capacity_ends_below_the_lowest_failing_rate_and_a_small_burst_does_not_raise_it():
    """As on the H100 (results/h100/serve_qwen2.5-7b): FP8 met the SLO at 32 req/s, missed TTFT p90 at 48
    req/s, and met it again with the all-at-once burst of only 32 requests."""
    slo = Slo.parse("ttft_p90<=500ms,tpot_p90<=50ms")
    pts = [_point(16, 0.1, 0.02), _point(32, 0.3, 0.02), _point(48, 0.7, 0.02), _point(math.inf, 0.2, 0.02)]
    cap = capacity(pts, slo)
    assert cap.how == "interpolated" and cap.rate_per_s == pytest.approx(40.0) and cap.binding.startswith("ttft p90")
    # A higher rate that passes after a failing one does not lift it either.
    cap = capacity([_point(8, 0.1, 0.02), _point(16, 0.9, 0.02), _point(32, 0.2, 0.02)], slo)
    # TTFT binds: 100 of 500 ms at 8 req/s (0.2), 900 ms at 16 (1.8); it crosses its limit halfway.
    assert cap.rate_per_s == pytest.approx(12.0) and cap.how == "interpolated"
    # Every sustained rate passing: the burst decides between "all at once" and the highest rate.
    assert capacity([_point(8, 0.1, 0.02), _point(math.inf, 0.2, 0.02)], slo).how == "measured (all at once)"
    top = capacity([_point(8, 0.1, 0.02), _point(math.inf, 0.9, 0.02)], slo)
    assert top.rate_per_s == 8 and top.how == "measured" and "ttft p90 = 900 ms" in top.binding
    assert capacity([_point(8, 0.9, 0.02), _point(math.inf, 0.1, 0.02)], slo).rate_per_s is None


def test_interpolation_follows_the_binding_terms_own_ratios():
    """Only TTFT fails at 48 req/s: loosening or tightening the TPOT limit (still met) must not move where
    TTFT crosses 500 ms (TTFT p90 126 -> 594 ms: at 32 + 16 x (1 - 0.252) / (1.188 - 0.252))."""
    pts = [_point(32, 0.126, 0.0089), _point(48, 0.594, 0.0159)]
    want = 32 + 16 * (1 - 0.252) / (1.188 - 0.252)
    for tpot in ("50ms", "20ms"):
        cap = capacity(pts, Slo.parse(f"ttft_p90<=500ms,tpot_p90<={tpot}"))
        assert cap.rate_per_s == pytest.approx(want, rel=1e-6) and cap.binding.startswith("ttft p90 = 594 ms"), tpot
    # Two terms failing: the first to cross decides.
    both = capacity(pts, Slo.parse("ttft_p90<=500ms,tpot_p90<=12ms"))
    assert both.rate_per_s == pytest.approx(32 + 16 * (1 - 8.9 / 12) / (15.9 / 12 - 8.9 / 12), rel=1e-6)
    assert both.binding == "tpot p90 = 15.9 ms > 12 ms"  # the term that crosses first, not the worst
