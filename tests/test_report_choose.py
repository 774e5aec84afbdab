"""Which backend under my constraints: parsing, verdicts, ranking, ties, Pareto front, outputs, CLI."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from runners.record.schema import Point
from runners.record.store import write_record
from runners.report import choose
from runners.report.outputs import write_outputs
from runners.report.table import build

from .conftest import ROOT
from .test_report_fixtures import GPU_ENV, config, gen_point, record, stat

REQUIRE = "peak_vram<=24GiB,kl_mean<=0.05,ttft_p90<=500ms"


def _gpu(backend: str, order: int, tok_s: float, vram: float, kl: float | None, spread: float = 0.05,
         ttft: float | None = None) -> object:
    p = gen_point(1, tok_s, spread=spread, device="cuda", peak_process_vram_mib=vram)
    if ttft is not None:
        p.metrics["ttft_ms"] = stat(ttft)
    quality = {"kl_mean_nats": kl} if kl is not None else {"absent": "synthetic weights"}
    return record(backend, [p], order=order, device="cuda", env=GPU_ENV, quality=quality, cfg=config(backend))


def gpu_sweep() -> list:
    return [
        _gpu("fp16", 0, 100.0, 16000.0, 0.0),
        _gpu("bnb_int8", 1, 60.0, 9000.0, 0.012),
        _gpu("awq", 2, 150.0, 6000.0, 0.031),
        _gpu("gptq", 3, 148.0, 6100.0, 0.020),  # as fast as awq within the spread
        _gpu("bnb_fp4", 4, 55.0, 9500.0, 0.05),  # dominated by bnb_int8 (speed equal within spread)
        _gpu("fp32", 5, 90.0, 30000.0, 0.0),  # fails peak_vram
        _gpu("slow_ttft", 6, 80.0, 8000.0, 0.01, ttft=600.0),  # fails ttft_p90
        _gpu("synthetic", 7, 120.0, 7000.0, None),  # quality not measured
        record("bnb_nf4", [Point(1, status="oom", reason="CUDA out of memory")], order=8, device="cuda",
               env=GPU_ENV, status="oom", reason="CUDA out of memory"),
    ]


def _decide(recs, require=REQUIRE, maximize="output_tokens_per_s", minimize=None):
    table = build(recs)
    decision = choose.decide(table, choose.parse_constraints(require), choose.parse_objective(maximize, minimize))
    [d] = decision.blocks
    return decision, d, {v.column: v for v in d.verdicts}


# -- parsing -------------------------------------------------------------------------------------
def test_units_convert_to_the_metric_unit():
    [vram, kl, ttft] = choose.parse_constraints(REQUIRE)
    assert (vram.target.metric.key, vram.op, vram.threshold) == ("peak_vram_mib", "<=", 24576.0)
    assert (kl.target.metric.key, kl.threshold) == ("kl_mean_nats", 0.05)
    assert (ttft.target.metric.key, ttft.target.stat, ttft.threshold) == ("ttft_ms", "p90", 500.0)
    [a, b, c, d, e] = choose.parse_constraints("ttft_p90_ms < 0.5s, peak_rss>=2GB, top1_agreement>=90%, "
                                               "output_tokens_p10_per_s>50tok/s, energy_j<=1.5kJ")
    assert a.threshold == pytest.approx(500.0) and a.target.stat == "p90"
    assert b.threshold == pytest.approx(2e9 / 2**20)  # GB is 10^9 bytes, the metric is MiB
    assert c.target.metric.key == "top1_agreement_pct" and c.threshold == 90.0
    assert d.target.stat == "p10" and d.threshold == 50.0
    assert e.threshold == 1500.0


@pytest.mark.parametrize("text, says", [
    ("peak_ram<=24GiB", "unknown metric 'peak_ram'"),
    ("peak_vram<=24ms", "ms is a time unit but peak_vram is measured in MiB"),
    ("peak_vram<=24furlongs", "unknown unit 'furlongs'"),
    ("peak_vram=<>24", "is not METRIC OP NUMBER[UNIT]"),
    ("weights_p90<=10GiB", "weights_mib is measured once, not over repeats"),
])
def test_bad_constraint_is_one_line_naming_metrics_and_units(text, says):
    with pytest.raises(choose.ConstraintError) as err:
        choose.parse_constraints(text)
    msg = str(err.value)
    assert says in msg and "\n" not in msg
    if "unknown" in says or "not METRIC" in says:
        assert "valid metrics: ttft, tpot" in msg and "kl_mean" in msg and "GiB" in msg and "nats" in msg


def test_objective_direction_is_checked():
    with pytest.raises(choose.ConstraintError, match="lower is better for TTFT, ms; use --minimize ttft_p90"):
        choose.parse_objective("ttft_p90", None)
    assert choose.parse_objective(None, "ttft_p90").maximize is False


# -- verdicts, ranking, ties, Pareto -------------------------------------------------------------
def test_verdicts_name_what_failed_and_what_was_not_measured():
    _, d, v = _decide(gpu_sweep())
    assert v["fp32"].kind == "rejected" and v["fp32"].failed == ["peak_vram = 30,000 MiB, needs <= 24,576 MiB"]
    p90 = np.percentile(v["slow_ttft"].cell.record.points[0].metrics["ttft_ms"].samples, 90)
    assert v["slow_ttft"].kind == "rejected"
    assert v["slow_ttft"].failed == [f"ttft_p90 = {p90:.0f} ms, needs <= 500 ms"]
    assert v["synthetic"].kind == "unknown"  # never a silent pass or fail
    assert v["synthetic"].unmeasured == ["kl_mean (synthetic weights)"]
    assert v["synthetic"].checks["kl_mean<=0.05"] == "n/a (synthetic weights)"
    assert v["bnb_nf4"].kind == "failed" and "oom: CUDA out of memory" in v["bnb_nf4"].why
    assert {c for c, x in v.items() if x.kind == "meets"} == {"fp16", "bnb_int8", "awq", "gptq", "bnb_fp4"}


def test_ranking_and_tie_within_spread():
    _, d, _ = _decide(gpu_sweep())
    assert [x.column for x in d.ranked] == ["awq", "gptq", "fp16", "bnb_int8", "bnb_fp4"]
    assert d.tie == ["awq", "gptq"]
    assert d.answer.startswith("tie between awq, gptq: their Output tokens/s differ by no more than the repeats "
                               "can tell")
    # Without gptq, awq wins outright: its range is clear of fp16's.
    recs = [r for r in gpu_sweep() if r.backend != "gptq"]
    _, d, _ = _decide(recs)
    assert d.tie == [] and d.answer.startswith("awq: best Output tokens/s (150) of the 4 backends")


def test_minimize_ranks_lowest_first():
    _, d, _ = _decide(gpu_sweep(), require="peak_vram<=24GiB", maximize=None, minimize="peak_vram")
    assert [x.column for x in d.ranked][:3] == ["awq", "gptq", "synthetic"]


def test_pareto_front_is_spread_aware():
    _, d, _ = _decide(gpu_sweep())
    assert [t.metric.key for t in d.pareto_axes] == ["output_tokens_per_s", "peak_vram_mib", "kl_mean_nats"]
    assert set(d.pareto) == {"fp16", "bnb_int8", "awq", "gptq"}
    assert "bnb_fp4" not in d.pareto  # as fast as bnb_int8 within the spread, more memory, worse KL
    text = choose.markdown(choose.decide(build(gpu_sweep()), choose.parse_constraints(REQUIRE), None))
    assert "Pareto front (Output tokens/s ↑, Peak VRAM (largest per-process reading), MiB ↓, " \
           "KL vs reference, mean (nats) ↓): fp16, bnb_int8, awq, gptq" in text


def test_no_quality_axis_is_named():
    recs = [_gpu("fp16", 0, 100.0, 16000.0, None), _gpu("awq", 1, 150.0, 6000.0, None)]
    _, d, _ = _decide(recs, require="peak_vram<=24GiB")
    assert [t.metric.key for t in d.pareto_axes] == ["output_tokens_per_s", "peak_vram_mib"]
    assert "No quality axis: quality not measured (synthetic weights)" in d.notes
    assert d.pareto == ["awq"]


def test_memory_axis_only_when_every_candidate_measured_it():
    ort = _gpu("ort_int8", 1, 200.0, 1.0, 0.4)
    ort.points[0].metrics.pop("peak_process_vram_mib")
    ort.points[0].metrics.pop("peak_vram_mib")  # the largest per-process reading: there was none
    ort.points[0].absent["peak_process_vram_mib"] = "NVML lists no process of this tree (PID namespace?)"
    ort.points[0].absent["peak_vram_mib"] = "NVML lists no process of this tree (PID namespace?)"
    _, d, _ = _decide([_gpu("fp16", 0, 100.0, 16000.0, 0.0), ort], require="kl_mean<=1")
    assert [t.metric.key for t in d.pareto_axes] == ["output_tokens_per_s", "kl_mean_nats"]
    assert d.pareto == ["fp16", "ort_int8"]  # not left off for lacking a number the other has
    assert any(n.startswith("No memory axis: Peak VRAM (largest per-process reading), MiB is not measured for "
                            "ort_int8 (NVML lists no process") for n in d.notes), d.notes


def test_constraint_that_does_not_apply_is_noted():
    recs = [record("fp32", [Point(8, metrics={"examples_per_s": {"median": 800.0, "min": 780.0, "max": 820.0,
                                                                 "n": 5, "cv_pct": 1.0}})],
                   order=0, workload="classify", cfg=config("fp32", workload="classify"))]
    _, d, v = _decide(recs, require="ttft_p90<=500ms", maximize=None)
    assert v["fp32"].kind == "meets"
    assert any("does not apply to classify" in n for n in d.notes)
    assert d.objective.target.metric.key == "examples_per_s"


def test_marginal_threshold_inside_the_repeats():
    recs = [_gpu("fp16", 0, 100.0, 16000.0, 0.0)]
    _, _, v = _decide(recs, require="output_tokens>=99")
    assert v["fp16"].marginal == ["output_tokens>=99"] and "marginal" in v["fp16"].checks["output_tokens>=99"]


# -- outputs: top of table.md and report.html; the CLI -------------------------------------------
def test_answer_opens_table_md_and_report_html_from_config(tmp_path):
    recs = gpu_sweep()
    for rec in recs:
        rec.config["report"].update(require=REQUIRE, maximize="output_tokens_per_s")
        write_record(tmp_path / rec.backend / "record.json", rec)
    written = write_outputs(tmp_path)
    md = (tmp_path / "table.md").read_text()
    assert md.index("## Which backend") < md.index("## Results")
    assert "**Answer:** tie between awq, gptq" in md
    assert "| fp32 | rejected: failed peak_vram = 30,000 MiB, needs <= 24,576 MiB |" in md
    page = (tmp_path / "report.html").read_text()
    assert page.index("<h2>Which backend</h2>") < page.index("<h2>Results vs baseline</h2>")
    assert "tie between awq, gptq" in page and "Pareto front" in page
    assert written.decision is not None


def test_cli_prints_the_answer_and_rejects_bad_strings(tmp_path):
    for rec in gpu_sweep():
        write_record(tmp_path / rec.backend / "record.json", rec)
    cmd = [sys.executable, "-m", "runners.report", str(tmp_path), "--no-html"]
    ok = subprocess.run(cmd + ["--require", REQUIRE, "--maximize", "output_tokens_per_s"], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "**Answer:** tie between awq, gptq" in ok.stdout and "unknown: not measured: kl_mean" in ok.stdout
    bad = subprocess.run(cmd + ["--require", "peak_ram<=24GiB"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --require: unknown metric 'peak_ram'; valid metrics:")


def test_cli_columns_set_the_column_order_and_unknown_names_are_refused(tmp_path, capsys):
    from runners.report.cli import main

    for rec in gpu_sweep():
        write_record(tmp_path / rec.backend / "record.json", rec)
    assert main([str(tmp_path), "--no-html", "--columns", "gptq, awq", "--baseline", "fp16"]) == 0
    header = next(line for line in (tmp_path / "table.md").read_text().splitlines() if line.startswith("| | "))
    cols = [c.strip() for c in header.strip("|").split("|")][1:]
    # the named columns lead; the rest keep run order
    assert cols[:4] == ["gptq", "awq", "fp16", "bnb_int8"], cols
    assert main([str(tmp_path), "--no-html", "--columns", "awq,nosuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --columns nosuch not in ") and "backends: fp16, bnb_int8" in err[-1]
