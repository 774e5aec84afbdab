"""PNG plots of the table model: speed with its spread, memory by kind, speed vs quality (Pareto front
marked), batch-size scaling, and speed relative to the baseline against model size. A metric a cell
did not measure is never drawn as a number: its bar is replaced by the reason. matplotlib is imported
inside the functions (importing this module stays cheap).
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from typing import Any, Callable

from runners.report.metrics import Metric, format_value, in_group
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


def _figure(n: int, width: float = 5.2, height: float = 3.8):
    """A figure of n panels, at most 3 across; matplotlib's Agg canvas, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    cols = min(n, 3)
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
    shown = [(b, speed_metric(b)) for b in table.blocks]
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
    shown = [(b, memory_kinds(b)) for b in table.blocks]
    shown = [(b, k) for b, k in shown if k]
    if not shown:
        return Plot("memory", "Peak memory", None, ["No run measured peak memory."])
    fig, axes = _figure(len(shown), width=6.0)
    for ax, (b, kinds) in zip(axes, shown):
        memory_axes(ax, b, kinds, color)
        ax.set_title(_panel_title(b), fontsize=9)
    fig.suptitle("Peak memory per kind (a missing bar was not measured)", fontsize=10)
    notes: dict[str, list[str]] = {}
    for b in table.blocks:
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


def _groups(table: Table, across_models: bool = False) -> dict[tuple, list[Block]]:
    """Blocks by model × workload × weights × device × parameters (without the model: across_models)."""
    out: dict[tuple, list[Block]] = {}
    for b in table.blocks:
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


def scatter_axes(ax, d: Scatter, color: dict[str, str]) -> None:
    top = max((p.size_mib or 0.0 for p in d.points), default=0.0) or 1.0
    for p in d.points:
        size = 60.0 if p.size_mib is None else 40.0 + 600.0 * p.size_mib / top
        ax.scatter(p.x, p.y, s=size, color=color[p.backend], alpha=0.75, edgecolors="0.2")
        if p.on_front:
            ax.scatter(p.x, p.y, s=size + 160, facecolors="none", edgecolors="black", linewidths=1.6)
        ax.annotate(p.column + (" ★" if p.on_front else ""), (p.x, p.y), fontsize=8, xytext=(6, 4),
                    textcoords="offset points")
    front = sorted((p for p in d.points if p.on_front), key=lambda p: p.x)
    if len(front) > 1:
        ax.plot([p.x for p in front], [p.y for p in front], color="black", lw=0.8, ls=":")
    ax.axvline(1.0, color="0.6", lw=0.8, ls="--")
    base = d.block.columns[d.block.cells.index(d.block.baseline)] if d.block.baseline in d.block.cells else "baseline"
    ax.set_xlabel(f"{d.speed.label} vs {base} (×, higher is faster)", fontsize=9)
    ax.set_ylabel(d.quality.label + _arrow(d.quality), fontsize=9)
    size_text = f"marker area ∝ {d.memory.label}" if d.memory else "marker size fixed: no memory kind measured by all"
    ax.text(0.01, 0.01, size_text + "\nringed ★: Pareto front (speed, memory, quality)", transform=ax.transAxes,
            fontsize=7, color="0.35")
    ax.grid(alpha=0.3)
    ax.margins(0.2)
    lo, hi = ax.get_ylim()
    if lo < 0 <= min(p.y for p in d.points):  # KL and percentages are never negative
        ax.set_ylim(0, hi)


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
    fig, axes = _figure(len(data), width=5.6, height=4.2)
    for ax, d in zip(axes, data):
        scatter_axes(ax, d, color)
        ax.set_title(_panel_title(d.block), fontsize=9)
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
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        title = blocks[0].title.replace(f" · batch {blocks[0].batch_size}", "")
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
                    skipped.append(f"{b.model} {col} batch {b.batch_size} ({why})")
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
    for ax, panel in zip(axes, panels):
        batches = sorted({c.batch_size for c in panel.curves if c.batch_size is not None})
        for curve in panel.curves:
            xs = [p[0] for p in curve.points]
            ys = [p[1] for p in curve.points]
            style = styles[batches.index(curve.batch_size) % len(styles)] if curve.batch_size in batches else "-"
            ax.plot(xs, ys, marker="o", ls=style, color=color[curve.backend],
                    label=f"{curve.column}, batch {curve.batch_size}")
            for x, y in zip(xs, ys):
                ax.annotate(f"{y:.2f}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.axhline(1.0, color="0.5", lw=0.9, ls="--")
        ax.set_xscale("log")
        # Ticks at the measured sizes only: log-axis defaults label 2x10^0, 3x10^0 ... that no model has.
        measured = sorted({p[0] for c in panel.curves for p in c.points})
        ax.set_xticks(measured, [f"{s:g}B" for s in measured])
        ax.minorticks_off()
        ax.set_xlabel("parameters, billions (model YAML's params_b)", fontsize=9)
        ax.set_ylabel(f"{panel.speed.label} vs {panel.baseline} (×, > 1 is faster)", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
        ax.set_title("\n".join(textwrap.wrap(panel.title, 60)), fontsize=9)
    fig.suptitle("Median speed over the same model's baseline; grey line: parity", fontsize=10)
    return Plot("sizes", "Speed vs model size", fig, notes)


PLOTS = (("speed", "Speed"), ("memory", "Memory"), ("quality", "Speed vs quality"), ("scaling", "Scaling"),
         ("sizes", "Model sizes"))


def all_plots(table: Table, front: Callable[[Block], list[str]]) -> list[Plot]:
    """Every plot; one that fails to draw becomes a note on the page and never costs the rest of the report."""
    color = colors(table)
    makers = {"speed": lambda: speed(table, color), "memory": lambda: memory(table, color),
              "quality": lambda: quality(table, color, front), "scaling": lambda: scaling(table, color),
              "sizes": lambda: sizes(table, color)}
    out = []
    for name, title in PLOTS:
        try:
            out.append(makers[name]())
        except Exception as exc:  # noqa: BLE001 — a plot is an illustration; the tables carry the numbers
            out.append(Plot(name, title, None, [f"This plot could not be drawn ({type(exc).__name__}: "
                                                f"{str(exc)[:200]}); the tables below hold every number."]))
    return out
