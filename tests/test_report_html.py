"""report.html: plots from records, a self-contained page, and that page rendered by headless Chromium."""
from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runners.report import html as report_html
from runners.record.schema import Point, RunRecord

from .conftest import FAST, ROOT, bench

BLUE = (31, 119, 180)  # matplotlib's C0: the first backend's bars


def _st(median: float, spread: float = 0.1, n: int = 3) -> dict:
    lo, hi = median * (1 - spread), median * (1 + spread)
    return {"median": median, "mean": median, "p90": hi, "p99": hi, "min": lo, "max": hi,
            "cv_pct": spread * 50, "n": n, "samples": [lo, median, hi]}


def _gen_point(bs: int, tok_s: float, vram: float) -> Point:
    return Point(bs, metrics={"ttft_ms": _st(20.0), "output_tokens_per_s": _st(tok_s),
                              "peak_allocated_mib": vram, "peak_reserved_mib": vram * 1.1,
                              "peak_process_vram_mib": vram * 1.3, "peak_rss_mib": 900.0},
                 absent={"peak_device_vram_mib": "shared GPU: whole-device reading skipped"})


def _rec(backend: str, points: list[Point], quality: dict, model: str = "qwen", workload: str = "generate",
         order: int = 0, **kw) -> RunRecord:
    env = {"device": "cuda", "gpu": {"gpu_name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "driver": "570.1",
                                     "cuda_runtime": "12.8", "total_vram_mib": 81559},
           "packages": {"torch": "2.8.0", "transformers": "5.5.0"}, "git": {"commit": "0123456789abcdef"},
           "python": "3.11.7"}
    rec = RunRecord(run_id=f"{backend}-{model}", backend=backend, engine="transformers", model=model,
                    workload=workload, weights="pretrained", device="cuda", points=points, quality=quality,
                    env=env, order=order, started_at=f"2025-01-01T00:00:0{order}", **kw)
    rec.summarize_status()
    return rec


def hand_made() -> list[RunRecord]:
    traceback = "Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: <boom> & more"
    return [
        _rec("fp16", [_gen_point(1, 100.0, 1000.0), _gen_point(4, 350.0, 1200.0)], {"kl_mean_nats": 0.0}, order=0),
        _rec("bnb_int8", [_gen_point(1, 60.0, 600.0), _gen_point(4, 200.0, 700.0)], {"kl_mean_nats": 0.012}, order=1),
        _rec("awq", [_gen_point(1, 150.0, 400.0),
                     Point(4, status="oom", reason="CUDA out of memory <script>alert(1)</script>")],
             {"kl_mean_nats": 0.031}, order=2),
        _rec("gptq", [], {}, status="crash", reason=traceback, order=3),
        _rec("fp16", [Point(8, metrics={"per_example_ms": _st(10.0), "examples_per_s": _st(800.0),
                                        "peak_allocated_mib": 300.0})],
             {"macro_f1_pct": 91.0, "accuracy_pct": 92.0}, model="minilm", workload="classify", order=4),
        _rec("ort_int8", [Point(8, metrics={"per_example_ms": _st(5.0), "examples_per_s": _st(1600.0)},
                                absent={"peak_allocated_mib": "onnxruntime: no torch allocator"})],
             {"macro_f1_pct": 89.5, "accuracy_pct": 90.0}, model="minilm", workload="classify", order=5),
    ]


# ---------------------------------------------------------------- unit tests of the data and the plots

def test_scatter_speed_is_relative_to_baseline_and_marker_is_memory():
    recs = hand_made()
    gen = report_html._scatter_data(recs[:4], "fp16")
    xs = {p["backend"]: p["x"] for p in gen["points"]}
    assert xs == pytest.approx({"fp16": 1.0, "bnb_int8": 0.6, "awq": 1.5})  # tokens/s: higher is faster
    assert gen["qkey"] == ("kl_mean_nats", False) and gen["bs"] == 1
    assert gen["mem"] == "peak_process_vram_mib"
    assert "gptq" in gen["notes"][0]  # crashed: no speed, named instead of plotted
    cls = report_html._scatter_data(recs[4:], "fp16")
    assert {p["backend"]: p["x"] for p in cls["points"]} == pytest.approx({"fp16": 1.0, "ort_int8": 2.0})  # ms: lower
    assert cls["qkey"] == ("macro_f1_pct", True)
    assert cls["mem"] is None  # ort_int8 has no allocator reading: no marker size made up for it
    absent = _rec("fp32", [_gen_point(1, 10.0, 1.0)], {"absent": "synthetic weights"})
    assert "synthetic weights" in report_html._scatter_data([absent], "fp32")


def test_absent_metrics_draw_no_bar():
    recs = hand_made()
    fig, [ax_speed, ax_mem] = report_html._figure(2)
    pairs = report_html._groups(recs)[("qwen", "generate", "pretrained", 4)]
    report_html._speed_axes(ax_speed, pairs, "output_tokens_per_s", True, {r.backend: "C0" for r in recs})
    assert len(ax_speed.patches) == 2  # fp16 and bnb_int8; awq ran out of memory at batch 4
    assert "oom" in [t.get_text() for t in ax_speed.texts]
    kinds = ["peak_allocated_mib", "peak_rss_mib"]
    report_html._memory_axes(ax_mem, pairs, kinds, {r.backend: "C0" for r in recs})
    assert len(ax_mem.patches) == 4  # 2 kinds x 2 backends that measured them


def test_markdown_table_becomes_html_table():
    out = report_html.markdown_to_html("Baseline: **fp16** (x).\n\n### m · g, batch 1\n\n| | fp16 | a<b |\n"
                                       "|---|---|---|\n| TTFT, ms | 1.00 | 2.00 (+100%) |\n")
    assert "<b>fp16</b>" in out and "<h3>m · g, batch 1</h3>" in out
    assert "<th>a&lt;b</th>" in out and '<td class="num">2.00 (+100%)</td>' in out
    assert "|" not in out


def test_hand_made_report(tmp_path):
    path = report_html.write(tmp_path, hand_made(), "fp16")
    page = path.read_text()
    for name in ("speed", "memory", "quality", "scaling"):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 5000
    _check_self_contained(page, expect_images=4)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert "RuntimeError: &lt;boom&gt; &amp; more" in page  # the full traceback, escaped
    failures = page.split("<h2>Failed runs</h2>")[1].split("<h2>")[0]
    assert re.search(r"awq</td>.*?<td>4</td><td class=\"bad\">oom</td>", failures)
    assert re.search(r"gptq</td>.*?<td>all</td><td class=\"bad\">crash</td>", failures)
    assert "NVIDIA H100 80GB HBM3" in page and "0123456789ab" in page and "570.1" in page
    assert "<th>awq</th>" in page  # the vs-baseline table
    _check_in_browser(path, tmp_path, ["fp16", "bnb_int8", "awq", "ort_int8", "gptq"], images=4)


def test_importing_stays_light():
    code = "import sys, runners.report.html; print(sorted(m for m in ('matplotlib', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


# ---------------------------------------------------------------- a real sweep, rendered by Chromium

def test_sweep_report_renders_in_browser(tmp_path):
    sweep = tmp_path / "sweep"
    bench("-m", "backend=fp32,bnb_int8", *FAST, "workload.batch_sizes=[1,2]", f"hydra.sweep.dir={sweep}", check=True)
    page = (sweep / "report.html").read_text()
    _check_self_contained(page, expect_images=3)  # speed, memory, scaling; synthetic weights: no quality plot
    assert "no quality numbers (synthetic weights)" in page
    assert "CPU run: no device memory" in page  # VRAM kinds named as not measured, not drawn
    assert not (sweep / "plots" / "quality.png").exists()
    _check_in_browser(sweep / "report.html", tmp_path, ["fp32", "bnb_int8"], images=3)


def _check_self_contained(page: str, expect_images: int) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "the page must not fetch anything"
    assert "<link" not in page
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(srcs) == expect_images
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        msg = "headless Chromium not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def _browser(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", "--disable-default-apps", "--disable-sync",
           "--metrics-recording-only", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           "--virtual-time-budget=5000", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _check_in_browser(page: Path, tmp_path: Path, labels: list[str], images: int) -> None:
    url = page.resolve().as_uri()
    dom = _browser(tmp_path, "--dump-dom", url).stdout
    assert f'data-images="loaded {images}"' in dom, "the browser did not decode every plot"
    for label in labels:
        assert label in dom
    shot = tmp_path / "screenshot.png"
    _browser(tmp_path, f"--screenshot={shot}", "--window-size=1400,3000", url)
    _check_screenshot(shot)


def _check_screenshot(path: Path) -> None:
    import matplotlib.image
    import numpy as np

    rgb = (matplotlib.image.imread(path)[..., :3] * 255).astype(int)
    assert rgb.shape[:2] == (3000, 1400)
    ink = (rgb < 240).any(axis=-1).mean()
    assert ink > 0.03, f"screenshot nearly blank ({ink:.1%} non-white)"
    blue = (np.abs(rgb - np.array(BLUE)).max(axis=-1) < 12).sum()
    assert blue > 2000, "no plot bars in the screenshot"
