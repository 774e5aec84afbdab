"""report.html: plots from the table model, a self-contained page, and that page rendered by headless Chromium."""
from __future__ import annotations

import ast
import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runners.record.schema import Point, RunRecord
from runners.report import html as report_html
from runners.report import plots
from runners.report.table import build

from .conftest import FAST, ROOT, bench
from .test_report_fixtures import GPU_ENV, config, record, stat

BLUE = (31, 119, 180)  # matplotlib's C0: the first backend's bars
CENSUS = "14/15 linear layers quantized (Linear8bitLt x14, Linear x1); 8.5 bits/weight"


def _gen_point(bs: int, tok_s: float, vram: float, spread: float = 0.1) -> Point:
    return Point(bs, metrics={"ttft_ms": stat(20.0, spread), "output_tokens_per_s": stat(tok_s, spread),
                              "peak_allocated_mib": vram, "peak_reserved_mib": vram * 1.1,
                              "peak_process_vram_mib": vram * 1.3, "peak_rss_mib": 900.0},
                 absent={"peak_device_vram_mib": "shared GPU: whole-device reading skipped"})


def _rec(backend: str, points: list[Point], quality: dict, model: str = "qwen", workload: str = "generate",
         order: int = 0, **kw) -> RunRecord:
    return record(backend, points, order=order, model=model, workload=workload, weights="pretrained", device="cuda",
                  env=GPU_ENV, quality=quality, cfg=config(backend, workload=workload), **kw)


def hand_made() -> list[RunRecord]:
    traceback = "Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: <boom> & more"
    return [
        _rec("fp16", [_gen_point(1, 100.0, 1000.0), _gen_point(4, 350.0, 1200.0)], {"kl_mean_nats": 0.0}, order=0,
             engine_info={"linear_kernels": "Linear x15"}),
        _rec("bnb_int8", [_gen_point(1, 60.0, 600.0), _gen_point(4, 200.0, 700.0, spread=0.4)],
             {"kl_mean_nats": 0.012}, order=1,
             engine_info={"linear_kernels": "Linear x1, Linear8bitLt x14", "census": {"summary": CENSUS}}),
        _rec("awq", [_gen_point(1, 150.0, 400.0),
                     Point(4, status="oom", reason="CUDA out of memory <script>alert(1)</script>")],
             {"kl_mean_nats": 0.031}, order=2, engine="vllm",
             engine_info={"quantization_method": "auto_awq", "linear_kernels": ["MacheteLinearKernel"]}),
        _rec("gptq", [Point(1, status="crash", reason=traceback), Point(4, status="crash", reason="not reached")],
             {}, status="crash", reason=traceback, order=3),
        _rec("fp16", [Point(8, metrics={"per_example_ms": stat(10.0), "examples_per_s": stat(800.0),
                                        "peak_allocated_mib": 300.0})],
             {"macro_f1_pct": 91.0, "accuracy_pct": 92.0}, model="minilm", workload="classify", order=4),
        _rec("ort_int8", [Point(8, metrics={"per_example_ms": stat(5.0), "examples_per_s": stat(1600.0)},
                                absent={"peak_allocated_mib": "onnxruntime: no torch allocator"})],
             {"macro_f1_pct": 89.5, "accuracy_pct": 90.0}, model="minilm", workload="classify", order=5,
             engine="onnxruntime", engine_info={"placement": "CPUExecutionProvider: 40/40 nodes"}),
    ]


def _block(table, title_part):
    [block] = [b for b in table.blocks if title_part in b.title]
    return block


def _never_front(block):
    return []


# ---------------------------------------------------------------- the plots' data

def test_scatter_speed_is_relative_to_baseline_and_front_is_marked():
    table = build(hand_made())
    gen = plots.scatter_data(_block(table, "qwen · generate · batch 1"), report_html.pareto_of(None))
    xs = {p.column: p.x for p in gen.points}
    assert xs == pytest.approx({"fp16": 1.0, "bnb_int8": 0.6, "awq": 1.5})  # tokens/s: higher is faster
    assert gen.quality.key == "kl_mean_nats" and gen.memory.key == "peak_vram_mib"
    assert {p.column for p in gen.points if p.on_front} == {"fp16", "bnb_int8", "awq"}
    assert "gptq" in gen.notes[0]  # crashed: no speed, named instead of plotted
    cls = plots.scatter_data(_block(table, "minilm"), _never_front)
    assert {p.column: p.x for p in cls.points} == pytest.approx({"fp16": 1.0, "ort_int8": 2.0})
    assert cls.quality.key == "macro_f1_pct"
    assert cls.memory is None  # ort_int8 has no allocator reading: no marker size made up for it
    synthetic = build([_rec("fp32", [_gen_point(1, 10.0, 1.0)], {"absent": "synthetic weights"})])
    assert "synthetic weights" in plots.scatter_data(synthetic.blocks[0], _never_front)


def test_dominated_backend_is_off_the_front():
    recs = hand_made()[:3] + [_rec("slow", [_gen_point(1, 40.0, 2000.0, spread=0.01)], {"kl_mean_nats": 0.5},
                                   order=9)]
    gen = plots.scatter_data(_block(build(recs), "qwen · generate · batch 1"), report_html.pareto_of(None))
    assert {p.column: p.on_front for p in gen.points}["slow"] is False


def test_absent_metrics_draw_no_bar_and_kl_axis_stays_non_negative():
    table = build(hand_made())
    block = _block(table, "qwen · generate · batch 4")
    fig, [ax_speed, ax_mem, ax_q] = plots_figure(3)
    m = plots.speed_metric(block)
    plots.speed_axes(ax_speed, block, m, plots.colors(table))
    assert len(ax_speed.patches) == 2  # fp16 and bnb_int8; awq ran out of memory, gptq crashed
    assert {"oom", "crash"} <= {t.get_text() for t in ax_speed.texts}
    kinds = [k for k in plots.memory_kinds(block) if k.key in ("peak_allocated_mib", "peak_rss_mib")]
    plots.memory_axes(ax_mem, block, kinds, plots.colors(table))
    assert len(ax_mem.patches) == 4  # 2 kinds x 2 backends that measured them
    alone = build([_rec("fp16", [_gen_point(1, 100.0, 1000.0)], {"kl_mean_nats": 0.0})])
    d = plots.scatter_data(alone.blocks[0], _never_front)
    plots.scatter_axes(ax_q, d, plots.colors(alone))
    assert ax_q.get_ylim()[0] == 0  # KL is never negative: the axis does not pretend it could be


def plots_figure(n):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, n).tolist()


# ---------------------------------------------------------------- the page

def test_hand_made_report(tmp_path):
    path = report_html.write(tmp_path, build(hand_made()))
    page = path.read_text()
    for name in ("speed", "memory", "quality", "scaling"):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 5000
    _check_self_contained(page, expect_images=4)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert "RuntimeError: &lt;boom&gt; &amp; more" in page  # the full traceback, escaped
    failures = page.split("<h2>Failed runs</h2>")[1].split("<h2>")[0]
    assert re.search(r"awq</td>.*?<td>4</td><td class=\"bad\">oom</td>", failures)
    assert re.search(r"gptq</td>.*?<td>1</td><td class=\"bad\">crash</td>", failures)
    assert "NVIDIA H100 80GB HBM3" in page and "0123456789ab" in page and "570.1" in page
    assert "<title>quantbench: qwen, minilm — fp16 vs bnb_int8 vs awq vs gptq vs ort_int8 on NVIDIA H100" in page
    # rendered from the model: what markdown cannot carry is there
    assert "<th>awq</th>" in page and CENSUS in page and "MacheteLinearKernel" in page and "auto_awq" in page
    assert "CPUExecutionProvider: 40/40 nodes" in page and "<td>vllm</td>" in page
    assert '<tr class="noisy"><th>Output tokens/s</th>' in page  # bnb_int8 batch 4 varies by ~25%
    assert re.search(r'title="median [^"]+; min–max [^"]+; CV [\d.]+%; n=5"', page)
    assert '<span class="ns">n.s.</span>' in page
    assert "|" not in page.split("<h2>Results vs baseline</h2>")[1].split("<h2>")[0]  # no markdown left over


def test_hand_made_report_in_browser(tmp_path):
    chromium()
    path = report_html.write(tmp_path, build(hand_made()))
    _check_in_browser(path, tmp_path, ["fp16", "bnb_int8", "awq", "ort_int8", "gptq"], images=4)


def test_importing_stays_light():
    code = "import sys, runners.report.html, runners.report.outputs; " \
           "print(sorted(m for m in ('matplotlib', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_report_modules_use_no_private_names_and_no_cycles():
    folder = ROOT / "runners" / "report"
    graph: dict[str, set[str]] = {}
    for path in folder.glob("*.py"):
        mod = f"runners.report.{path.stem}"
        graph[mod] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    assert not alias.name.startswith("_"), f"{mod} imports private {node.module}.{alias.name}"
                    target = f"{node.module}.{alias.name}" if node.module == "runners.report" else node.module
                    if target.startswith("runners.report."):
                        graph[mod].add(target)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.startswith("_") \
                    and not node.attr.startswith("__") and node.value.id in {"plots", "choose", "markdown", "table"}:
                raise AssertionError(f"{mod} uses private {node.value.id}.{node.attr}")

    def visit(mod, stack):
        assert mod not in stack, f"import cycle: {' -> '.join(stack + [mod])}"
        for dep in graph.get(mod, ()):
            visit(dep, stack + [mod])
    for mod in graph:
        visit(mod, [])


# ---------------------------------------------------------------- a real sweep, rendered by Chromium

def test_sweep_report_renders_in_browser(tmp_path):
    chromium()  # before the sweep: no browser, no point running it
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


def test_size_curve_is_each_models_speed_over_its_own_baseline():
    def rec(backend, model, size, tok_s, order):
        r = _rec(backend, [_gen_point(1, tok_s, 100.0), _gen_point(16, tok_s * 8, 100.0)], {}, model=model,
                 order=order)
        r.config["model"]["params_b"] = size
        return r
    recs = [rec("fp16", "small", 0.5, 100.0, 0), rec("bnb_int8", "small", 0.5, 25.0, 1),
            rec("fp16", "big", 14.0, 40.0, 2), rec("bnb_int8", "big", 14.0, 30.0, 3)]
    panels, notes = plots.size_data(build(recs, baseline="fp16"))
    [panel] = panels
    assert panel.baseline == "fp16" and panel.speed.key == "output_tokens_per_s" and not notes
    curves = {(c.column, c.batch_size): c.points for c in panel.curves}
    assert set(curves) == {("bnb_int8", 1), ("bnb_int8", 16)}  # the baseline is the line at 1, not a curve
    assert curves[("bnb_int8", 1)] == [(0.5, pytest.approx(0.25), "small"), (14.0, pytest.approx(0.75), "big")]
    fig_plot = plots.sizes(build(recs, baseline="fp16"), plots.colors(build(recs)))
    assert fig_plot.figure is not None and len(fig_plot.figure.axes[0].lines) >= 2
    # the size axis is labelled at the measured sizes, not at log-scale defaults no model has
    assert [t.get_text() for t in fig_plot.figure.axes[0].get_xticklabels()] == ["0.5B", "14B"]
    # one model size only: no curve drawn, and the plot says why
    one = plots.sizes(build(recs[:2]), plots.colors(build(recs[:2])))
    assert one.figure is None and "two or more model sizes" in one.notes[0]
    # a model without params_b is named, not placed at a made-up size
    for r in recs[2:]:
        r.config["model"]["params_b"] = None
    recs.append(rec("bnb_int8", "mid", 7.0, 10.0, 4))  # no fp16 of this model: no baseline to divide by
    panels, notes = plots.size_data(build(recs, baseline="fp16"))
    assert [p for c in panels[0].curves for p in c.points if p[2] != "small"] == []
    assert "big bnb_int8 batch 1 (no model.params_b)" in notes[0] and "mid bnb_int8 batch 1" in notes[0]
