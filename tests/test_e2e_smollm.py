"""The CI sweep: the real embedded model on CPU across three engines, ending in one table.

fp32 and bnb_int8 (transformers) and ort_int8 (ONNX Runtime, exported once and cached): every row
must carry measured speed and memory, and the quantized rows a small, non-zero KL vs fp32.
"""
from __future__ import annotations

import csv

import pytest

from runners.records import find_records

from .conftest import bench

pytestmark = pytest.mark.slow


def test_smollm2_sweep_fp32_bnb_int8_ort_int8(tmp_path):
    bench("-m", "backend=fp32,bnb_int8,ort_int8", "model=smollm2-135m", "workload.batch_sizes=[1]",
          "workload.prompt_tokens=16", "workload.new_tokens=4", "workload.warmup=1", "workload.repeats=2",
          "quality.reference=fp32", "quality.eval_tokens=32", "quality.generations=2",
          "quality.generation_tokens=4", "report.html=false", f"hydra.sweep.dir={tmp_path}",
          check=True, timeout=1500)
    with open(tmp_path / "table.csv") as f:
        rows = {r["backend"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["fp32", "bnb_int8", "ort_int8"]
    for name, r in rows.items():
        assert r["status"] == "ok", (name, r["reason"])
        assert r["weights"] == "pretrained" and r["model"] == "smollm2-135m" and r["batch_size"] == "1"
        assert float(r["output_tokens_per_s"]) > 0 and float(r["tpot_ms"]) > 0 and float(r["ttft_ms"]) > 0
        assert float(r["peak_rss_mib"]) > 100
    recs = {r.backend: r for r in find_records(tmp_path)}
    assert recs["fp32"].quality["kl_mean"] == 0 and recs["fp32"].quality["top1_agreement_pct"] == 100
    for name in ("bnb_int8", "ort_int8"):
        q = recs[name].quality
        assert 0 < q["kl_mean"] < 1, (name, q)
    assert "CPU" in recs["ort_int8"].engine_info["placement"]  # ORT says where its nodes ran
    table = (tmp_path / "table.md").read_text()
    assert "| | fp32 | bnb_int8 | ort_int8 |" in table and "| Node placement (execution providers) |" in table
