"""The CI sweep: the real embedded model on CPU across three engines, ending in one table.

fp32 and bnb_int8 (transformers) and ort_int8 (ONNX Runtime, exported once and cached): every row
must carry measured speed and memory, and the quantized rows a small, non-zero KL vs fp32.

The sweep is the README's own CPU speed + quality command (`Use`: `-m backend=fp32,bnb_int8,ort_int8
quality.reference=fp32`, default model SmolLM2-135M), run once per session from a fresh clone with the
sizes of tests/readme_use.py (batch 1, 16 prompt tokens, 4 new tokens, median of 2 after a warm-up);
tests/test_readme_use.py checks the same run changes no tracked file.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from runners.record.store import find_records

from .conftest import ROOT

pytestmark = pytest.mark.slow


def readme_first_backends() -> list[str]:
    """The backends of the README's first command: a newcomer's first run must be a comparison."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("<!-- run-command -->"):text.index("<!-- /run-command -->")]
    command = block.split("&&")[-1]
    assert re.search(r"(quantbench|runners\.bench) -m ", command), command
    return re.search(r"backend=(\S+)", command).group(1).split(",")


def test_readme_first_command_is_the_sweep_tested_here():
    assert readme_first_backends() == ["fp32", "bnb_int8", "ort_int8"]


@pytest.mark.xdist_group("readme_use")
def test_smollm2_sweep_fp32_bnb_int8_ort_int8(readme_use):
    assert "error" not in readme_use, readme_use.get("error")
    backends = "backend=" + ",".join(readme_first_backends())
    found = [r for r in readme_use["runs"] if r["cmd"].startswith("python -m runners.bench -m ")
             and backends in r["cmd"].split() and "quality.reference=fp32" in r["cmd"].split()]
    assert len(found) == 1, f"the README's Use section shows one `-m {backends} quality.reference=fp32` sweep"
    [run] = found
    assert not any(a.startswith("model=") for a in run["args"])  # the default model: SmolLM2-135M's real weights
    assert run["rc"] == 0, (run["cmd"], run["rc"], run["stderr"][-4000:])
    sweep = Path(run["sweep"])
    with open(sweep / "table.csv") as f:
        rows = {r["backend"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["fp32", "bnb_int8", "ort_int8"]
    for name, r in rows.items():
        assert r["status"] == "ok", (name, r["reason"])
        assert r["weights"] == "pretrained" and r["model"] == "smollm2-135m" and r["batch_size"] == "1"
        assert float(r["output_tokens_per_s"]) > 0 and float(r["tpot_ms"]) > 0 and float(r["ttft_ms"]) > 0
        assert float(r["peak_rss_mib"]) > 100
    recs = {r.backend: r for r in find_records(sweep)}
    fp32, int8, ort8 = (recs[b].quality.flat() for b in ("fp32", "bnb_int8", "ort_int8"))
    # The reference row compares with itself; the quantized rows really differ, by a little.
    assert fp32["kl_mean_nats"] == 0 and fp32["kl_p99_nats"] == 0 and fp32["top1_agreement_pct"] == 100
    assert fp32["identical_generations_pct"] == 100
    assert 0 < int8["kl_mean_nats"] < 1 and int8["kl_mean_nats"] <= int8["kl_p99_nats"], int8
    assert 50 < int8["top1_agreement_pct"] <= 100 and int8["kl_method"] == "full"
    assert 1 < fp32["perplexity"] == int8["reference_perplexity"] and int8["perplexity"] > 1
    # ORT's dynamic int8 (per-tensor, no reduce_range) is much coarser on CPU: KL ~0.7-1 nats measured.
    assert 0 < ort8["kl_mean_nats"] < 5 and ort8["kl_method"] == "full", ort8
    assert "CPU" in recs["ort_int8"].engine_info["placement"]  # ORT says where its nodes ran
    table = (sweep / "table.md").read_text()
    assert "| | fp32 | bnb_int8 | ort_int8 |" in table and "| Node placement (execution providers) |" in table
