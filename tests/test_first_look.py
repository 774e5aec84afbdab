"""The first look, part II: a report that answers by default and never misleads a newcomer."""
from __future__ import annotations

import subprocess
import sys

from runners.record.schema import Point
from runners.report import html, markdown
from runners.report.table import build

from .conftest import ROOT, bench
from .test_report_fixtures import CPU_ENV, config, gen_point, record, stat


def _cpu_real(backend: str, order: int, tok_s: float, kl: float, agree: float, engine: str = "transformers",
              rss: float = 900.0, **load):
    p = gen_point(1, tok_s, spread=0.02, peak_rss_mib=rss)
    p.metrics["output_tokens_per_s"] = stat(tok_s, 0.02, n=10)
    quality = {"kl_mean_nats": kl, "top1_agreement_pct": agree, "reference": "fp32",
               "reference_source": "self (cached)" if backend == "fp32" else "cache"}
    return record(backend, [p], order=order, engine=engine, weights="pretrained", env=CPU_ENV,
                  cfg=config(backend, batch_sizes=(1,)), quality=quality, load=load or {"load_s": 1.0})


def _sweep():
    return [_cpu_real("fp32", 0, 10.0, 0.0, 100.0, prepare_s=20.0),
            _cpu_real("bnb_int8", 1, 0.45, 0.02, 92.0, prepare_s=0.019),
            _cpu_real("ort_int8", 2, 24.0, 0.74, 58.0, engine="onnxruntime", rss=1800.0, prepare_s=0.02,
                      export_s=45.0)]


def test_the_report_answers_without_being_asked():
    md = markdown.document(build(_sweep()))
    answer = md.split("## Answer", 1)[1].split("## Results", 1)[0]
    assert "Pareto front (Output tokens/s ↑, Peak host RSS, MiB ↓, KL vs reference, mean (nats) ↓): fp32, ort_int8" in answer
    assert "- ort_int8 is 2.4x faster than fp32, 2x the peak host memory but loses 42% top-1 agreement " \
           "(KL 0.74 nats vs fp32)" in answer
    assert "- bnb_int8 is 22x slower than fp32 but keeps fp32's quality within 0.020 nats (KL)" in answer
    assert md.index("## Answer") < md.index("## Results")
    page = html.page("t", html.overview_html(__import__("runners.report.choose", fromlist=["x"]).overview(
        build(_sweep()))))
    assert "ort_int8 is 2.4x faster than fp32" in page


def test_a_shared_cached_step_is_never_one_backends_cost_or_anothers_saving():
    md = markdown.document(build(_sweep()))
    row = next(ln for ln in md.splitlines() if ln.startswith("| Preparation"))
    assert row == "| Preparation (weights, export, quantization), s | 20.0 | 0.0190 | 0.0200 |"
    assert "One-off preparation (a conversion, an export, a quantization) is paid by the first cell" in md


def test_a_reason_shared_by_a_row_is_said_once():
    recs = _sweep()
    md = markdown.document(build(recs))
    row = next(ln for ln in md.splitlines() if ln.startswith("| ONNX export"))
    assert row == "| ONNX export, s | n/a | n/a | 45.0 |"
    assert "ONNX export, s: n/a — no export in this run (cached, or not ONNX)." in md


def test_the_quality_reference_is_named_in_its_rows():
    md = markdown.document(build(_sweep()))
    row = next(ln for ln in md.splitlines() if ln.startswith("| Quality reference"))
    assert "fp32 (this backend itself: KL 0 and 100% agreement by definition)" in row and "| fp32 |" in row


def test_html_explains_its_marks_without_literal_backticks():
    recs = _sweep()
    recs[1].points[0].metrics["ttft_ms"] = stat(50.0, 0.5)  # noisy
    page = html.page("t", html.results_html(build(recs)))
    assert "`" not in page
    assert "Yellow</span> cells are noisy" in page


def test_a_single_run_names_its_baseline_as_the_only_backend():
    md = markdown.document(build([_cpu_real("fp32", 0, 10.0, 0.0, 100.0)]))
    assert "Baseline: **fp32** (the only backend)" in md


def test_asking_a_question_writes_nothing_and_out_writes_elsewhere(tmp_path):
    folder = ROOT / "results" / "h100" / "claim1_generate"
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    q = subprocess.run([sys.executable, "-m", "runners.report", str(folder), "--require", "peak_vram<=1.5GiB",
                        "--maximize", "output_tokens_per_s"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert q.returncode == 0 and "## Which backend" in q.stdout and "nothing written" in q.stderr, q.stderr
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    out = tmp_path / "answer"
    w = subprocess.run([sys.executable, "-m", "runners.report", str(folder), "--require", "peak_vram<=1.5GiB",
                        "--no-html", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert w.returncode == 0, w.stderr
    assert "## Which backend" in (out / "table.md").read_text() and (out / "table.csv").is_file()
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_the_lock_file_is_gone_when_a_sweep_ends(tmp_path):
    bench("-m", "backend=fp32", "model=tiny", "weights=synthetic", "workload.warmup=0", "workload.repeats=1",
          "workload.prompt_tokens=8", "workload.new_tokens=2", "workload.batch_sizes=[1]", "report.html=false",
          f"hydra.sweep.dir={tmp_path / 's'}", check=True)
    assert not (tmp_path / "s" / ".quantbench.lock").exists() and (tmp_path / "s" / "table.md").is_file()


def test_failed_cells_say_their_status_in_the_answer():
    recs = [*_sweep(), record("bnb_nf4", [Point(1, status="oom", reason="out of memory")], order=3,
                              status="oom", reason="out of memory", cfg=config("bnb_nf4", batch_sizes=(1,)))]
    md = markdown.document(build(recs))
    assert "- bnb_nf4: oom: out of memory" in md.split("## Results")[0]
