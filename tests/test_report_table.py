"""The table model and its md/csv/jsonl writers, on hand-made records (fast, CPU, no model)."""
from __future__ import annotations

import csv
import json
import os
import re

import numpy as np
import pytest

from runners.record.schema import Point
from runners.record.store import write_record
from runners.report import csvjson, markdown
from runners.report.outputs import markdown_for, write_outputs
from runners.report.table import build, relative_pct

from .conftest import ROOT
from .test_report_fixtures import (BACKENDS, GPU_ENV, config, gen_point, rate, record, stat,
                                   twelve_cell_sweep)


def _write(tmp_path, recs, sweep_backends=None):
    for rec in recs:
        write_record(tmp_path / rec.run_id / "record.json", rec)
    if sweep_backends:
        (tmp_path / "sweep.json").write_text(json.dumps({"backends": list(sweep_backends)}))


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _md_values(md: str, label: str) -> list[list[str]]:
    """The cells of every row called `label` in a markdown document."""
    return [[c.strip() for c in line.strip().strip("|").split("|")][1:]
            for line in md.splitlines() if line.startswith(f"| {label} |")]


# -- every run x batch size is a cell; every varying parameter is visible -----------------------
def test_twelve_cells_none_overwritten():
    table = build(twelve_cell_sweep())
    assert len(table.cells) == 12
    assert [p.path for p in table.params] == ["workload.new_tokens"]
    assert [b.title for b in table.blocks] == [
        f"tiny · generate · batch {bs} · new_tokens={nt} · synthetic weights · cpu"
        for nt in (4, 8) for bs in (1, 2)]
    for block in table.blocks:
        assert block.columns == list(BACKENDS)
    md = markdown.document(table)
    shown = {v.split(" ")[0] for row in _md_values(md, "Output tokens/s") for v in row}
    want = {f"{rate(b, nt, bs):,.0f}" for b in range(3) for nt in (4, 8) for bs in (1, 2)}
    assert shown == want  # all 12 medians are in table.md: no cell overwrote another
    assert md.split("## Results", 1)[1].count("### tiny · generate · batch") == 4


def test_csv_one_row_per_cell_with_parameter_columns_and_integers(tmp_path):
    recs = twelve_cell_sweep()
    _write(tmp_path, recs, BACKENDS)
    write_outputs(tmp_path, html=False)
    rows = _csv(tmp_path / "table.csv")
    assert len(rows) == 12
    assert len({(r["backend"], r["batch_size"], r["workload.new_tokens"]) for r in rows}) == 12
    assert {r["batch_size"] for r in rows} == {"1", "2"}  # integers stay integers
    assert {r["workload.new_tokens"] for r in rows} == {"4", "8"}
    assert {r["output_tokens_n"] for r in rows} == {"5"}
    assert all(float(r["output_tokens_per_s"]) > 0 for r in rows)


def test_rows_jsonl_is_flat_and_loads_with_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    _write(tmp_path, twelve_cell_sweep(), BACKENDS)
    written = write_outputs(tmp_path, html=False)
    assert dict(written.files())["rows"] == tmp_path / "rows.jsonl"
    df = pd.read_json(tmp_path / "rows.jsonl", lines=True)
    assert len(df) == 12 and {"output_tokens_per_s", "output_tokens_p10_per_s", "workload.new_tokens"} <= set(df)
    assert not any(isinstance(v, (dict, list)) for v in df.to_numpy().ravel())  # flat: no json_normalize needed
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 6  # the records themselves


def test_spread_columns_name_the_slow_tail():
    recs = twelve_cell_sweep()
    rows = csvjson.flat_rows(build(recs))
    row = rows[0]
    samples = recs[0].points[0].metrics["output_tokens_per_s"].samples
    # a rate's slow tail is its low percentiles, from the stored samples
    assert row["output_tokens_p10_per_s"] == pytest.approx(np.percentile(samples, 10))
    assert row["output_tokens_p1_per_s"] == pytest.approx(np.percentile(samples, 1))
    assert "output_tokens_p90_per_s" not in row
    assert row["ttft_p90_ms"] == pytest.approx(recs[0].points[0].metrics["ttft_ms"].p90)
    assert {"ttft_min_ms", "ttft_max_ms", "ttft_cv_pct", "ttft_n"} <= set(row)


def test_backend_option_that_varies_within_a_backend_is_a_parameter(tmp_path):
    recs = [record(b, [gen_point(1, 100.0 + i)], order=i,
                   cfg=config(b, options={"dtype": "float32", "llm_int8_threshold": t}))
            for i, (b, t) in enumerate([("fp32", 4.0), ("fp32", 6.0), ("bnb_int8", 4.0), ("bnb_int8", 6.0)])]
    table = build(recs)
    assert [b.title for b in table.blocks] == [
        "tiny · generate · batch 1 · llm_int8_threshold=4.0 · synthetic weights · cpu",
        "tiny · generate · batch 1 · llm_int8_threshold=6.0 · synthetic weights · cpu"]
    assert all(b.columns == ["fp32", "bnb_int8"] for b in table.blocks)
    _write(tmp_path, recs)
    write_outputs(tmp_path, html=False)
    assert [r["backend.options.llm_int8_threshold"] for r in _csv(tmp_path / "table.csv")] == ["4.0", "6.0"] * 2


# -- failed runs and batch sizes are cells with their reason --------------------------------------
def test_failed_batch_sizes_and_runs_are_cells(tmp_path):
    killed = record("bnb_int8", [gen_point(1, 90.0), Point(4, status="crash", reason="worker killed by SIGSEGV")],
                    order=1, status="crash", reason="worker killed by SIGSEGV; batch sizes [4] not measured",
                    cfg=config("bnb_int8", batch_sizes=(1, 4)))
    timeout = record("ort_int8", [Point(1, status="timeout", reason="no result within timeout_s=60"),
                                  Point(4, status="timeout", reason="not reached: the run ended (timeout) at batch 1")],
                     order=2, status="timeout", reason="no result within timeout_s=60",
                     cfg=config("ort_int8", batch_sizes=(1, 4)))
    invalid = record("awq", [], order=3, status="invalid_config", reason="backend.options.bits: expected int",
                     cfg={})
    ok = record("fp32", [gen_point(1, 100.0), gen_point(4, 300.0)], order=0, cfg=config("fp32", batch_sizes=(1, 4)))
    table = build([ok, killed, timeout, invalid])
    titles = [b.title for b in table.blocks]
    assert titles == ["tiny · generate · batch 1 · synthetic weights · cpu",
                      "tiny · generate · batch 4 · synthetic weights · cpu"]
    for block in table.blocks:
        assert block.columns == ["fp32", "bnb_int8", "ort_int8", "awq"]  # the failed ones are columns too
    md = markdown.document(table)
    b1, b4 = md.split("## Results", 1)[1].split("### ")[1:3]
    assert "| Status | ok | ok (the run then ended: crash) | timeout: no result within timeout_s=60 | " \
           "invalid_config: backend.options.bits: expected int |" in b1
    assert "| Status | ok | crash: worker killed by SIGSEGV | timeout: not reached" in b4
    assert "| Output tokens/s | 300 | crash | timeout | " in b4  # a status word, never a number or a blank
    _write(tmp_path, [ok, killed, timeout, invalid])
    write_outputs(tmp_path, html=False)
    rows = {(r["backend"], r["batch_size"]): r for r in _csv(tmp_path / "table.csv")}
    assert rows[("bnb_int8", "4")]["status"] == "crash" and "SIGSEGV" in rows[("bnb_int8", "4")]["reason"]
    assert rows[("ort_int8", "1")]["status"] == "timeout"
    assert rows[("awq", "")]["status"] == "invalid_config"
    assert rows[("bnb_int8", "4")]["output_tokens_per_s"] == ""  # absent, not 0


# -- spread: n.s. and noisy --------------------------------------------------------------------
def test_not_significant_and_noisy_marks():
    recs = [record("fp32", [gen_point(1, 100.0, spread=0.05)], order=0),
            record("bnb_int8", [gen_point(1, 102.0, spread=0.05)], order=1),  # ranges overlap
            record("ort_int8", [gen_point(1, 150.0, spread=0.05)], order=2),  # clearly faster
            record("bnb_nf4", [gen_point(1, 100.0, spread=0.4)], order=3)]  # CV ~ 25%
    table = build(recs)
    md = markdown.document(table)
    [row] = _md_values(md, "Output tokens/s")
    assert row[0] == "100"
    assert row[1] == "102 (+2.0%, n.s.)"
    assert row[2] == "150 (+50%)"
    assert row[3].endswith("n.s.)")
    cv = recs[3].points[0].metrics["output_tokens_per_s"].cv_pct
    assert cv > 10 and row[4] == f"bnb_nf4 CV {cv:.1f}%"  # the noisy column names the cell and its CV
    assert "| | fp32 | bnb_int8 | ort_int8 | bnb_nf4 | Noisy (CV > 10%) |" in md
    [peak] = _md_values(md, "Peak host RSS, MiB")
    assert "n.s." not in " ".join(peak)  # measured once: no spread, no mark


def test_one_repeat_is_never_called_significant():
    recs = [record("fp32", [Point(1, metrics={"output_tokens_per_s": stat(100.0, n=1)})], order=0),
            record("bnb_int8", [Point(1, metrics={"output_tokens_per_s": stat(200.0, n=1)})], order=1)]
    [row] = _md_values(markdown.document(build(recs)), "Output tokens/s")
    assert row == ["100", "200 (+100%, n.s.)"]


# -- a value is measured and shown, or absent with its reason; never both ------------------------
def test_measured_and_absent_never_both():
    p1 = gen_point(1, 100.0, decode_weight_bandwidth_gb_per_s=11.9)
    p1.absent["decode_weight_bandwidth_of_peak_pct"] = "CPU run: the roofline is against GPU memory bandwidth"
    p2 = gen_point(1, 50.0, decode_weight_bandwidth_gb_per_s=0.00042)
    p2.absent["decode_weight_bandwidth_of_peak_pct"] = "CPU run: the roofline is against GPU memory bandwidth"
    table = build([record("fp32", [p1], order=0), record("bnb_int8", [p2], order=1)])
    for cell in table.cells:
        assert not set(cell.values) & set(cell.absent)
    md = markdown.document(table)
    assert _md_values(md, "Batch-1 decode weight bandwidth, GB/s") == [["11.9", "0.000420 (-100%)"]]
    [note] = [ln for ln in md.splitlines() if ln.startswith("Not measured (CPU run: the roofline")]
    assert "% of GPU peak" in note and "GB/s" not in note
    for line in md.splitlines():
        if line.startswith("Not measured"):
            for label in re.split(r"; ", line.split("): ", 1)[1].rstrip(". ")):
                assert not _md_values(md, label), f"{label} is both measured and listed as not measured"


def test_a_value_rounded_to_zero_is_absent_not_zero():
    p = gen_point(1, 100.0, decode_weight_bandwidth_gb_per_s=0.0)  # roofline rounds to 0.1 GB/s
    q = gen_point(1, 50.0, decode_weight_bandwidth_gb_per_s=0.1)
    md = markdown.document(build([record("fp32", [q], order=0), record("bnb_int8", [p], order=1)]))
    assert _md_values(md, "Batch-1 decode weight bandwidth, GB/s") == [
        ["0.100", "n/a (recorded as 0: smaller than the precision its writer rounded it to)"]]


def test_small_values_keep_significant_digits():
    from runners.report.metrics import format_number

    assert format_number(0.00042) == "0.000420"
    assert format_number(3.2e-7) == "3.20e-07"
    assert format_number(0.465) == "0.465"
    assert format_number(11.9) == "11.9"
    assert format_number(1234.5) == "1,234"  # banker's rounding of .5 aside, never 0
    assert format_number(0.0) == "0"


# -- what the engine ran reaches every output ---------------------------------------------------
CENSUS = "14/15 linear layers quantized (Linear8bitLt x14, Linear x1); 8.5 bits/weight"


def _engine_records():
    fp32 = record("fp32", [gen_point(1, 100.0)], order=0, engine_info={"linear_kernels": "Linear x15"})
    int8 = record("bnb_int8", [gen_point(1, 60.0)], order=1,
                  engine_info={"linear_kernels": "Linear x1, Linear8bitLt x14", "census": {"summary": CENSUS}})
    vllm = record("awq", [gen_point(1, 150.0)], order=2, engine="vllm",
                  engine_info={"quantization_method": "auto_awq", "linear_kernels": ["MacheteLinearKernel"],
                               "quant_methods": {"AutoAWQMarlinLinearMethod": 256}})
    ort = record("ort_int8", [gen_point(1, 80.0)], order=3, engine="onnxruntime",
                 engine_info={"placement": "CPUExecutionProvider: 412/412 nodes"})
    return [fp32, int8, vllm, ort]


def test_engine_info_reaches_md_and_csv(tmp_path):
    recs = _engine_records()
    _write(tmp_path, recs)
    md = write_outputs(tmp_path, html=False).markdown
    assert _md_values(md, "Engine") == [["transformers", "transformers", "vllm", "onnxruntime"]]
    assert _md_values(md, "Linear kernels, as run") == [["Linear x15", "Linear x1, Linear8bitLt x14",
                                                         "MacheteLinearKernel", "—"]]
    assert _md_values(md, "Weight census (quantized layers, bits/weight)")[0][1] == CENSUS
    assert _md_values(md, "Quantization method, as run")[0][2] == "auto_awq"
    assert _md_values(md, "Layers per quantization method")[0][2] == "AutoAWQMarlinLinearMethod: 256"
    assert _md_values(md, "Node placement (execution providers)")[0][3] == "CPUExecutionProvider: 412/412 nodes"
    rows = {r["backend"]: r for r in _csv(tmp_path / "table.csv")}
    assert rows["bnb_int8"]["census"] == CENSUS and rows["bnb_int8"]["linear_kernels"] == "Linear x1, Linear8bitLt x14"
    assert rows["awq"]["linear_kernels"] == "MacheteLinearKernel" and rows["awq"]["engine"] == "vllm"
    assert rows["ort_int8"]["placement"].startswith("CPUExecutionProvider")


def test_energy_in_joules_reaches_the_table(tmp_path):
    recs = [record(b, [gen_point(1, t, device="cuda", energy_j=e, energy_per_output_token_mj=m)], order=i,
                   device="cuda", env=GPU_ENV)
            for i, (b, t, e, m) in enumerate([("fp16", 100.0, 12.5, 30.0), ("bnb_int8", 60.0, 40.0, 95.0)])]
    _write(tmp_path, recs)
    md = write_outputs(tmp_path, html=False).markdown
    assert _md_values(md, "Energy over the timed repeats (whole GPU), J") == [["12.5", "40.0 (+220%)"]]
    assert [r["energy_j"] for r in _csv(tmp_path / "table.csv")] == ["12.5", "40.0"]


# -- baseline, damaged records ---------------------------------------------------------------------
def test_damaged_baseline_is_named_not_replaced(tmp_path, capsys):
    recs = [record(b, [gen_point(1, 100.0 + i)], order=i, cfg=config(b)) for i, b in enumerate(BACKENDS)]
    for rec in recs[1:]:
        write_record(tmp_path / f"backend={rec.backend}" / "record.json", rec)
    bad = tmp_path / "backend=fp32" / "record.json"
    bad.parent.mkdir()
    bad.write_bytes(os.urandom(300))
    (tmp_path / "sweep.json").write_text(json.dumps({"backends": list(BACKENDS)}))
    written = write_outputs(tmp_path, html=False)
    err = capsys.readouterr().err
    assert str(bad) in err and "not a readable record" in err
    md = written.markdown
    assert "Baseline: **fp32**" in md and f"the baseline fp32's record {bad} is damaged" in md
    assert "(+" not in md and "(-" not in md  # no relative change against a silently chosen other baseline
    assert "## Damaged records" in md and str(bad) in md.split("## Damaged records")[1]
    truncated = tmp_path / "backend=bnb_int8" / "record.json"
    truncated.write_text(truncated.read_text()[:200])
    md = write_outputs(tmp_path, html=False).markdown
    assert md.count("record.json`") == 2  # both damaged files listed


def test_baseline_from_sweep_json_then_config():
    # Resumed sweep: the bnb_int8 run was recorded first, but the sweep named fp32 first.
    recs = [record("bnb_int8", [gen_point(1, 50.0)], order=0), record("fp32", [gen_point(1, 100.0)], order=1)]
    assert build(recs).baseline == "bnb_int8"
    from runners.report import table as model

    assert model.resolve_baseline(recs, None, ["fp32", "bnb_int8"], [])[:2] == (
        "fp32", "the sweep's first backend")
    recs[0].config["report"]["baseline"] = "fp32"
    table = build(recs)
    assert table.baseline == "fp32" and table.baseline_source == "report.baseline"
    assert table.blocks[0].columns == ["bnb_int8", "fp32"]
    [row] = _md_values(markdown.document(table), "Output tokens/s")
    assert row == ["50.0 (-50%)", "100"]


def test_unknown_baseline_is_said_in_the_table(tmp_path):
    recs = [record("fp32", [gen_point(1, 100.0)], order=0)]
    md = markdown_for(tmp_path, recs, "fp8")
    assert "the baseline fp8 has no record in this folder (backends: fp32)" in md


def test_relative_pct():
    assert round(relative_pct(5.80, 2.31)) == 151
    assert relative_pct(1.0, 0.0) is None


# -- environment and title ------------------------------------------------------------------------
def test_environment_block_and_title():
    recs = twelve_cell_sweep()
    recs[3].env["load_average"] = {"start": [3.5, 2.0, 1.0], "end": [4.1, 2.5, 1.2]}
    table = build(recs)
    assert table.title == "quantbench: tiny — fp32 vs bnb_int8 vs ort_int8 on CPU (AMD EPYC 7B13)"
    md = markdown.document(table)
    assert md.startswith(f"# {table.title}\n")
    env = md.split("## Environment")[1]
    assert "| CPU | AMD EPYC 7B13 ×2 |" in env and "| Torch threads | 2 |" in env
    assert "| bnb_int8 | new_tokens=8 | ok | 3.5 → 4.1 (busy) | 2 | 2 |" in env
    assert "| fp32 | new_tokens=4 | ok | 0.5 → 1.2 | 2 | 2 |" in env


@pytest.mark.parametrize("folder, version", [("results/h100/claim1_generate", 1), ("results/cpu/ct_smollm2", 2)])
def test_records_written_before_the_typed_boundary_still_load_and_render(folder, version):
    """Committed records of schema 1 and 2 (no declarations, flat quality, no peak_vram_mib) are upgraded
    on read: the report renders them with their quality and the VRAM figure the old report derived."""
    import json

    from runners.record.store import scan
    from runners.report.markdown import document

    root = ROOT / folder
    assert {json.loads(p.read_text()).get("schema_version") for p in root.rglob("record.json")} == {version}
    found = scan(root)
    assert found.damaged == [] and found.records
    assert all(r.schema_version == version and r.declared == [] for r in found.records)
    md = document(build(found.records, root=root))
    assert "damaged" not in md.lower() and "| Status | ok" in md
    if version == 1:  # GPU records: the largest per-process VRAM reading, derived as before
        assert "| Peak VRAM (largest per-process reading), MiB |" in md
    else:  # real weights: the flat quality block reads as metrics and facts
        fp32 = next(r for r in found.records if r.backend == "fp32")
        assert fp32.quality.metrics["kl_mean_nats"] == 0 and fp32.quality.reference == "fp32"
        assert "| KL vs reference, mean (nats) |" in md


def test_a_field_older_records_lack_is_their_default_not_a_parameter():
    old = record("fp32", [gen_point(1, 100.0)], order=0)
    new = record("bnb_int8", [gen_point(1, 50.0)], order=1)
    new.config = {**new.config, "profile": False}  # written after `profile` existed; `old` predates it
    assert [p.path for p in build([old, new]).params] == []
    new.config["profile"] = True
    assert [p.path for p in build([old, new]).params] == ["profile"]
