"""The runner on CPU: one cell, a sweep ending in one table, both workloads."""
from __future__ import annotations

import csv
import json

import pytest

from runners.record.store import find_records

from .conftest import FAST, bench


def test_single_run_writes_record_and_table(tmp_path):
    proc = bench(*FAST, "workload.batch_sizes=[1,2]", f"hydra.run.dir={tmp_path}", check=True)
    rec = json.loads((tmp_path / "record.json").read_text())
    assert rec["status"] == "ok" and rec["weights"] == "synthetic" and rec["device"] == "cpu"
    assert [p["batch_size"] for p in rec["points"]] == [1, 2]
    for p in rec["points"]:
        m = p["metrics"]
        assert m["ttft_ms"]["median"] > 0 and m["tpot_ms"]["median"] > 0
        assert m["output_tokens_per_s"]["n"] == 2
        assert m["peak_rss_mib"] > 10
        assert "peak_allocated_mib" in p["absent"]  # CPU: absent with a reason, never 0
    env = rec["env"]
    assert env["packages"]["torch"] and env["git"]["commit"] and env["python"]
    assert rec["config"]["backend"]["options"]["dtype"] == "float32"
    assert rec["load"]["load_s"] > 0
    assert "| TTFT, ms |" in proc.stdout


def test_sweep_ends_in_one_table(tmp_path):
    bench("-m", "backend=fp32,bnb_int8", *FAST, "workload.batch_sizes=[1]", f"hydra.sweep.dir={tmp_path}",
          check=True)
    table = (tmp_path / "table.md").read_text()
    assert "| | fp32 | bnb_int8 |" in table
    with open(tmp_path / "table.csv") as f:
        data = list(csv.DictReader(f))
    assert [r["backend"] for r in data] == ["fp32", "bnb_int8"]
    for r in data:
        assert r["status"] == "ok" and float(r["output_tokens_per_s"]) > 0
        assert r["model"] == "tiny" and r["workload"] == "generate" and r["batch_size"] == "1"
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2
    int8 = json.loads(lines[1])
    assert int8["engine_info"]["llm_int8_threshold"] == 6.0
    census = int8["engine_info"]["census"]  # it really was quantized: every linear layer but the head
    assert census["layers"] == {"Linear8bitLt": 14, "Linear": 1} and census["unquantized"] == ["lm_head"]
    assert census["quantized_layers"] == 14 and 8 <= census["quantized_bits"] <= 9
    assert "Linear8bitLt x14" in table  # what ran reaches the table
    assert int8["engine_info"]["skip_modules"] == ["lm_head"]


def test_report_rebuilds_table_from_records(tmp_path):
    bench(*FAST, "workload.batch_sizes=[1]", f"hydra.run.dir={tmp_path}", check=True)
    (tmp_path / "table.md").unlink()
    from runners.report.cli import main

    assert main([str(tmp_path), "--no-html"]) == 0
    assert "| | fp32 |" in (tmp_path / "table.md").read_text()


def test_classify_in_process(tmp_path):
    # Odd repeats: the median of batch/ms is then exactly the batch over the median ms.
    bench("model=tiny", "workload.warmup=1", "workload.repeats=3", "workload=classify", "workload.seq_len=16",
          "workload.batch_sizes=[1,4]", "isolate=false",
          f"hydra.run.dir={tmp_path}", check=True)
    [rec] = find_records(tmp_path)
    assert rec.status == "ok" and rec.workload == "classify"
    for p in rec.points:
        assert p.metrics["per_example_ms"].median > 0
        assert p.metrics["examples_per_s"].median == pytest.approx(
            p.batch_size / (p.metrics["batch_ms"].median / 1e3), rel=1e-6)


def test_nf4_and_fp4_on_cpu_run_or_say_why(tmp_path):
    bench("-m", "backend=bnb_nf4,bnb_fp4", *FAST, "workload.batch_sizes=[1]", f"hydra.sweep.dir={tmp_path}")
    recs = find_records(tmp_path)
    assert len(recs) == 2
    for rec in recs:
        assert rec.status == "ok" or (rec.status in ("crash", "unsupported_hardware") and rec.reason)
