"""The metrics registry: complete, unique, units that parse; and the published-table style it drives."""
from __future__ import annotations

import ast
import re

import pytest

from runners.record.schema import Point
from runners.report import csvjson, markdown
from runners.report.metrics import BY_KEY, INFO, METRICS, RATIO, UNITS, spread_columns, split_unit, unit_of
from runners.report.table import build

from .conftest import ROOT
from .test_report_fixtures import config, record, stat, twelve_cell_sweep

# Where records get their metric keys (runners/launch/worker.py's record.load keys come from these too).
# Every engine module counts: engines are plug-ins, and a new one must not add an unregistered metric.
WRITERS = ["runners/workload/generate.py", "runners/workload/classify.py", "runners/workload/loop.py",
           "runners/measure/memory.py", "runners/measure/roofline.py", "runners/quality/measure.py",
           "runners/open/engine.py",
           *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "backends").rglob("*.py"))]
UNIT_KEY = re.compile(r"^[a-z][a-z0-9_]*(_ms|_per_s|_mib|_mj|_j|_pct|_nats)$")
# Keys with a unit that are not metrics of a cell (facts inside engine_info, counters, timing settings).
NOT_METRICS = {"artifact_mib"}  # ONNX Runtime's engine_info name; the record's load holds onnx_artifact_mib


def test_labels_and_keys_are_unique_and_every_key_has_a_unit():
    labels = [m.label for m in METRICS]
    assert len(set(labels)) == len(labels)
    assert len(BY_KEY) == len(METRICS)
    assert len({i.label for i in INFO} | set(labels)) == len(INFO) + len(labels)
    for m in METRICS:
        assert m.unit in UNITS or m.key in ("perplexity", "reference_perplexity"), m.key
        assert m.better in ("higher", "lower", "none") and m.group in ("speed", "memory", "efficiency", "load",
                                                                       "quality")
    assert unit_of("energy_j").symbol == "J" and unit_of("kl_mean_nats").symbol == "nats"
    assert unit_of("perplexity") is RATIO


def test_every_metric_a_record_can_hold_is_registered():
    found = set()
    assert "backends/onnxruntime/engine.py" in WRITERS and "backends/vllm/engine.py" in WRITERS
    for rel in WRITERS:
        for node in ast.walk(ast.parse((ROOT / rel).read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and UNIT_KEY.match(node.value):
                found.add(node.value)
    found |= {f"load_{k}" for k in found if k.startswith("peak_")}  # runners/open/engine.py prefixes load peaks
    assert "ttft_ms" in found and "peak_rss_mib" in found and "kl_mean_nats" in found  # the scan works
    assert sorted(found - set(BY_KEY) - NOT_METRICS) == []
    for key in ("energy_j", "prepare_s", "load_s", "export_s", "quantize_s", "weights_mib", "kv_cache_mib",
                "onnx_artifact_mib", "kl_max_nats", "generation_prefix_match_pct", "reference_perplexity"):
        assert key in BY_KEY


def test_split_unit_and_spread_columns():
    assert split_unit("output_tokens_per_s") == ("output_tokens", "_per_s")
    assert split_unit("decode_weight_bandwidth_gb_per_s") == ("decode_weight_bandwidth", "_gb_per_s")
    assert split_unit("energy_j") == ("energy", "_j") and split_unit("load_s") == ("load", "_s")
    assert spread_columns(BY_KEY["output_tokens_per_s"])[:2] == ["output_tokens_p10_per_s", "output_tokens_p1_per_s"]
    assert spread_columns(BY_KEY["ttft_ms"]) == ["ttft_p90_ms", "ttft_p99_ms", "ttft_min_ms", "ttft_max_ms",
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


@pytest.mark.parametrize("key", [m.key for m in METRICS if m.source == "repeats"])
def test_repeated_metrics_reach_the_table(key):
    m = BY_KEY[key]
    workload = "generate" if m.task == "causal_lm" else "classify"
    rec = record("fp32", [Point(1, metrics={key: stat(12.5)})], workload=workload,
                 cfg=config("fp32", workload=workload))
    assert f"| {m.label} | 12.5 |" in markdown.document(build([rec]))
