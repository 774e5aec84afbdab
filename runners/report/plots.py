"""PNG plots of the table model: speed with its spread, memory by kind, speed vs quality (Pareto front
marked), batch-size scaling, and speed relative to the baseline against model size; for serve runs,
latency and goodput against offered rate and throughput per GPU against speed per user (Pareto front
marked). A metric a cell
did not measure is never drawn as a number: its bar is replaced by the reason. matplotlib is imported
inside the functions (importing this module stays cheap).

Layout of the plots with markers (speed vs quality, model sizes): no marker is clipped and no text hides a
marker. Once the figure's layout is known (`settle`), each axis is padded by the largest marker's drawn radius
in pixels, the layout is frozen, and every point label takes the first of a few offsets around its marker
whose box clears every marker, every label placed before it and the axes' edges. Notes and legends live
outside the axes, where constrained layout makes room for them in the saved canvas.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from typing import Any, Callable

from runners.measure.breakdown import CLASS_KEYS as BREAKDOWN_CLASSES
from runners.measure.stats import percentile
from runners.report.metrics import Metric, format_number, format_value, in_group
from runners.report.table import Block, Cell, Table, param_text

QUALITY_AXIS = ("kl_mean_nats", "macro_f1_pct", "accuracy_pct", "top1_agreement_pct", "perplexity")
# Speed per block: the first of these it measured (throughput first, so taller is better).
SPEED_PREFERENCE = ("output_tokens_per_s", "examples_per_s", "per_example_ms", "ttft_ms")
MARKER_MEMORY = ("peak_vram_mib", "peak_process_vram_mib", "peak_reserved_mib", "peak_allocated_mib", "peak_rss_mib")
Figure = Any


@dataclass
class Plot:
    name: str  # file stem under plots/
    title: str
    figure: Figure | None
    notes: list[str]


def colors(table: Table) -> dict[str, str]:
    return {b: f"C{i % 10}" for i, b in enumerate(table.backends)}


def _figure(n: int, width: float = 5.2, height: float = 3.8, across: int = 3):
    """A figure of n panels, at most `across` across; matplotlib's Agg canvas, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    cols = min(n, across)
    rows = math.ceil(n / cols)
    fig = MplFigure(figsize=(width * cols, height * rows + 0.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _short(text: str, n: int = 28) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _na(ax, x: float, text: str) -> None:
    """Mark a missing bar with its reason (a word, never a number drawn as a bar)."""
    ax.text(x, 0, _short(text), rotation=90, ha="center", va="bottom", fontsize=8, color="0.4",
            transform=ax.get_xaxis_transform())


def _panel_title(block: Block) -> str:
    return "\n".join(textwrap.wrap(block.title, 60))


def _why(cell: Cell, key: str) -> str:
    return cell.status if not cell.ok else cell.absent.get(key, "not measured")


def _arrow(m: Metric) -> str:
    return {"higher": " (higher is better)", "lower": " (lower is better)"}.get(m.better, "")


def speed_metric(block: Block) -> Metric | None:
    measured = {m.key for m in block.measured()}
    return next((block.catalogue[k] for k in SPEED_PREFERENCE if k in measured), None)


# -- layout: markers inside the axes, text off the markers ------------------------------------------
GAP_PT = 3.0  # between a marker's edge and its label, and between a marker and the axes' edge
MARKER_EDGE_PT = 1.0  # every marker's edge line
RING_EDGE_PT = 1.6  # the ring around a point on the Pareto front
LINE_MARKER_PT = 6.0  # a line plot's marker diameter
LABEL_RINGS_PT = (0.0, 9.0, 20.0)  # further out, in turn, when every offset of the nearer ring collides


@dataclass
class Mark:
    """A drawn marker: its data position, its radius in points (edge line included) and its label."""
    x: float
    y: float
    radius_pt: float
    label: Any = None  # a matplotlib Annotation placed by `place_labels`, or None


@dataclass
class Fit:
    """What `settle` needs to lay out one axes: its markers, the values each axis must also show (a
    reference line), the bounds the quantity cannot cross (KL >= 0, a percentage <= 100) and the data
    margin kept around the markers (room for their labels)."""
    ax: Any
    marks: list[Mark]
    x_also: tuple[float, ...] = ()
    y_also: tuple[float, ...] = ()
    y_floor: float | None = None
    y_ceil: float | None = None
    margin: float = 0.08


def marker_radius_pt(size_pt2: float, linewidth_pt: float) -> float:
    """A scatter marker of area s (points²) is sqrt(s) points across, plus half its edge line outside."""
    return math.sqrt(size_pt2) / 2 + linewidth_pt / 2


def _axis_range(axis, values: list[float], also: tuple[float, ...], margin: float, floor: float | None,
                ceil: float | None, pad_px: float | None, length_px: float | None) -> tuple[float, float]:
    """View limits for one axis, worked out in its scale's space (log for a log axis): the values and
    `also`, widened by `margin` of their span, kept within floor/ceil where the values are, then by
    pad_px pixels more on each side for an axis length_px long."""
    import numpy as np

    tr = axis.get_transform()
    got = tr.transform(np.asarray(values + list(also), dtype=float))
    vals = tr.transform(np.asarray(values, dtype=float))
    lo, hi = float(np.min(got)), float(np.max(got))
    span = (hi - lo) or (abs(hi) * 0.1) or 1.0
    lo, hi = lo - margin * span, hi + margin * span
    if floor is not None:
        f = float(tr.transform(np.asarray([floor], dtype=float))[0])
        if float(np.min(vals)) >= f:
            lo = max(lo, f)
    if ceil is not None:
        c = float(tr.transform(np.asarray([ceil], dtype=float))[0])
        if float(np.max(vals)) <= c:
            hi = min(hi, c)
    if pad_px is not None and length_px:
        per_px = (hi - lo) / max(length_px - 2 * pad_px, 0.25 * length_px)
        lo, hi = lo - pad_px * per_px, hi + pad_px * per_px
    back = tr.inverted().transform(np.asarray([lo, hi]))
    return float(back[0]), float(back[1])


def fit_limits(fit: Fit, pixels: bool = True) -> None:
    """Set the axes' limits so every marker, at its drawn size, lies inside the axes with GAP_PT to spare
    (pixels=False: the data range alone, before the layout is known)."""
    ax, marks = fit.ax, fit.marks
    if not marks:
        return
    pad = length_x = length_y = None
    if pixels:
        frame = ax.get_window_extent()
        pad = (max(m.radius_pt for m in marks) + GAP_PT) * ax.figure.dpi / 72.0
        length_x, length_y = frame.width, frame.height
    ax.set_xlim(*_axis_range(ax.xaxis, [m.x for m in marks], fit.x_also, fit.margin, None, None, pad, length_x))
    ax.set_ylim(*_axis_range(ax.yaxis, [m.y for m in marks], fit.y_also, fit.margin, fit.y_floor, fit.y_ceil, pad,
                             length_y))


def bounded_ticks(axis, floor: float | None, ceil: float | None) -> None:
    """Default ticks, less any beyond floor/ceil: padding the axis past KL 0 (or 100%) to show a whole
    marker does not label values the quantity cannot take."""
    from matplotlib.ticker import AutoLocator

    class Bounded(AutoLocator):
        def tick_values(self, vmin, vmax):
            ticks = super().tick_values(vmin, vmax)
            eps = 1e-9 * (abs(vmax - vmin) or 1.0)
            return [t for t in ticks if (floor is None or t >= floor - eps) and (ceil is None or t <= ceil + eps)]

    axis.set_major_locator(Bounded())


def _label_offsets(radius_pt: float) -> list[tuple[float, float, str, str]]:
    """(dx, dy, ha, va) in points from the marker's centre: right, upper right, lower right, above, below,
    left, upper left, lower left, on rings clear of the marker's square box."""
    out = []
    for ring in LABEL_RINGS_PT:
        d = radius_pt + GAP_PT + ring
        out += [(d, 0, "left", "center"), (d, d, "left", "bottom"), (d, -d, "left", "top"),
                (0, d, "center", "bottom"), (0, -d, "center", "top"), (-d, 0, "right", "center"),
                (-d, d, "right", "bottom"), (-d, -d, "right", "top")]
    return out


def _overlap(a, b, pad: float = 0.0) -> float:
    w = min(a.x1, b.x1 + pad) - max(a.x0, b.x0 - pad)
    h = min(a.y1, b.y1 + pad) - max(a.y0, b.y0 - pad)
    return w * h if w > 0 and h > 0 else 0.0


def _outside(box, frame, pad: float) -> float:
    """How much of box lies outside frame shrunk by pad (an area, 0 when inside)."""
    w, h = box.width, box.height
    iw = max(0.0, min(box.x1, frame.x1 - pad) - max(box.x0, frame.x0 + pad))
    ih = max(0.0, min(box.y1, frame.y1 - pad) - max(box.y0, frame.y0 + pad))
    return w * h - iw * ih


def place_labels(fit: Fit, renderer) -> None:
    """Give each label, in the markers' order, the first offset whose box clears every marker's box, the
    labels placed before it and the axes' edges; where none does, the offset that covers least."""
    from matplotlib.transforms import Bbox

    ax = fit.ax
    px = ax.figure.dpi / 72.0
    frame = ax.get_window_extent(renderer)
    boxes = []
    for m in fit.marks:
        cx, cy = ax.transData.transform((m.x, m.y))
        r = m.radius_pt * px
        boxes.append(Bbox.from_extents(cx - r, cy - r, cx + r, cy + r))
    labels = [m.label for m in fit.marks if m.label is not None]
    fixed = [t.get_window_extent(renderer) for t in ax.texts if t.get_visible() and t not in labels]
    placed: list = []
    pad = 2.0  # pixels kept clear around each box: what a reader sees as touching
    for m in fit.marks:
        if m.label is None:
            continue
        best = None
        for dx, dy, ha, va in _label_offsets(m.radius_pt):
            m.label.set_horizontalalignment(ha)
            m.label.set_verticalalignment(va)
            m.label.xyann = (dx, dy)
            box = m.label.get_window_extent(renderer)
            cost = (sum(_overlap(box, b, pad) for b in boxes + fixed + placed) + _outside(box, frame, pad))
            if best is None or cost < best[0]:
                best = (cost, dx, dy, ha, va)
            if cost == 0:
                break
        _, dx, dy, ha, va = best
        m.label.set_horizontalalignment(ha)
        m.label.set_verticalalignment(va)
        m.label.xyann = (dx, dy)
        placed.append(m.label.get_window_extent(renderer))


def settle(fig, fits: list[Fit], rounds: int = 3) -> None:
    """Lay out a figure whose axes carry markers: pad each axes for its markers at the size the layout
    gives it (a few rounds: new limits may change the tick labels, and so the layout), freeze the layout so
    the saved PNG has exactly these pixels, then place the point labels."""
    if not fits:
        return
    for f in fits:
        for m in f.marks:
            if m.label is not None:
                m.label.set_in_layout(False)  # placed inside the axes below: no room to make for it
    for _ in range(rounds):
        fig.draw_without_rendering()
        before = [(f.ax.get_xlim(), f.ax.get_ylim()) for f in fits]
        for f in fits:
            fit_limits(f)
        after = [(f.ax.get_xlim(), f.ax.get_ylim()) for f in fits]
        if all(abs(a - b) <= 1e-3 * abs(lim[1] - lim[0]) for old, new in zip(before, after)
               for lim, was in zip(new, old) for a, b in zip(lim, was)):
            break  # the layout no longer moves the axes: under a thousandth of each span
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    for f in fits:
        fit_limits(f)  # exact for the frozen axes' size
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    for f in fits:
        place_labels(f, renderer)


def _note_below(ax, text: str, fontsize: float = 7):
    """A note under the axes' x label: outside the axes, so it covers no marker, and inside the layout,
    so constrained layout makes room for it in the saved canvas."""
    return ax.annotate(text, xy=(0.5, 0.0), xycoords=ax.xaxis.label, xytext=(0, -4), textcoords="offset points",
                       ha="center", va="top", fontsize=fontsize, color="0.35")


def _legend_outside(ax, fontsize: float = 8):
    """The legend to the right of the axes, where it covers no marker (constrained layout makes room)."""
    return ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


# -- speed ----------------------------------------------------------------------------------------
def speed_axes(ax, block: Block, m: Metric, color: dict[str, str]) -> None:
    for i, (col, c) in enumerate(zip(block.columns, block.cells)):
        got = c.values.get(m.key)
        if got is None:
            _na(ax, i, _why(c, m.key))
            continue
        sp = got.spread
        lo, hi = (sp.min, sp.max) if sp else (got.value, got.value)
        ax.bar(i, got.value, color=color[c.backend], yerr=[[got.value - lo], [hi - got.value]], capsize=4,
               ecolor="0.2")
        ax.annotate(format_value(m, got.value), (i, max(got.value, hi)), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(block.cells)), block.columns, rotation=20, ha="right")
    ax.set_xlim(-0.6, len(block.cells) - 0.4)
    ax.set_ylabel(m.label + _arrow(m), fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def speed(table: Table, color: dict[str, str]) -> Plot:
    shown = [(b, speed_metric(b)) for b in table.blocks if not b.serves]  # serve blocks: the serving plots
    notes = [f"{b.title}: no speed measured." for b, m in shown if m is None]
    shown = [(b, m) for b, m in shown if m is not None]
    if not shown:
        return Plot("speed", "Speed", None, notes or ["No run measured speed."])
    fig, axes = _figure(len(shown))
    for ax, (b, m) in zip(axes, shown):
        speed_axes(ax, b, m, color)
        ax.set_title(_panel_title(b), fontsize=9)
    fig.suptitle("Bars: median over repeats; whiskers: min to max of the repeats", fontsize=10)
    return Plot("speed", "Speed", fig, notes)


# -- memory ---------------------------------------------------------------------------------------
def memory_kinds(block: Block) -> list[Metric]:
    # peak_vram_mib is the largest of the per-process readings beside it: plotting it would show one twice.
    return [m for m in in_group(block.catalogue, "memory")
            if m.key != "peak_vram_mib" and any(m.key in c.values for c in block.cells)]


def memory_axes(ax, block: Block, kinds: list[Metric], color: dict[str, str]) -> None:
    width = min(0.8 / max(len(block.cells), 1), 0.3)
    for j, (col, c) in enumerate(zip(block.columns, block.cells)):
        xs = [i + (j - (len(block.cells) - 1) / 2) * width for i in range(len(kinds))]
        have = [(x, c.values[k.key].value) for x, k in zip(xs, kinds) if k.key in c.values]
        if have:
            bars = ax.bar([x for x, _ in have], [v for _, v in have], width, color=color[c.backend], label=col)
            ax.bar_label(bars, [format_value(kinds[0], v) for _, v in have], fontsize=7)
        for x, k in zip(xs, kinds):
            if k.key not in c.values:
                _na(ax, x, _why(c, k.key))
    ax.set_xticks(range(len(kinds)), ["\n".join(textwrap.wrap(k.label.rsplit(", ", 1)[0], 18)) for k in kinds],
                  fontsize=8)
    ax.set_xlim(-0.5, len(kinds) - 0.5)
    ax.set_ylabel("MiB", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def memory(table: Table, color: dict[str, str]) -> Plot:
    # A serve run's memory is one reading per offered rate: its tables hold it, a panel per rate would not help.
    shown = [(b, memory_kinds(b)) for b in table.blocks if not b.serves]
    shown = [(b, k) for b, k in shown if k]
    if not shown:
        return Plot("memory", "Peak memory", None, ["No run measured peak memory."])
    fig, axes = _figure(len(shown), width=6.0)
    for ax, (b, kinds) in zip(axes, shown):
        memory_axes(ax, b, kinds, color)
        ax.set_title(_panel_title(b), fontsize=9)
    fig.suptitle("Peak memory per kind (a missing bar was not measured)", fontsize=10)
    notes: dict[str, list[str]] = {}
    for b in (b for b in table.blocks if not b.serves):
        for why, ms in b.not_measured().items():
            for m in ms:
                if m.group == "memory" and m.label not in notes.setdefault(why, []):
                    notes[why].append(m.label)
    return Plot("memory", "Peak memory", fig,
                [f"Not measured ({why}): {'; '.join(labels)}." for why, labels in notes.items() if labels])


# -- speed vs quality -----------------------------------------------------------------------------
@dataclass
class ScatterPoint:
    column: str
    backend: str
    x: float  # speed relative to the baseline, > 1 is faster
    y: float
    size_mib: float | None
    on_front: bool


@dataclass
class Scatter:
    block: Block
    speed: Metric
    quality: Metric
    memory: Metric | None
    points: list[ScatterPoint]
    notes: list[str]


def _groups(table: Table, across_models: bool = False, serves: bool = False) -> dict[tuple, list[Block]]:
    """Blocks by model × workload × weights × device × parameters (without the model: across_models): the
    offline blocks, or (serves) the serve blocks, whose load is an offered rate."""
    out: dict[tuple, list[Block]] = {}
    for b in (b for b in table.blocks if b.serves == serves):
        key = (b.workload, b.weights, b.device, tuple((k, param_text(v)) for k, v in b.params.items()))
        out.setdefault(key if across_models else (b.model, *key), []).append(b)
    return out


def scatter_data(block: Block, front: Callable[[Block], list[str]]) -> Scatter | str:
    """One block's speed (vs its baseline) against quality, or why it has no such plot."""
    qual = next((block.catalogue[k] for k in QUALITY_AXIS if any(k in c.values for c in block.cells)), None)
    if qual is None:
        reasons = sorted({c.absent[k] for c in block.cells for k in QUALITY_AXIS if k in c.absent and c.ok})
        return f"no quality numbers ({'; '.join(reasons) or 'not measured'}), so no speed-quality plot"
    sm = speed_metric(block)
    base = block.baseline
    if sm is None or base is None or base.value(sm.key) in (None, 0):
        return block.baseline_note or "the baseline has no speed here, so speed cannot be put relative to it"
    mem = next((block.catalogue[k] for k in MARKER_MEMORY if all(k in c.values for c in block.cells if c.ok)), None)
    on_front = set(front(block))
    points, skipped = [], []
    for col, c in zip(block.columns, block.cells):
        s, q = c.value(sm.key), c.value(qual.key)
        if s is None or q is None or s == 0:
            missing = sm if s is None or s == 0 else qual
            skipped.append(f"{col} (no {missing.label}: {_why(c, missing.key)})")
            continue
        b = base.value(sm.key)
        x = s / b if sm.better == "higher" else b / s
        points.append(ScatterPoint(col, c.backend, x, q, c.value(mem.key) if mem else None, col in on_front))
    notes = [f"Not in the speed-quality plot: {'; '.join(skipped)}."] if skipped else []
    return Scatter(block, sm, qual, mem, points, notes)


def scatter_axes(ax, d: Scatter, color: dict[str, str]) -> Fit:
    """Draw one block's speed-quality scatter; its limits cover the data only until `settle` pads them
    for the markers' drawn size (which needs the figure's layout)."""
    top = max((p.size_mib or 0.0 for p in d.points), default=0.0) or 1.0
    marks = []
    for p in d.points:
        size = 60.0 if p.size_mib is None else 40.0 + 600.0 * p.size_mib / top
        ax.scatter(p.x, p.y, s=size, color=color[p.backend], alpha=0.75, edgecolors="0.2",
                   linewidths=MARKER_EDGE_PT)
        radius = marker_radius_pt(size, MARKER_EDGE_PT)
        if p.on_front:
            ax.scatter(p.x, p.y, s=size + 160, facecolors="none", edgecolors="black", linewidths=RING_EDGE_PT)
            radius = max(radius, marker_radius_pt(size + 160, RING_EDGE_PT))
        label = ax.annotate(p.column + (" ★" if p.on_front else ""), (p.x, p.y), fontsize=8,
                            xytext=(radius + GAP_PT, 0), textcoords="offset points", va="center")
        marks.append(Mark(p.x, p.y, radius, label))
    front = sorted((p for p in d.points if p.on_front), key=lambda p: p.x)
    if len(front) > 1:
        ax.plot([p.x for p in front], [p.y for p in front], color="black", lw=0.8, ls=":")
    ax.axvline(1.0, color="0.6", lw=0.8, ls="--")
    base = d.block.columns[d.block.cells.index(d.block.baseline)] if d.block.baseline in d.block.cells else "baseline"
    ax.set_xlabel(f"{d.speed.label} vs {base} (×, higher is faster)", fontsize=9)
    ax.set_ylabel(d.quality.label + _arrow(d.quality), fontsize=9)
    size_text = f"marker area ∝ {d.memory.label}" if d.memory else "marker size fixed: no memory kind measured by all"
    _note_below(ax, size_text + "\nringed ★: Pareto front (speed, memory, quality)")
    ax.grid(alpha=0.3)
    # KL, perplexity and percentages are never negative, and a percentage never passes 100: padding for a
    # marker on such a bound goes past it, but no tick names a value beyond it.
    ys = [p.y for p in d.points]
    floor = 0.0 if ys and min(ys) >= 0 else None
    ceil = 100.0 if d.quality.key.endswith("_pct") and ys and max(ys) <= 100 else None
    fit = Fit(ax, marks, x_also=(1.0,), y_floor=floor, y_ceil=ceil, margin=0.12)
    fit_limits(fit, pixels=False)
    bounded_ticks(ax.yaxis, floor, ceil)
    return fit


def quality(table: Table, color: dict[str, str], front: Callable[[Block], list[str]]) -> Plot:
    data, notes = [], []
    for blocks in _groups(table).values():
        block = min(blocks, key=lambda b: b.batch_size if b.batch_size is not None else math.inf)
        got = scatter_data(block, front)
        if isinstance(got, str):
            notes.append(f"{block.title}: {got}.")
        else:
            data.append(got)
            notes += got.notes
    if not data:
        return Plot("quality", "Speed vs quality", None, notes)
    fig, axes = _figure(len(data), width=5.6, height=4.6)
    fits = []
    for ax, d in zip(axes, data):
        fits.append(scatter_axes(ax, d, color))
        ax.set_title(_panel_title(d.block), fontsize=9)
    settle(fig, fits)
    return Plot("quality", "Speed vs quality", fig, notes)


# -- batch-size scaling ---------------------------------------------------------------------------
def scaling(table: Table, color: dict[str, str]) -> Plot:
    groups = [bs for bs in _groups(table).values() if len({b.batch_size for b in bs if b.batch_size}) > 1]
    if not groups:
        return Plot("scaling", "Batch-size scaling", None,
                    ["Each model × workload ran one batch size: no scaling plot."])
    fig, axes = _figure(len(groups))
    for ax, blocks in zip(axes, groups):
        m = next(filter(None, map(speed_metric, blocks)), None)
        if m is None:
            continue
        sizes = sorted({b.batch_size for b in blocks if b.batch_size})
        lines: dict[str, list[tuple[int, Any]]] = {}
        for b in blocks:
            for col, c in zip(b.columns, b.cells):
                if b.batch_size and m.key in c.values:
                    lines.setdefault(col, []).append((b.batch_size, c.values[m.key], c.backend))
        for col, pts in lines.items():
            pts.sort(key=lambda t: t[0])
            xs = [p[0] for p in pts]
            meds = [p[1].value for p in pts]
            lo = [p[1].value - (p[1].spread.min if p[1].spread else p[1].value) for p in pts]
            hi = [(p[1].spread.max if p[1].spread else p[1].value) - p[1].value for p in pts]
            ax.errorbar(xs, meds, yerr=[lo, hi], marker="o", capsize=3, color=color[pts[0][2]], label=col)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("batch size", fontsize=9)
        ax.set_ylabel(m.label + _arrow(m), fontsize=9)
        _legend_outside(ax, fontsize=8)
        ax.grid(alpha=0.3)
        title = blocks[0].title.replace(f" · {blocks[0].where}", "")
        ax.set_title("\n".join(textwrap.wrap(title, 60)), fontsize=9)
    fig.suptitle("Median over repeats; whiskers: min to max", fontsize=10)
    return Plot("scaling", "Batch-size scaling", fig, [])


# -- model-size curve -----------------------------------------------------------------------------
@dataclass
class SizeCurve:
    """One backend at one batch size: its speed relative to the baseline, per model size."""
    backend: str
    column: str
    batch_size: int | None
    points: list[tuple[float, float, str]]  # (parameters in billions, × the baseline's speed, model)


@dataclass
class SizePanel:
    title: str
    speed: Metric
    baseline: str
    curves: list[SizeCurve]


def params_b(cell: Cell) -> float | None:
    """The model's parameter count in billions, as its YAML states it (`model.params_b`)."""
    config = cell.record.config
    model = config.get("model") if isinstance(config, dict) else None
    value = model.get("params_b") if isinstance(model, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def size_data(table: Table) -> tuple[list[SizePanel], list[str]]:
    """Panels of speed-vs-baseline against model size: one per workload × weights × device × parameters
    that ran on two or more model sizes; every point is a measured cell over its own block's baseline."""
    panels, notes = [], []
    for (workload, weights, device, params), blocks in _groups(table, across_models=True).items():
        sizes = {params_b(c) for b in blocks for c in b.cells} - {None}
        if len({b.model for b in blocks}) < 2 or len(sizes) < 2:
            continue
        m = next(filter(None, map(speed_metric, blocks)), None)
        if m is None:
            continue
        curves: dict[tuple[str, int | None], SizeCurve] = {}
        skipped: list[str] = []
        for b in blocks:
            base = b.baseline.value(m.key) if b.baseline is not None else None
            for col, c in zip(b.columns, b.cells):
                if c is b.baseline:
                    continue
                size, got = params_b(c), c.value(m.key)
                if size is None or got in (None, 0) or base in (None, 0):
                    why = "no model.params_b" if size is None else (
                        _why(c, m.key) if got in (None, 0) else b.baseline_note or "no baseline speed")
                    skipped.append(f"{b.model} {col} {b.where} ({why})")
                    continue
                x = got / base if m.better == "higher" else base / got
                curve = curves.setdefault((col, b.batch_size), SizeCurve(c.backend, col, b.batch_size, []))
                curve.points.append((size, x, b.model))
        baseline = next((b.baseline.backend for b in blocks if b.baseline is not None), table.baseline or "baseline")
        title = " · ".join([workload, *(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in params),
                            f"{weights} weights", device])
        if curves:
            for curve in curves.values():
                curve.points.sort()
            panels.append(SizePanel(title, m, baseline, list(curves.values())))
        if skipped:
            notes.append(f"Not in the model-size plot ({title}): {'; '.join(skipped)}.")
    return panels, notes


def sizes(table: Table, color: dict[str, str]) -> Plot:
    panels, notes = size_data(table)
    if not panels:
        return Plot("sizes", "Speed vs model size", None,
                    notes or ["No workload ran on two or more model sizes: no model-size plot."])
    fig, axes = _figure(len(panels), width=6.0, height=4.2)
    styles = ["-", "--", ":", "-."]
    fits = []
    for ax, panel in zip(axes, panels):
        batches = sorted({c.batch_size for c in panel.curves if c.batch_size is not None})
        marks = []
        for curve in panel.curves:
            xs = [p[0] for p in curve.points]
            ys = [p[1] for p in curve.points]
            style = styles[batches.index(curve.batch_size) % len(styles)] if curve.batch_size in batches else "-"
            ax.plot(xs, ys, marker="o", ls=style, color=color[curve.backend], markersize=LINE_MARKER_PT,
                    markeredgewidth=MARKER_EDGE_PT, label=f"{curve.column}, batch {curve.batch_size}")
            radius = LINE_MARKER_PT / 2 + MARKER_EDGE_PT / 2  # a line's marker size is its diameter
            for x, y in zip(xs, ys):
                label = ax.annotate(f"{y:.2f}", (x, y), fontsize=7, xytext=(radius + GAP_PT, 0),
                                    textcoords="offset points", va="center")
                marks.append(Mark(x, y, radius, label))
        fits.append(Fit(ax, marks, y_also=(1.0,), margin=0.06))
        ax.axhline(1.0, color="0.5", lw=0.9, ls="--")
        ax.set_xscale("log")
        # Ticks at the measured sizes only: log-axis defaults label 2x10^0, 3x10^0 ... that no model has.
        measured = sorted({p[0] for c in panel.curves for p in c.points})
        ax.set_xticks(measured, [f"{s:g}B" for s in measured])
        ax.minorticks_off()
        ax.set_xlabel("parameters, billions (model YAML's params_b)", fontsize=9)
        ax.set_ylabel(f"{panel.speed.label} vs {panel.baseline} (×, > 1 is faster)", fontsize=9)
        _legend_outside(ax, fontsize=7)
        ax.grid(alpha=0.3, which="both")
        ax.set_title("\n".join(textwrap.wrap(panel.title, 60)), fontsize=9)
    fig.suptitle("Median speed over the same model's baseline; grey line: parity", fontsize=10)
    settle(fig, fits)
    return Plot("sizes", "Speed vs model size", fig, notes)


# -- where the time goes ------------------------------------------------------------------------------
def breakdown_axes(ax, block: Block) -> bool:
    """Stacked horizontal bars, one per profiled cell: time per unit by class (runners.measure.breakdown)."""
    cells = [(col, c) for col, c in zip(block.columns, block.cells)
             if c.ok and any(f"time_{k}_ms" in c.values for k in BREAKDOWN_CLASSES)]
    if not cells:
        return False
    palette = {k: f"C{i}" for i, k in enumerate(BREAKDOWN_CLASSES)}
    labelled: set[str] = set()
    for y, (col, c) in enumerate(cells):
        left = 0.0
        for k in BREAKDOWN_CLASSES:
            v = c.value(f"time_{k}_ms") or 0.0
            if v > 0:
                ax.barh(y, v, left=left, color=palette[k], label=None if k in labelled else k.replace("_", " "),
                        edgecolor="white", linewidth=0.5)
                labelled.add(k)
                left += v
        ax.text(left, y, f" {format_number(left, 3)} ms", va="center", fontsize=7)
    ax.set_yticks(range(len(cells)), [col for col, _ in cells], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("profiled device time, ms per output token (per example for classifiers)", fontsize=8)
    ax.margins(x=0.18)
    _legend_outside(ax, fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    return True


def where_time_goes(table: Table, color: dict[str, str]) -> Plot:
    shown = [b for b in table.blocks if any(c.ok and "profiled_device_ms" in c.values for c in b.cells)]
    title = "Where the time goes"
    if not shown:
        return Plot("breakdown", title, None, ["No run was profiled (profile=true adds a profiled pass)."])
    fig, axes = _figure(len(shown), width=7.0, height=max(2.2, 0.5 * max(len(b.cells) for b in shown) + 1.5))
    for ax, b in zip(axes, shown):
        breakdown_axes(ax, b)
        ax.set_title(_panel_title(b), fontsize=9)
    fig.suptitle("Where the time goes: profiled device time per unit, by class", fontsize=10)
    return Plot("breakdown", title, fig, ["One profiled pass after the timed repeats (never mixed into them); the "
                                          "classes and their name patterns are in README, \"Why a backend is slow\"."])


# -- serving under load -------------------------------------------------------------------------------
ALL_AT_ONCE = "all at once"
SERVE_LATENCY = (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"))
DEFAULT_PCT = 90.0  # the percentile a latency panel shows when the SLO names none for that metric
RATE_AXIS_NOTE = ("x: offered rate, log scale; \"all at once\" (every request sent at once, no rate of its own) "
                  "is drawn one doubling right of the highest offered rate")


@dataclass(frozen=True)
class RateAxis:
    """Offered rates on a log2 x axis. "All at once" (rate inf) has no position of its own: it is drawn one
    doubling to the right of the highest finite rate (at 1 when there is none), under its own tick label."""
    finite: tuple[float, ...]
    all_at_once: bool

    @staticmethod
    def of(blocks: list[Block]) -> "RateAxis":
        rates = {b.rate_per_s for b in blocks if b.rate_per_s is not None}
        return RateAxis(tuple(sorted(r for r in rates if math.isfinite(r))), any(math.isinf(r) for r in rates))

    def x(self, rate_per_s: float) -> float:
        if math.isfinite(rate_per_s):
            return rate_per_s
        return 2.0 * self.finite[-1] if self.finite else 1.0

    def apply(self, ax) -> None:
        ax.set_xscale("log", base=2)
        ticks = [(r, f"{r:g}") for r in self.finite] + ([(self.x(math.inf), ALL_AT_ONCE)] if self.all_at_once else [])
        ax.set_xticks([t for t, _ in ticks], [label for _, label in ticks], fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel("offered rate, req/s", fontsize=9)


def _serve_title(blocks: list[Block]) -> str:
    b = blocks[0]
    parts = [b.model, b.workload, *(f"{b.shorts[p]}={param_text(v)}" for p, v in b.params.items()),
             f"{b.weights} weights", b.device]
    return "\n".join(textwrap.wrap(" · ".join(parts), 60))


@dataclass
class RateLine:
    """One backend's values of one quantity against offered rate (rates ascending)."""
    column: str
    backend: str
    points: list[tuple[float, float]]  # (offered rate, value)


def rate_lines(blocks: list[Block], value: Callable[[Cell], float | None]) -> tuple[list[RateLine], list[str]]:
    """Per backend column, its measured values over the group's blocks; and what was left out, with why."""
    lines: dict[str, RateLine] = {}
    skipped: list[str] = []
    for b in sorted(blocks, key=lambda b: b.rate_per_s):
        for col, c in zip(b.columns, b.cells):
            got = value(c) if c.ok else None
            if got is None:
                if c.load is not None:
                    skipped.append(f"{col} at {c.point.where} ({c.status if not c.ok else 'not measured'})")
                continue
            lines.setdefault(col, RateLine(col, c.backend, [])).points.append((b.rate_per_s, got))
    return list(lines.values()), skipped


def _latency_pct(table: Table, key: str) -> float:
    """The percentile a latency panel shows: the SLO's for that metric, else p90."""
    term = next((t for t in (table.slo.terms if table.slo else ()) if t.key == key), None)
    return term.percentile if term is not None else DEFAULT_PCT


def _pct_of(cell: Cell, key: str, pct: float) -> float | None:
    got = cell.values.get(key)
    if got is None:
        return None
    if got.spread is not None and got.spread.samples:
        return percentile(list(got.spread.samples), pct)
    return got.spread.stat(f"p{pct:g}") if got.spread is not None else None


def _draw_rate_lines(ax, lines: list[RateLine], axis: RateAxis, color: dict[str, str]) -> list[Mark]:
    marks = []
    radius = LINE_MARKER_PT / 2 + MARKER_EDGE_PT / 2  # a line's marker size is its diameter
    for line in lines:
        xs = [axis.x(r) for r, _ in line.points]
        ys = [v for _, v in line.points]
        ax.plot(xs, ys, marker="o", color=color[line.backend], markersize=LINE_MARKER_PT,
                markeredgewidth=MARKER_EDGE_PT, label=line.column)
        marks += [Mark(x, y, radius) for x, y in zip(xs, ys)]
    return marks


def _log_if_wide(ax, values: list[float]) -> None:
    """A latency that grows twentyfold past saturation flattens the rest of its line: log y then."""
    positive = [v for v in values if v > 0]
    if positive and len(positive) == len(values) and max(positive) / min(positive) > 20:
        ax.set_yscale("log")


def serve_latency(table: Table, color: dict[str, str]) -> Plot:
    """Per serve group: TTFT and TPOT (at the SLO's percentile, else p90) against offered rate, a line per
    backend, the SLO's limit dashed."""
    title = "Serving: latency vs offered rate"
    panels, notes = [], []
    for blocks in _groups(table, serves=True).values():
        axis = RateAxis.of(blocks)
        for key, name in SERVE_LATENCY:
            pct = _latency_pct(table, key)
            lines, skipped = rate_lines(blocks, lambda c, k=key, q=pct: _pct_of(c, k, q))
            if skipped:
                notes.append(f"Not in the {name} panel ({_serve_title(blocks).replace(chr(10), ' ')}): "
                             f"{'; '.join(skipped)}.")
            if lines:
                panels.append((blocks, axis, key, name, pct, lines))
    if not panels:
        return Plot("serve_latency", title, None, notes or ["No serve load point measured a latency."])
    fig, axes = _figure(len(panels), width=5.4, height=3.9, across=2)
    fits = []
    for ax, (blocks, axis, key, name, pct, lines) in zip(axes, panels):
        marks = _draw_rate_lines(ax, lines, axis, color)
        limit = next((t.limit_ms for t in (table.slo.terms if table.slo else ()) if t.key == key), None)
        if limit is not None:
            ax.axhline(limit, color="0.35", lw=0.9, ls="--", label=f"SLO: p{pct:g} <= {limit:g} ms")
        axis.apply(ax)
        _log_if_wide(ax, [m.y for m in marks] + ([limit] if limit is not None else []))
        ax.set_ylabel(f"{name} p{pct:g}, ms (lower is better)", fontsize=9)
        ax.grid(alpha=0.3)
        _legend_outside(ax, fontsize=7)
        ax.set_title(_serve_title(blocks), fontsize=9)
        fits.append(Fit(ax, marks, y_also=(limit,) if limit is not None else (), margin=0.06))
        fit_limits(fits[-1], pixels=False)
    fig.suptitle("Latency per request at each offered rate, over the load point's requests", fontsize=10)
    settle(fig, fits)
    return Plot("serve_latency", title, fig, [RATE_AXIS_NOTE + "."] + notes)


def serve_goodput(table: Table, color: dict[str, str]) -> Plot | None:
    """Per serve group: goodput under the SLO against offered rate, with the offered rate itself (y = x):
    the gap is what the server takes in but not within the SLO. None without an SLO (no goodput)."""
    if table.slo is None:
        return None
    title = f"Serving: goodput under the SLO ({table.slo.text})"
    panels, notes = [], []
    for blocks in _groups(table, serves=True).values():
        lines, skipped = rate_lines(blocks, lambda c: c.value("goodput_per_s"))
        if skipped:
            notes.append(f"Not in the goodput plot ({_serve_title(blocks).replace(chr(10), ' ')}): "
                         f"{'; '.join(skipped)}.")
        if lines:
            panels.append((blocks, RateAxis.of(blocks), lines))
    if not panels:
        return Plot("serve_goodput", title, None, notes or ["No serve load point has a goodput."])
    import numpy as np

    fig, axes = _figure(len(panels), width=5.8, height=4.0, across=2)
    fits = []
    for ax, (blocks, axis, lines) in zip(axes, panels):
        marks = _draw_rate_lines(ax, lines, axis, color)
        also: tuple[float, ...] = ()
        if axis.finite:
            xs = np.geomspace(axis.finite[0], axis.finite[-1], 64) if len(axis.finite) > 1 else np.array(axis.finite)
            ax.plot(xs, xs, color="0.45", lw=0.9, ls="--", label="offered rate (y = x)")
            also = (axis.finite[0], axis.finite[-1])
        axis.apply(ax)
        ax.set_ylabel("goodput, req/s (requests meeting the SLO)", fontsize=9)
        ax.grid(alpha=0.3)
        _legend_outside(ax, fontsize=7)
        ax.set_title(_serve_title(blocks), fontsize=9)
        fits.append(Fit(ax, marks, x_also=also, y_also=also + (0.0,), y_floor=0.0, margin=0.06))
        fit_limits(fits[-1], pixels=False)
        bounded_ticks(ax.yaxis, 0.0, None)
    fig.suptitle("Goodput: requests per second that met every SLO term; dashed: the offered rate", fontsize=10)
    settle(fig, fits)
    return Plot("serve_goodput", title, fig, [RATE_AXIS_NOTE + "; the y = x line spans the finite rates only."]
                + notes)


@dataclass
class TradePoint:
    column: str
    backend: str
    rate_per_s: float
    user_tok_s: float  # median over requests of one user's output tokens/s (x)
    gpu_tok_s: float  # output tokens/s the server delivered to everyone (y)
    on_front: bool = False


SAME_REL = 1e-6  # values this close are one value: 1000 / TPOT of equal timings differs in its last bits


def _cmp(a: float, b: float) -> int:
    return 0 if abs(a - b) <= SAME_REL * max(abs(a), abs(b)) else (1 if a > b else -1)


def pareto_max(points: list[TradePoint]) -> None:
    """Mark the points no other beats on both axes (higher is better on each): another point dominates one
    when it is at least as good on both and better on one."""
    def dominates(o: TradePoint, p: TradePoint) -> bool:
        signs = (_cmp(o.user_tok_s, p.user_tok_s), _cmp(o.gpu_tok_s, p.gpu_tok_s))
        return min(signs) >= 0 and max(signs) > 0

    for p in points:
        p.on_front = not any(o is not p and dominates(o, p) for o in points)


def trade_data(blocks: list[Block]) -> tuple[list[TradePoint], list[str]]:
    points, skipped = [], []
    for b in sorted(blocks, key=lambda b: b.rate_per_s):
        for col, c in zip(b.columns, b.cells):
            x, y = c.value("user_output_tokens_per_s"), c.value("served_output_tokens_per_s")
            if not c.ok or x is None or y is None:
                if c.load is not None:
                    missing = "per-user speed" if x is None else "served throughput"
                    skipped.append(f"{col} at {c.point.where} ({c.status if not c.ok else 'no ' + missing})")
                continue
            points.append(TradePoint(col, c.backend, b.rate_per_s, x, y))
    pareto_max(points)
    return points, skipped


def serve_tradeoff(table: Table, color: dict[str, str]) -> Plot:
    """Per serve group: throughput of the whole GPU against the speed each user sees, a point per backend
    and offered rate (labelled with the rate), a line per backend in rate order, the Pareto front ringed."""
    title = "Serving: throughput per GPU vs speed per user"
    panels, notes = [], []
    for blocks in _groups(table, serves=True).values():
        points, skipped = trade_data(blocks)
        if skipped:
            notes.append(f"Not in the throughput-speed plot ({_serve_title(blocks).replace(chr(10), ' ')}): "
                         f"{'; '.join(skipped)}.")
        if points:
            panels.append((blocks, points))
    if not panels:
        return Plot("serve_tradeoff", title, None, notes or ["No serve load point measured both speeds."])
    fig, axes = _figure(len(panels), width=6.0, height=4.6, across=2)
    fits = []
    radius = LINE_MARKER_PT / 2 + MARKER_EDGE_PT / 2
    ring = 14.0 ** 2  # points²: a ring well outside a line marker
    ring_radius = marker_radius_pt(ring, RING_EDGE_PT)
    for ax, (blocks, points) in zip(axes, panels):
        marks = []
        for col in dict.fromkeys(p.column for p in points):
            mine = [p for p in points if p.column == col]
            ax.plot([p.user_tok_s for p in mine], [p.gpu_tok_s for p in mine], marker="o",
                    color=color[mine[0].backend], markersize=LINE_MARKER_PT, markeredgewidth=MARKER_EDGE_PT,
                    label=col)
        front = [p for p in points if p.on_front]
        if front:
            ax.scatter([p.user_tok_s for p in front], [p.gpu_tok_s for p in front], s=ring, facecolors="none",
                       edgecolors="black", linewidths=RING_EDGE_PT, label="Pareto front")
        for p in points:
            r = ring_radius if p.on_front else radius
            text = ALL_AT_ONCE if math.isinf(p.rate_per_s) else f"{p.rate_per_s:g}/s"
            label = ax.annotate(text, (p.user_tok_s, p.gpu_tok_s), fontsize=7, xytext=(r + GAP_PT, 0),
                                textcoords="offset points", va="center")
            marks.append(Mark(p.user_tok_s, p.gpu_tok_s, r, label))
        ax.set_xlabel("output tokens/s per user (median over requests; higher is better)", fontsize=9)
        ax.set_ylabel("served output tokens/s, whole server (higher is better)", fontsize=9)
        ax.grid(alpha=0.3)
        _legend_outside(ax, fontsize=7)
        _note_below(ax, "label: offered rate, req/s; ringed: Pareto front (no other point is faster for a user "
                        "and serves more)")
        ax.set_title(_serve_title(blocks), fontsize=9)
        fits.append(Fit(ax, marks, y_floor=0.0, x_also=(), margin=0.12))
        fit_limits(fits[-1], pixels=False)
        bounded_ticks(ax.yaxis, 0.0, None)
        bounded_ticks(ax.xaxis, 0.0, None)
    fig.suptitle("The throughput-latency trade-off: each offered rate is one point", fontsize=10)
    settle(fig, fits)
    return Plot("serve_tradeoff", title, fig, notes)


PLOTS = (("speed", "Speed"), ("memory", "Memory"), ("quality", "Speed vs quality"), ("scaling", "Scaling"),
         ("sizes", "Model sizes"), ("breakdown", "Where the time goes"))
# Drawn when the table has serve blocks (the plots above then draw its other blocks, when it has any).
SERVE_PLOTS = (("serve_latency", "Serving: latency vs offered rate"),
               ("serve_goodput", "Serving: goodput vs offered rate"),
               ("serve_tradeoff", "Serving: throughput per GPU vs speed per user"))


def all_plots(table: Table, front: Callable[[Block], list[str]]) -> list[Plot]:
    """Every plot; one that fails to draw becomes a note on the page and never costs the rest of the report.
    A table of serve runs only gets the serving plots; one without serve runs, none of them."""
    color = colors(table)
    makers: dict[str, Callable[[], Plot | None]] = {
        "speed": lambda: speed(table, color), "memory": lambda: memory(table, color),
        "quality": lambda: quality(table, color, front), "scaling": lambda: scaling(table, color),
        "sizes": lambda: sizes(table, color), "breakdown": lambda: where_time_goes(table, color),
        "serve_latency": lambda: serve_latency(table, color), "serve_goodput": lambda: serve_goodput(table, color),
        "serve_tradeoff": lambda: serve_tradeoff(table, color)}
    offline = any(not b.serves for b in table.blocks) or not table.blocks
    serving = any(b.serves for b in table.blocks)
    wanted = (PLOTS if offline else ()) + (SERVE_PLOTS if serving else ())
    out = []
    for name, title in wanted:
        try:
            plot = makers[name]()
        except Exception as exc:  # noqa: BLE001 — a plot is an illustration; the tables carry the numbers
            plot = Plot(name, title, None, [f"This plot could not be drawn ({type(exc).__name__}: "
                                            f"{str(exc)[:200]}); the tables below hold every number."])
        if plot is not None:
            out.append(plot)
    return out
