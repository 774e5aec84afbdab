"""Metric declarations: made where each metric is measured, unique, with units that parse; a record
refuses a key nobody declared; and the published-table style the declarations drive."""
from __future__ import annotations

from runners.workload import workload_kinds

import pytest

from backends.contract import Catalogue, Metric, MetricError
from runners.catalogue import shipped
from runners.record.schema import Point, RunRecord
from runners.report import csvjson, markdown
from runners.report.metrics import INFO, RATIO, UNITS, spread_columns, split_unit, unit_of
from runners.report.table import build

from .test_report_fixtures import config, record, stat, twelve_cell_sweep

SHIPPED = shipped()


def test_shipped_declarations_are_unique_and_every_key_has_a_unit():
    labels = [m.label for m in SHIPPED]
    assert len(set(labels)) == len(labels) == len(SHIPPED)
    assert len({i.label for i in INFO} | set(labels)) == len(INFO) + len(labels)
    for m in SHIPPED:
        # Unitless on purpose: a ratio, or a count per unit of work.
        assert m.unit in UNITS or (m.unitless and m.key in ("perplexity", "reference_perplexity",
                                                            "kernel_launches_per_unit", "host_syncs_per_unit")), m.key
    assert unit_of("energy_j").symbol == "J" and unit_of("kl_mean_nats").symbol == "nats"
    assert unit_of("perplexity") is RATIO
    for key in ("energy_j", "prepare_s", "load_s", "export_s", "quantize_s", "weights_mib", "kv_cache_mib",
                "onnx_artifact_mib", "kl_max_nats", "generation_prefix_match_pct", "reference_perplexity",
                "peak_vram_mib", "model_load_mib"):
        assert key in SHIPPED, key


@pytest.mark.parametrize("bad, why", [
    (dict(key="ttft", label="TTFT"), "ends in its unit"),
    (dict(key="ttft_ms", label="TTFT", unitless=True), "declared unitless"),
    (dict(key="TTFT_ms", label="TTFT"), "lower-case"),
    (dict(key="ttft_ms", label="TTFT", group="fast"), "group"),
    (dict(key="ttft_ms", label=""), "label"),
])
def test_a_bad_declaration_is_refused(bad, why):
    args = dict(better="lower", group="speed", source="repeats") | bad
    with pytest.raises(MetricError, match=why):
        Metric(**args)


def test_two_meanings_of_one_key_or_one_label_for_two_keys_are_refused():
    a = Metric("x_ms", "X, ms", "lower", "speed", "repeats")
    assert len(Catalogue.merge([a], [a])) == 1  # the same declaration twice (engines share the contract's)
    with pytest.raises(MetricError, match="declared twice"):
        Catalogue.merge([a], [Metric("x_ms", "X, ms", "higher", "speed", "repeats")])
    with pytest.raises(MetricError, match="share the label"):
        Catalogue.merge([a], [Metric("y_ms", "X, ms", "lower", "speed", "repeats")])


def _declared_record(**points_metrics) -> RunRecord:
    cat = Catalogue([Metric("ttft_ms", "TTFT, ms", "lower", "speed", "repeats"),
                     Metric("peak_rss_mib", "Peak host RSS, MiB", "lower", "memory", "point")])
    return RunRecord("r", "fp32", "transformers", "tiny", "generate", "synthetic", "cpu",
                     points=[Point(1, metrics=points_metrics)], declared=cat.to_list())


def test_a_record_refuses_a_key_no_producer_declared():
    from runners.measure.stats import Stat

    ok = _declared_record(ttft_ms=Stat.of([1.0, 2.0]), peak_rss_mib=12.0)
    assert RunRecord.from_dict(ok.to_dict()).points[0].metrics["ttft_ms"].median == 1.5
    with pytest.raises(MetricError, match="batch 1 secret_ms"):
        _declared_record(ttft_ms=Stat.of([1.0]), secret_ms=3.0).to_dict()
    # Declared, but in another place: a single number where a statistic over repeats was declared.
    with pytest.raises(MetricError, match="batch 1 ttft_ms"):
        _declared_record(ttft_ms=4.0).to_dict()
    bad = _declared_record(ttft_ms=Stat.of([1.0]))
    bad.load["weights_mib"] = 1.0
    with pytest.raises(MetricError, match="load weights_mib"):
        bad.to_dict()


def test_a_record_status_is_a_closed_set_on_write_and_on_read():
    rec = _declared_record()
    rec.status = "fine"
    with pytest.raises(ValueError, match="not a record status"):
        rec.to_dict()
    rec.status = "ok"
    data = rec.to_dict()
    data["status"] = "great"
    with pytest.raises(ValueError, match="not a record status"):
        RunRecord.from_dict(data)
    data["status"], data["schema_version"] = "ok", 99
    with pytest.raises(ValueError, match="newer quantbench"):
        RunRecord.from_dict(data)


def test_split_unit_and_spread_columns():
    assert split_unit("output_tokens_per_s") == ("output_tokens", "_per_s")
    assert split_unit("decode_weight_bandwidth_gb_per_s") == ("decode_weight_bandwidth", "_gb_per_s")
    assert split_unit("energy_j") == ("energy", "_j") and split_unit("load_s") == ("load", "_s")
    assert spread_columns(SHIPPED["output_tokens_per_s"])[:2] == ["output_tokens_p10_per_s", "output_tokens_p1_per_s"]
    assert spread_columns(SHIPPED["ttft_ms"]) == ["ttft_p90_ms", "ttft_p99_ms", "ttft_min_ms", "ttft_max_ms",
                                                 "ttft_cv_pct", "ttft_n"]


def test_csv_columns_carry_units():
    row = csvjson.flat_rows(build(twelve_cell_sweep()))[0]
    ids = set(csvjson.ID_COLUMNS) | set(csvjson.ENV_COLUMNS) | {"baseline", "absent_reasons", "workload.new_tokens"}
    for col in set(row) - ids:
        assert col.endswith(("_ms", "_s", "_per_s", "_mib", "_pct", "_nats", "_j", "_mj", "_n", "_within_spread")), col


def _classify(backend: str, order: int, ms: float):
    p = Point(8, metrics={"per_example_ms": stat(ms, 0.02), "peak_allocated_mib": ms * 100})
    return record(backend, [p], order=order, workload="classify", cfg=config(backend, workload="classify"))


def test_published_table_style():
    recs = [_classify("fp16", 0, 2.31), _classify("bnb_int8", 1, 5.80), _classify("bnb_nf4", 2, 3.19)]
    md = markdown.document(build(recs))
    assert "| | fp16 | bnb_int8 | bnb_nf4 |" in md
    assert "| Latency, ms/example | 2.31 | 5.80 (+151%) | 3.19 (+38%) |" in md
    assert "Baseline: **fp16**" in md
    assert "TTFT" not in md  # a generate-only metric is not listed for a classifier, not even as absent


def test_baseline_override_and_failure_cell():
    recs = [_classify("fp16", 0, 2.0), record("bnb_int8", [Point(8, status="oom", reason="CUDA out of memory")],
                                                order=1, workload="classify", status="oom",
                                                cfg=config("bnb_int8", workload="classify"))]
    md = markdown.document(build(recs, baseline="bnb_int8"))
    assert "Baseline: **bnb_int8**" in md
    assert "| Latency, ms/example | 2.00 | oom |" in md
    assert "| Status | ok | oom: CUDA out of memory |" in md
    assert "the baseline bnb_int8 is oom here: no relative change is shown" in md


@pytest.mark.parametrize("key", [m.key for m in SHIPPED if m.source == "repeats"])
def test_repeated_metrics_reach_the_table(key):
    m = SHIPPED[key]
    workload = "generate" if m.task == "causal_lm" else "classify"
    point = Point(1, metrics={key: stat(12.5)})
    if key in {x.key for x in workload_kinds()["serve"].metrics} - {x.key for x in workload_kinds()["generate"].metrics}:
        workload, point = "serve", Point(None, rate_per_s=2.0, metrics={key: stat(12.5)})  # a serving-only metric
    rec = record("fp32", [point], workload=workload, cfg=config("fp32", workload=workload))
    assert f"| {m.label} | 12.5 |" in markdown.document(build([rec]))
