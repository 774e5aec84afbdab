"""Confidence intervals: the median's order-statistic interval, the bootstrap interval of a difference to
the baseline (the n.s. mark), their csv columns and hover text, and `workload.repeats=auto`."""
from __future__ import annotations

import itertools

import pytest

from backends.contract import ConfigError
from runners.measure.stats import (BOOTSTRAP_RESAMPLES, CI_LEVEL, MIN_BOOTSTRAP_REPEATS, TOO_FEW_REPEATS, Stat,
                                   binom_cdf_half, median_difference_interval, median_interval, median_rank,
                                   min_repeats_for_median_interval)
from runners.plan.config import WorkloadSpec
from runners.record.schema import Point
from runners.report import csvjson
from runners.report.spread import Spread, within_spread
from runners.report.table import build
from runners.report.views import SPREAD_NOTE, metric_cell
from runners.workload import loop

from .test_config import compose_run
from .test_report_fixtures import record, stat

SEPARATED = ([100.0, 101.0, 102.0, 103.0, 104.0, 105.0], [110.0, 111.0, 112.0, 113.0, 114.0, 115.0])
OVERLAPPING = ([100.0, 104.0, 101.0, 106.0, 99.0, 103.0], [101.0, 98.0, 105.0, 102.0, 100.0, 104.0])


# -- the median's interval: order statistics, binomial coverage ----------------------------------
def test_binomial_cdf_by_hand():
    assert binom_cdf_half(-1, 6) == 0.0
    assert binom_cdf_half(0, 6) == 1 / 64
    assert binom_cdf_half(1, 10) == 11 / 1024
    assert binom_cdf_half(10, 10) == 1.0


def test_level_is_95_percent_and_needs_six_repeats():
    assert CI_LEVEL == 0.95
    assert min_repeats_for_median_interval() == 6


def test_six_repeats_give_min_to_max():
    xs = [3.0, 1.0, 6.0, 2.0, 5.0, 4.0]
    assert median_rank(6) == (1, 1 - 2 / 64)  # 96.9%
    ci = median_interval(xs)
    assert (ci.low, ci.high, ci.reason) == (1.0, 6.0, None)
    assert ci.coverage == pytest.approx(0.96875)


def test_ten_repeats_give_second_and_ninth():
    xs = [10.0, 3.0, 7.0, 1.0, 9.0, 2.0, 8.0, 4.0, 6.0, 5.0]
    k, coverage = median_rank(10)
    assert k == 2 and coverage == pytest.approx(1 - 2 * 11 / 1024)  # 97.9%; k=3 would give 89.1%
    ci = median_interval(xs)
    assert (ci.low, ci.high) == (2.0, 9.0)
    assert ci.half_width_pct(5.5) == pytest.approx(100 * 3.5 / 5.5)


def test_five_repeats_have_no_95_percent_interval():
    assert median_rank(5) is None  # [min, max] of 5 covers only 1 - 2/32 = 93.75%
    ci = median_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert ci.low is None and ci.high is None
    assert ci.reason == "5 repeats, fewer than the 6 a 95% interval needs"


def test_spread_carries_the_median_interval_from_the_samples():
    sp = Spread.of(vars(Stat.of([float(x) for x in range(1, 11)])), "lower")
    assert (sp.ci_low, sp.ci_high, sp.ci_reason) == (2.0, 9.0, None)
    old = {"median": 5.0, "min": 1.0, "max": 9.0, "n": 10, "cv_pct": 3.0}  # a Stat dict without samples
    assert Spread.of(old, "lower").ci_low is None and Spread.of(old, "lower").ci_reason


# -- the difference's interval: seeded percentile bootstrap -------------------------------------
def test_separated_samples_are_significant():
    cell, base = SEPARATED
    d = median_difference_interval(cell, base)
    assert d.significant and d.reason is None
    assert d.low <= -10.0 + 3 and d.high < 0 and d.low < d.high
    assert d.low_pct < d.high_pct < 0
    assert BOOTSTRAP_RESAMPLES == 2000


def test_overlapping_samples_are_not():
    cell, base = OVERLAPPING
    d = median_difference_interval(cell, base)
    assert d.low < 0 < d.high and not d.significant
    assert d.low_pct < 0 < d.high_pct


def test_the_interval_is_reproducible_and_symmetric():
    cell, base = OVERLAPPING
    d = median_difference_interval(cell, base)
    assert median_difference_interval(list(cell), list(base)) == d
    assert median_difference_interval(sorted(cell), base[::-1]) == d  # a function of the samples, not their order
    back = median_difference_interval(base, cell)
    assert (back.low, back.high) == (-d.high, -d.low)


def test_too_few_repeats_is_not_significant_with_that_reason():
    assert MIN_BOOTSTRAP_REPEATS == 5
    d = median_difference_interval([1.0, 1.1, 1.2, 1.3], [9.0, 9.1, 9.2, 9.3, 9.4])
    assert not d.significant and d.low is None
    assert d.reason.startswith(TOO_FEW_REPEATS) and "4 vs 5" in d.reason
    one, other = (Spread.of(vars(stat(m, n=4)), "higher") for m in (100.0, 200.0))
    assert within_spread(one, other) is True
    assert within_spread(None, other) is None


def test_within_spread_follows_the_interval():
    a, b = (Spread.of(vars(Stat.of(xs)), "lower") for xs in SEPARATED)
    assert within_spread(a, b) is False and within_spread(b, a) is False
    a, b = (Spread.of(vars(Stat.of(xs)), "lower") for xs in OVERLAPPING)
    assert within_spread(a, b) is True


# -- in the table: n.s., the hover text, the csv columns -----------------------------------------
def _sweep():
    def point(tok_s, n, spread=0.05):
        return Point(1, metrics={"output_tokens_per_s": stat(tok_s, spread, n=n), "ttft_ms": stat(10.0, spread, n=n)})
    return [record("fp32", [point(100.0, 10)], order=0), record("bnb_int8", [point(150.0, 10)], order=1),
            record("awq", [point(101.0, 10)], order=2), record("gptq", [point(300.0, 3)], order=3)]


def test_comparison_carries_the_interval_and_its_reason():
    table = build(_sweep())
    [block] = table.blocks
    fp32, int8, awq, gptq = block.cells
    far = block.compare(int8, "output_tokens_per_s")
    assert far.within_spread is False and 40 < far.ci_low_pct < 50 < far.ci_high_pct < 60 and far.reason is None
    assert far.ci_low > 0 and far.rel_pct == pytest.approx(50.0)
    near = block.compare(awq, "output_tokens_per_s")
    assert near.within_spread is True and near.ci_low_pct < 0 < near.ci_high_pct
    few = block.compare(gptq, "output_tokens_per_s")
    assert few.within_spread is True and few.ci_low_pct is None and few.reason.startswith(TOO_FEW_REPEATS)


def test_cell_text_and_hover_detail():
    table = build(_sweep())
    [block] = table.blocks
    m = table.catalogue["output_tokens_per_s"]
    views = [metric_cell(block, c, m) for c in block.cells]
    assert [v.text for v in views] == ["100", "150 (+50%)", "101 (+1.0%, n.s.)", "300 (+200%, n.s.)"]
    assert views[0].detail.startswith("median 100 (95% CI ") and views[0].detail.endswith("n=10")
    assert "vs baseline +50% (95% CI +" in views[1].detail and "n.s." not in views[1].detail
    assert "vs baseline +1.0% (95% CI -" in views[2].detail and ", n.s.)" in views[2].detail
    assert "median 300 (no 95% CI: 3 repeats, fewer than the 6" in views[3].detail
    assert f"vs baseline +200% (n.s.: {TOO_FEW_REPEATS}: 3 vs 10" in views[3].detail


def test_legend_states_method_and_level():
    assert "`" not in SPREAD_NOTE
    assert "95%" in SPREAD_NOTE and "bootstrap" in SPREAD_NOTE and "2,000" in SPREAD_NOTE
    assert f"fewer than {MIN_BOOTSTRAP_REPEATS} repeats" in SPREAD_NOTE


def test_csv_columns_beside_the_spread_columns():
    table = build(_sweep())
    rows = csvjson.flat_rows(table)
    cols = csvjson.columns(table, rows)
    for name in ("output_tokens_ci_low_per_s", "output_tokens_ci_high_per_s", "ttft_ci_low_ms", "ttft_ci_high_ms",
                 "output_tokens_vs_baseline_ci_low_pct", "output_tokens_vs_baseline_ci_high_pct"):
        assert name in cols, name
    i = cols.index
    assert i("ttft_n") < i("ttft_ci_low_ms") < i("ttft_ci_high_ms") < i("ttft_vs_baseline_pct") \
        < i("ttft_vs_baseline_ci_low_pct") < i("ttft_vs_baseline_ci_high_pct") < i("ttft_within_spread")
    by = {r["backend"]: r for r in rows}
    samples = sorted(table.records[0].points[0].metrics["ttft_ms"].samples)
    assert (by["fp32"]["ttft_ci_low_ms"], by["fp32"]["ttft_ci_high_ms"]) == (samples[1], samples[8])
    assert "output_tokens_vs_baseline_ci_low_pct" not in by["fp32"]  # the baseline has no change
    assert by["bnb_int8"]["output_tokens_vs_baseline_ci_low_pct"] > 0
    assert "output_tokens_ci_low_per_s" not in by["gptq"]  # 3 repeats: no interval, an empty field
    assert "output_tokens_vs_baseline_ci_low_pct" not in by["gptq"] and by["gptq"]["output_tokens_within_spread"]


# -- workload.repeats=auto -----------------------------------------------------------------------
def _auto(**kw) -> WorkloadSpec:
    return WorkloadSpec(kind="generate", batch_sizes=[1], warmup=1, repeats="auto", **kw)


def _measure(wl: WorkloadSpec, values) -> tuple[Point, int]:
    calls = itertools.count()
    source = iter(values)

    def once() -> dict[str, float | None]:
        next(calls)
        return {"e2e_ms": next(source), "ttft_ms": 1.0}

    ticks = []
    point = loop.measure(None, wl, 1, "cpu", once, lambda: ticks.append(1), ("energy_per_output_token_mj", 4),
                         "e2e_ms")
    assert len(ticks) == next(calls)  # one progress step per call, warm-up included
    return point, len(ticks) - wl.warmup


def test_auto_stops_at_the_first_interval_that_meets_the_target():
    point, timed = _measure(_auto(), itertools.repeat(50.0))
    assert timed == min_repeats_for_median_interval() == 6
    assert point.status == "ok" and point.reason is None
    assert point.metrics["e2e_ms"].n == 6 and point.metrics["ttft_ms"].n == 6


def test_auto_noisy_stops_at_max_repeats_and_says_why():
    point, timed = _measure(_auto(max_repeats=8), itertools.cycle([50.0, 100.0, 150.0]))
    assert timed == 8 and point.status == "ok" and point.metrics["e2e_ms"].n == 8
    assert point.reason.startswith("repeats=auto: stopped at max_repeats=8 after 8 repeats with the e2e_ms "
                                   "median's 95% interval half-width ")
    assert point.reason.endswith("% > 1%")


def test_auto_stops_at_max_seconds():
    readings = itertools.count(0.0, 10.0)  # each reading of the clock 10 s after the last
    rep = loop._repeat(_auto(max_seconds=35.0), lambda: {"e2e_ms": 1.0}, lambda: None, loop.EnergyMeter("cpu"),
                       "e2e_ms", clock=lambda: next(readings))
    assert rep.count == 4 and rep.samples == {"e2e_ms": [1.0] * 4}
    assert rep.short_of_target == ("repeats=auto: stopped at max_seconds=35 after 4 repeats with the e2e_ms median's "
                                   "95% interval none (4 repeats, fewer than the 6 a 95% interval needs)")


def test_fixed_repeats_are_exact():
    wl = WorkloadSpec(kind="generate", batch_sizes=[1], warmup=0, repeats=3)
    point, timed = _measure(wl, itertools.cycle([50.0, 100.0, 150.0]))
    assert timed == 3 and point.reason is None and point.metrics["e2e_ms"].n == 3


def test_kinds_name_their_primary_metric():
    from runners.workload import workload
    assert workload("generate").primary == "e2e_ms"
    assert workload("classify").primary == "batch_ms"
    for kind in ("generate", "classify"):
        assert workload(kind).primary in {m.key for m in workload(kind).metrics}


# -- config --------------------------------------------------------------------------------------
def test_auto_config_and_defaults():
    wl = compose_run("workload.repeats=auto", "++workload.max_repeats=20").workload
    assert (wl.repeats, wl.ci_target_pct, wl.max_repeats, wl.max_seconds) == ("auto", 1.0, 20, 300.0)
    assert WorkloadSpec(kind="generate", batch_sizes=[1]).repeats == 10


@pytest.mark.parametrize("override, message", [
    ("workload.repeats=0", "workload.repeats: must be > 0, got 0"),
    ("workload.repeats=abc", "workload.repeats: 'abc' is not int | 'auto'"),
    ("++workload.ci_target_pct=0", "workload.ci_target_pct: must be a positive number, got 0"),
    ("++workload.max_seconds=-1", "workload.max_seconds: must be a positive number, got -1"),
    ("++workload.max_repeats=0", "workload.max_repeats: must be > 0, got 0"),
])
def test_bad_repeat_settings_are_one_line(override, message):
    with pytest.raises(ConfigError) as err:
        compose_run(override)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_repeats_name_the_valid_choices():
    with pytest.raises(ConfigError, match=r"workload.repeats: 'abc' is not valid; choose a positive integer or 'auto'"):
        WorkloadSpec(kind="generate", batch_sizes=[1], repeats="abc")
    with pytest.raises(ConfigError, match="workload.repeats: must be > 0, got 0"):
        WorkloadSpec(kind="generate", batch_sizes=[1], repeats=0)
    with pytest.raises(ConfigError, match=r"workload.max_repeats: repeats=auto needs at least 6"):
        _auto(max_repeats=5)
