"""Layout of the scatter-like plots ("The first look, part II"): no marker is clipped by its axes, no text
hides a marker, no two point labels cover each other, and the saved PNG holds every text (notes included).

Boxes are measured the way the PNG is drawn: each text's window extent after an Agg draw, and each marker's
box from its data position (through the offset transform, i.e. `ax.transData`) plus its drawn size, the
marker's diameter sqrt(s) points and its edge line, converted to pixels with fig.dpi / 72.
"""
from __future__ import annotations

import io
import math

import pytest

from runners.record.schema import Point
from runners.report import html as report_html
from runners.report import plots
from runners.report.table import build

from .test_report_fixtures import GPU_ENV, config, record, stat

TOL = 1.0  # pixels: boxes that merely touch (anti-aliasing, rounding) do not count as covering


def _point(bs: int, tok_s: float, vram: float) -> Point:
    return Point(bs, metrics={"ttft_ms": stat(20.0, 0.01), "output_tokens_per_s": stat(tok_s, 0.01),
                              "peak_allocated_mib": vram, "peak_reserved_mib": vram * 1.1,
                              "peak_process_vram_mib": vram * 1.2, "peak_rss_mib": 900.0},
                 absent={"peak_device_vram_mib": "shared GPU: whole-device reading skipped"})


def _cls_point(bs: int, ex_s: float) -> Point:
    return Point(bs, metrics={"per_example_ms": stat(1000.0 / ex_s, 0.01), "examples_per_s": stat(ex_s, 0.01)})


def _rec(backend, points, quality, order, model="qwen", workload="generate", engine="transformers"):
    return record(backend, points, order=order, model=model, workload=workload, weights="pretrained", device="cuda",
                  env=GPU_ENV, quality=quality, cfg=config(backend, workload=workload), engine=engine)


def crowded_records():
    """A generate block with the reference at KL 0 and four backends, two of them almost on the reference
    and two almost on each other (their labels collide wherever one fixed offset puts them), and a classify
    block whose reference sits at the 100% ceiling with a backend just under it."""
    return [
        _rec("fp16", [_point(1, 100.0, 1000.0)], {"kl_mean_nats": 0.0}, 0),
        _rec("hqq", [_point(1, 99.0, 950.0)], {"kl_mean_nats": 0.0004}, 1),
        _rec("bnb_int8", [_point(1, 60.0, 600.0)], {"kl_mean_nats": 0.012}, 2),
        _rec("awq", [_point(1, 150.0, 400.0)], {"kl_mean_nats": 0.031}, 3),
        _rec("gptq", [_point(1, 151.0, 405.0)], {"kl_mean_nats": 0.0312}, 4),
        _rec("fp16", [_cls_point(8, 800.0)], {"macro_f1_pct": 100.0, "accuracy_pct": 100.0}, 5, model="minilm",
             workload="classify"),
        _rec("ort_int8", [_cls_point(8, 808.0)], {"macro_f1_pct": 99.9, "accuracy_pct": 99.9}, 6, model="minilm",
             workload="classify", engine="onnxruntime"),
        _rec("ort_fp32", [_cls_point(8, 1600.0)], {"macro_f1_pct": 97.0, "accuracy_pct": 97.5}, 7, model="minilm",
             workload="classify", engine="onnxruntime"),
    ]


def quality_figure():
    table = build(crowded_records())
    plot = plots.quality(table, plots.colors(table), report_html.pareto_of(None))
    assert plot.figure is not None
    return plot.figure


def draw(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def marker_boxes(fig, ax):
    """(box, what) for every scatter marker and every line marker drawn in ax, in display pixels."""
    from matplotlib.collections import PathCollection
    from matplotlib.transforms import Bbox

    px = fig.dpi / 72.0
    out = []
    for coll in ax.collections:
        if not isinstance(coll, PathCollection):
            continue
        sizes, widths = coll.get_sizes(), coll.get_linewidths()
        for i, xy in enumerate(coll.get_offsets()):
            cx, cy = coll.get_offset_transform().transform(xy)
            half = (math.sqrt(sizes[i % len(sizes)]) / 2 + widths[i % len(widths)] / 2) * px
            out.append((Bbox.from_extents(cx - half, cy - half, cx + half, cy + half), f"marker at {tuple(xy)}"))
    for line in ax.lines:
        if line.get_marker() in (None, "None", "", " "):
            continue
        half = (line.get_markersize() / 2 + line.get_markeredgewidth() / 2) * px
        for xy in line.get_xydata():
            cx, cy = ax.transData.transform(xy)
            out.append((Bbox.from_extents(cx - half, cy - half, cx + half, cy + half), f"line marker at {tuple(xy)}"))
    return out


def drawn_texts(fig):
    """Every text the canvas draws: point labels, notes, legends, titles, axis labels, the tick labels shown."""
    from matplotlib.text import Text

    shown_ticks, tick_texts = set(), set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in [*axis.majorTicks, *axis.minorTicks]:  # the whole pool, stale ticks included
                tick_texts.update((tick.label1, tick.label2))
            # As Axis draws them: the first len(locs) ticks of the pool, those within the view interval.
            lo, hi = sorted(axis.get_view_interval())
            for locs, pool in ((axis.get_majorticklocs(), axis.get_major_ticks),
                               (axis.get_minorticklocs(), axis.get_minor_ticks)):
                for tick, loc in zip(pool(len(locs)), locs):
                    if lo - 1e-9 * (hi - lo) <= loc <= hi + 1e-9 * (hi - lo):
                        shown_ticks.update((tick.label1, tick.label2))
    out = []
    for t in fig.findobj(Text):
        if not t.get_visible() or not t.get_text().strip() or (t in tick_texts and t not in shown_ticks):
            continue
        ax = t.axes
        if ax is not None and not ax.get_visible():
            continue
        out.append(t)
    return out


def point_labels(ax):
    """The annotations that name a point (placed relative to a data position)."""
    from matplotlib.text import Annotation

    return [t for t in ax.texts if isinstance(t, Annotation) and t.xycoords == "data"]


def covers(a, b, tol: float = TOL) -> bool:
    return a.x0 < b.x1 - tol and b.x0 < a.x1 - tol and a.y0 < b.y1 - tol and b.y0 < a.y1 - tol


def inside(inner, outer, tol: float = 0.0) -> bool:
    return (inner.x0 >= outer.x0 - tol and inner.x1 <= outer.x1 + tol and inner.y0 >= outer.y0 - tol
            and inner.y1 <= outer.y1 + tol)


def check_layout(fig, expect_labels: int):
    renderer = draw(fig)
    texts = [(t, t.get_window_extent(renderer)) for t in drawn_texts(fig)]
    axes = [ax for ax in fig.axes if ax.get_visible()]
    labels_seen = 0
    for ax in axes:
        frame = ax.get_window_extent(renderer)
        markers = marker_boxes(fig, ax)
        assert markers, "no markers found: the test measures nothing"
        for box, what in markers:  # (a) no marker is clipped by its axes
            assert inside(box, frame), f"{what} ({box.bounds}) is cut off by the axes ({frame.bounds})"
        for t, tb in texts:  # (b) no text hides a marker, wherever the text lives in the figure
            for box, what in markers:
                assert not covers(tb, box), f"text {t.get_text()!r} ({tb.bounds}) covers {what} ({box.bounds})"
        labels = [(t, t.get_window_extent(renderer)) for t in point_labels(ax)]
        labels_seen += len(labels)
        for i, (a, ab) in enumerate(labels):  # (c) no two point labels cover each other
            for b, bb in labels[i + 1:]:
                assert not covers(ab, bb), f"labels {a.get_text()!r} and {b.get_text()!r} overlap"
    assert labels_seen == expect_labels
    return renderer


def test_quality_plot_keeps_markers_inside_and_text_off_them():
    fig = quality_figure()
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2
    check_layout(fig, expect_labels=8)


def test_quality_reference_sits_inside_the_axes_and_the_axis_stays_non_negative():
    fig = quality_figure()
    renderer = draw(fig)
    kl_ax = next(ax for ax in fig.axes if "KL" in ax.get_ylabel())
    frame = kl_ax.get_window_extent(renderer)
    ref = min((box for box, _ in marker_boxes(fig, kl_ax)), key=lambda b: b.y0)  # the lowest: KL 0
    assert ref.y0 > frame.y0 + 1  # whole, above the bottom edge (it was half cut off at y = 0)
    assert all(t >= 0 for t in kl_ax.get_yticks() if kl_ax.get_ylim()[0] <= t <= kl_ax.get_ylim()[1])
    pct_ax = next(ax for ax in fig.axes if "%" in ax.get_ylabel())
    assert all(t <= 100 for t in pct_ax.get_yticks() if pct_ax.get_ylim()[0] <= t <= pct_ax.get_ylim()[1])


def test_saved_png_holds_every_text_and_the_note_lies_outside_the_axes():
    import matplotlib.image

    fig = quality_figure()
    renderer = draw(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)  # as report.html saves it: the whole canvas, no bbox_inches
    png = buf.getvalue()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    canvas = fig.bbox
    assert (width, height) == (round(canvas.width), round(canvas.height))
    tight = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)
    assert inside(tight, canvas, tol=TOL), f"drawn content {tight.bounds} runs off the saved canvas {canvas.bounds}"
    for t in drawn_texts(fig):
        assert inside(t.get_window_extent(renderer), canvas, tol=TOL), f"{t.get_text()!r} is cut off the PNG"
    notes = [t for t in drawn_texts(fig) if "Pareto front" in t.get_text()]
    assert len(notes) == 2  # one per panel
    rgb = matplotlib.image.imread(io.BytesIO(png))[..., :3]
    for note in notes:
        box = note.get_window_extent(renderer)
        assert not covers(box, note.axes.get_window_extent(renderer), tol=0), "the note is inside the axes"
        top, bottom = height - int(box.y1), height - int(box.y0)  # PNG rows run top to bottom
        crop = rgb[max(top, 0):bottom, max(int(box.x0), 0):int(box.x1)]
        assert crop.size and (crop < 0.8).any(), "the note's region of the PNG is blank"


def test_size_plot_keeps_markers_inside_and_text_off_them():
    def rec(backend, model, size, tok_s, order):
        r = _rec(backend, [_point(1, tok_s, 100.0), _point(16, tok_s * 8, 100.0)], {}, order, model=model)
        r.config["model"]["params_b"] = size
        return r
    # batch 1 and batch 16 give the same ratio: two markers and two labels on the very same spot
    recs = [rec("fp16", "small", 0.5, 100.0, 0), rec("bnb_int8", "small", 0.5, 25.0, 1),
            rec("fp16", "big", 14.0, 40.0, 2), rec("bnb_int8", "big", 14.0, 30.0, 3)]
    table = build(recs, baseline="fp16")
    plot = plots.sizes(table, plots.colors(table))
    assert plot.figure is not None
    renderer = check_layout(plot.figure, expect_labels=4)
    [ax] = [ax for ax in plot.figure.axes if ax.get_visible()]
    legend = ax.get_legend()
    assert legend is not None and not covers(legend.get_window_extent(renderer), ax.get_window_extent(renderer))


@pytest.mark.parametrize("n_backends", [1, 2])
def test_quality_plot_of_few_points_is_laid_out_too(n_backends):
    recs = crowded_records()[:n_backends]
    table = build(recs)
    plot = plots.quality(table, plots.colors(table), report_html.pareto_of(None))
    check_layout(plot.figure, expect_labels=n_backends)
