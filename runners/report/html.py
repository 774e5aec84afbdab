"""Records -> report.html (one self-contained page) and the PNGs beside it in plots/.

The page needs no network: CSS is inline and every plot is embedded as a base64 PNG. Like the tables,
it reads only records and reuses runners.report's labels and markdown table. A metric a run did not
measure is left out of a plot (and its reason written next to it), never drawn as a number.
matplotlib is imported inside the plotting functions, so importing this module stays cheap.
"""
from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path
from typing import Any

from runners.report import table as report
from runners.record.schema import Point, RunRecord

REPORT_NAME = "report.html"
PLOTS_DIR = "plots"
# Speed per group: the first metric the group has; True when higher is better.
SPEED_METRICS = (("output_tokens_per_s", True), ("per_example_ms", False), ("examples_per_s", True))
# Batch-size scaling shows throughput first, so lines rise with batch size.
SCALING_METRICS = (("output_tokens_per_s", True), ("examples_per_s", True), ("per_example_ms", False))
QUALITY_KEYS = (("kl_mean_nats", False), ("macro_f1_pct", True), ("accuracy_pct", True))
# Marker size in the speed-quality plot: the first memory kind every plotted run measured.
MARKER_MEMORY = ("peak_process_vram_mib", "peak_allocated_mib", "peak_reserved_mib", "peak_device_vram_mib",
                 "peak_rss_mib")
LABELS = dict(report.STAT_METRICS + report.MEMORY_METRICS + report.QUALITY_METRICS)

Group = tuple  # (model, workload, weights, batch_size)
Cell = tuple  # (model, workload, weights)


# ---------------------------------------------------------------- entry point

def write(root: Path, records: list[RunRecord], baseline: str | None) -> Path:
    """Write `root/report.html` and `root/plots/*.png`; returns the page's path."""
    root = Path(root)
    plots = root / PLOTS_DIR
    plots.mkdir(parents=True, exist_ok=True)
    recs = sorted(records, key=report._order)
    colors = {b: f"C{i % 10}" for i, b in enumerate(dict.fromkeys(r.backend for r in recs))}
    sections = [
        ("Speed", "speed", _speed_figure(recs, colors)),
        ("Peak memory", "memory", _memory_figure(recs, colors)),
        ("Speed vs quality", "quality", _quality_figure(recs, baseline, colors)),
        ("Batch-size scaling", "scaling", _scaling_figure(recs, colors)),
    ]
    body = [_header(recs, baseline)]
    body += [_figure_section(title, plots / f"{name}.png", *built) for title, name, built in sections]
    body += [_failures_section(recs), _table_section(recs, baseline)]
    path = root / REPORT_NAME
    path.write_text(_page(f"quantbench report: {root.resolve().name}", "\n".join(body)))
    return path


# ---------------------------------------------------------------- reading records

def _stat(point: Point, key: str) -> dict | None:
    """The Stat dict of `key` when the point ran and measured it, else None."""
    v = point.metrics.get(key) if point.status == "ok" else None
    return v if isinstance(v, dict) and isinstance(v.get("median"), (int, float)) else None


def _number(point: Point, key: str) -> float | None:
    """A plain metric (memory); a Stat dict reads as its median."""
    v = point.metrics.get(key) if point.status == "ok" else None
    if isinstance(v, dict):
        v = v.get("median")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _why(rec: RunRecord, point: Point | None, key: str) -> str:
    """Why a number is missing from a plot, in a few words."""
    if point is not None and point.status != "ok":
        return point.status
    if point is not None and key in point.absent:
        return point.absent[key]
    return rec.status if rec.status not in ("ok", "partial") else "not measured"


def _groups(recs: list[RunRecord]) -> dict[Group, list[tuple[RunRecord, Point]]]:
    out: dict[Group, list] = {}
    for rec in recs:
        for p in rec.points:
            out.setdefault((rec.model, rec.workload, rec.weights, p.batch_size), []).append((rec, p))
    return out


def _cells(recs: list[RunRecord]) -> dict[Cell, list[RunRecord]]:
    out: dict[Cell, list] = {}
    for rec in recs:
        out.setdefault((rec.model, rec.workload, rec.weights), []).append(rec)
    return out


def _first_key(points: list[Point], choices: tuple) -> tuple[str, bool] | None:
    for key, higher in choices:
        if any(_stat(p, key) for p in points):
            return key, higher
    return None


def _point_at(rec: RunRecord, batch_size: int) -> Point | None:
    return next((p for p in rec.points if p.batch_size == batch_size), None)


def _group_title(g: Group) -> str:
    model, workload, weights, bs = g
    return f"{model} · {workload} · batch {bs}\n{weights} weights"


def _metric_label(key: str, higher: bool | None = None) -> str:
    arrow = "" if higher is None else (" (higher is better)" if higher else " (lower is better)")
    return LABELS.get(key, key) + arrow


# ---------------------------------------------------------------- matplotlib

def _figure(n: int, width: float = 5.2, height: float = 3.8):
    """A figure of n panels, at most 3 across; matplotlib's Agg canvas, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows + 0.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _save(fig, path: Path) -> bytes:
    fig.savefig(path, format="png", dpi=100)
    return path.read_bytes()


def _short(text: str, n: int = 28) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _na(ax, x: float, text: str) -> None:
    """Mark a missing bar with its reason (a word, never a number drawn as a bar)."""
    ax.text(x, 0, _short(text), rotation=90, ha="center", va="bottom", fontsize=8, color="0.4",
            transform=ax.get_xaxis_transform())


# ---------------------------------------------------------------- speed

def _speed_figure(recs: list[RunRecord], colors: dict) -> tuple[Any, list[str]]:
    groups = _groups(recs)
    keyed = {g: _first_key([p for _, p in pairs], SPEED_METRICS) for g, pairs in groups.items()}
    shown = [g for g in groups if keyed[g]]
    notes = [f"{_group_title(g).replace(chr(10), ', ')}: no speed measured." for g in groups if not keyed[g]]
    if not shown:
        return None, notes or ["No run measured speed."]
    fig, axes = _figure(len(shown))
    for ax, g in zip(axes, shown):
        _speed_axes(ax, groups[g], *keyed[g], colors)
        ax.set_title(_group_title(g), fontsize=10)
    fig.suptitle("Bars: median over repeats; whiskers: min to max of the repeats", fontsize=10)
    return fig, notes


def _speed_axes(ax, pairs: list, key: str, higher: bool, colors: dict) -> None:
    for i, (rec, p) in enumerate(pairs):
        st = _stat(p, key)
        if st is None:
            _na(ax, i, _why(rec, p, key))
            continue
        med = st["median"]
        err = [[med - st.get("min", med)], [st.get("max", med) - med]]
        ax.bar(i, med, color=colors[rec.backend], yerr=err, capsize=4, ecolor="0.2")
        ax.annotate(report._fmt(med), (i, max(med, st.get("max", med))), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(pairs)), [r.backend for r, _ in pairs], rotation=20, ha="right")
    ax.set_xlim(-0.6, len(pairs) - 0.4)
    ax.set_ylabel(_metric_label(key, higher), fontsize=9)
    ax.grid(axis="y", alpha=0.3)


# ---------------------------------------------------------------- memory

def _memory_figure(recs: list[RunRecord], colors: dict) -> tuple[Any, list[str]]:
    groups = _groups(recs)
    kinds = {g: [k for k, _ in report.MEMORY_METRICS if any(_number(p, k) is not None for _, p in pairs)]
             for g, pairs in groups.items()}
    shown = [g for g in groups if kinds[g]]
    if not shown:
        return None, ["No run measured peak memory."]
    fig, axes = _figure(len(shown), width=6.0)
    for ax, g in zip(axes, shown):
        _memory_axes(ax, groups[g], kinds[g], colors)
        ax.set_title(_group_title(g), fontsize=10)
    fig.suptitle("Peak memory per kind (a missing bar was not measured)", fontsize=10)
    return fig, _memory_notes(groups)


def _memory_axes(ax, pairs: list, kinds: list[str], colors: dict) -> None:
    width = min(0.8 / len(pairs), 0.3)
    for j, (rec, p) in enumerate(pairs):
        xs = [i + (j - (len(pairs) - 1) / 2) * width for i in range(len(kinds))]
        vals = [_number(p, k) for k in kinds]
        have = [(x, v) for x, v in zip(xs, vals) if v is not None]
        if have:
            bars = ax.bar([x for x, _ in have], [v for _, v in have], width, color=colors[rec.backend],
                          label=rec.backend)
            ax.bar_label(bars, [report._fmt(v) for _, v in have], fontsize=7)
        for x, k in zip(xs, kinds):
            if _number(p, k) is None:
                _na(ax, x, _why(rec, p, k))
    ax.set_xticks(range(len(kinds)), [_wrap(LABELS[k].rsplit(", ", 1)[0], 18) for k in kinds], fontsize=8)
    ax.set_xlim(-0.5, len(kinds) - 0.5)
    ax.set_ylabel("MiB", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _memory_notes(groups: dict) -> list[str]:
    """One line per reason a memory kind is missing, e.g. 'CPU run: no device memory'."""
    reasons: dict[str, list[str]] = {}
    for pairs in groups.values():
        for _, p in pairs:
            for key, label in report.MEMORY_METRICS:
                if key in p.absent:
                    reasons.setdefault(p.absent[key], []).append(label.rsplit(", ", 1)[0])
    return [f"Not measured ({why}): {', '.join(dict.fromkeys(labels))}." for why, labels in reasons.items()]


# ---------------------------------------------------------------- speed vs quality

def _quality_figure(recs: list[RunRecord], baseline: str | None, colors: dict) -> tuple[Any, list[str]]:
    data, notes = {}, []
    for cell, cell_recs in _cells(recs).items():
        got = _scatter_data(cell_recs, baseline)
        if isinstance(got, str):
            notes.append(f"{' · '.join(map(str, cell))}: {got}")
        else:
            data[cell] = got
            notes += got["notes"]
    if not data:
        return None, notes
    fig, axes = _figure(len(data), width=5.6, height=4.2)
    for ax, (cell, d) in zip(axes, data.items()):
        _scatter_axes(ax, d, colors)
        ax.set_title(" · ".join(map(str, cell)), fontsize=10)
    return fig, notes


def _scatter_data(cell_recs: list[RunRecord], baseline: str | None) -> dict | str:
    """Points (backend, speed vs baseline, quality, memory) of one cell, or why there are none."""
    qkey = next(((k, hi) for k, hi in QUALITY_KEYS
                 if any(_is_num(r.quality.get(k)) for r in cell_recs)), None)
    if qkey is None:
        reasons = sorted({str(r.quality.get("absent") or "not recorded") for r in cell_recs})
        return f"no quality numbers ({'; '.join(reasons)}), so no speed-quality plot."
    base = next((r for r in cell_recs if r.backend == baseline), None)
    ref = _baseline_speed(base)
    if ref is None:
        return f"baseline {baseline} has no speed here, so speed cannot be put relative to it."
    (skey, higher), bs, base_med = ref
    pts, skipped = [], []
    for rec in cell_recs:
        p = _point_at(rec, bs)
        st = _stat(p, skey) if p else None
        st = st if st and st["median"] > 0 else None  # a zero rate or time has no ratio
        q = rec.quality.get(qkey[0])
        if st is None or not _is_num(q):
            skipped.append(f"{rec.backend} ({_missing(rec, p, skey, bs, qkey[0], st is None)})")
            continue
        rel = st["median"] / base_med if higher else base_med / st["median"]
        pts.append({"backend": rec.backend, "x": rel, "y": float(q), "point": p})
    mem = next((k for k in MARKER_MEMORY if pts and all(_number(d["point"], k) is not None for d in pts)), None)
    notes = [f"Not in the speed-quality plot: {'; '.join(skipped)}."] if skipped else []
    return {"points": pts, "qkey": qkey, "skey": skey, "bs": bs, "baseline": baseline, "mem": mem, "notes": notes}


def _missing(rec: RunRecord, p: Point | None, skey: str, bs: int, qkey: str, no_speed: bool) -> str:
    if no_speed:
        return f"no {skey} at batch {bs}: {_why(rec, p, skey)}"
    why = rec.quality.get("absent") or (rec.quality.get("absent_metrics") or {}).get(qkey)
    return f"no {qkey}: {why or _why(rec, p, qkey)}"


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _baseline_speed(base: RunRecord | None) -> tuple[tuple[str, bool], int, float] | None:
    """(speed metric, batch size, median) of the baseline's smallest batch size with a speed."""
    if base is None:
        return None
    for p in sorted(base.points, key=lambda p: p.batch_size):
        key = _first_key([p], SPEED_METRICS)
        if key and _stat(p, key[0])["median"] > 0:
            return key, p.batch_size, _stat(p, key[0])["median"]
    return None


def _scatter_axes(ax, d: dict, colors: dict) -> None:
    pts, mem = d["points"], d["mem"]
    top = (max(_number(q["point"], mem) for q in pts) if mem else 0.0) or 1.0
    for q in pts:
        size = 60.0 if mem is None else 40.0 + 600.0 * _number(q["point"], mem) / top
        ax.scatter(q["x"], q["y"], s=size, color=colors[q["backend"]], alpha=0.75, edgecolors="0.2")
        ax.annotate(q["backend"], (q["x"], q["y"]), fontsize=8, xytext=(6, 4), textcoords="offset points")
    ax.axvline(1.0, color="0.6", lw=0.8, ls="--")
    ax.set_xlabel(f"{LABELS.get(d['skey'], d['skey'])} vs {d['baseline']}, batch {d['bs']} (×, higher is faster)",
                  fontsize=9)
    ax.set_ylabel(_metric_label(*d["qkey"]), fontsize=9)
    size_text = f"marker area ∝ {LABELS[mem]}" if mem else "marker size fixed: no memory kind measured by every run"
    ax.text(0.01, 0.01, size_text, transform=ax.transAxes, fontsize=7, color="0.35")
    ax.grid(alpha=0.3)
    ax.margins(0.2)


# ---------------------------------------------------------------- batch-size scaling

def _scaling_figure(recs: list[RunRecord], colors: dict) -> tuple[Any, list[str]]:
    cells = {c: rs for c, rs in _cells(recs).items() if len({p.batch_size for r in rs for p in r.points}) > 1}
    keyed = {c: _first_key([p for r in rs for p in r.points], SCALING_METRICS) for c, rs in cells.items()}
    shown = [c for c in cells if keyed[c]]
    if not shown:
        return None, ["Each model × workload ran one batch size: no scaling plot."]
    fig, axes = _figure(len(shown))
    for ax, c in zip(axes, shown):
        _scaling_axes(ax, cells[c], *keyed[c], colors)
        ax.set_title(" · ".join(map(str, c)), fontsize=10)
    fig.suptitle("Median over repeats; whiskers: min to max", fontsize=10)
    return fig, []


def _scaling_axes(ax, cell_recs: list[RunRecord], key: str, higher: bool, colors: dict) -> None:
    sizes = sorted({p.batch_size for r in cell_recs for p in r.points})
    for rec in cell_recs:
        stats = [(p.batch_size, _stat(p, key)) for p in sorted(rec.points, key=lambda p: p.batch_size)]
        stats = [(bs, st) for bs, st in stats if st is not None]
        if not stats:
            continue
        xs = [bs for bs, _ in stats]
        meds = [st["median"] for _, st in stats]
        err = [[m - st.get("min", m) for m, (_, st) in zip(meds, stats)],
               [st.get("max", m) - m for m, (_, st) in zip(meds, stats)]]
        ax.errorbar(xs, meds, yerr=err, marker="o", capsize=3, color=colors[rec.backend], label=rec.backend)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("batch size", fontsize=9)
    ax.set_ylabel(_metric_label(key, higher), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


# ---------------------------------------------------------------- HTML

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1400px;
 padding:0 16px;color:#1b1f24;background:#fff}
h1{font-size:22px;margin:0 0 12px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eaeef2}
.note{color:#57606a;margin:4px 0}.bad{color:#cf222e;font-weight:600}
details pre{white-space:pre-wrap;font-size:12px;background:#f6f8fa;padding:6px;max-height:300px;overflow:auto}
"""
# Sets data-images on <body> once every plot has decoded, so a headless browser can tell.
SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-images', (ok ? 'loaded ' : 'broken ') + imgs.length);
});
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, body: str) -> str:
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>\n"
            f"<h1>{_e(title)}</h1>\n{body}\n<script>{SCRIPT}</script>\n</body></html>\n")


def _kv_table(pairs: list[tuple[str, str]]) -> str:
    trs = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in pairs)
    return f"<table>{trs}</table>"


def _figure_section(title: str, path: Path, fig: Any, notes: list[str]) -> str:
    parts = [f"<h2>{_e(title)}</h2>"]
    if fig is not None:
        data = base64.b64encode(_save(fig, path)).decode("ascii")
        parts.append(f'<img alt="{_e(title)}" src="data:image/png;base64,{data}">')
    else:
        path.unlink(missing_ok=True)  # a plot from an earlier report of this directory no longer holds
    parts += [f'<p class="note">{_e(n)}</p>' for n in notes]
    return "\n".join(parts)


# ---------------------------------------------------------------- environment header

def _distinct(values: list[Any]) -> str:
    return " / ".join(dict.fromkeys(str(v) for v in values if v not in (None, "", {}, [])))


def _header(recs: list[RunRecord], baseline: str | None) -> str:
    envs = [r.env for r in recs if r.env]
    gpus = [e.get("gpu") or {} for e in envs]
    commits = [_commit(e) for e in envs]
    pairs = [
        ("Device", _distinct([r.device for r in recs])),
        ("Weights", _distinct([r.weights for r in recs])),
        ("Baseline", baseline or ""),
        ("GPU", _distinct([_gpu_text(g) for g in gpus])),
        ("Driver", _distinct([g.get("driver") for g in gpus])),
        ("CUDA", _distinct([_cuda_text(g) for g in gpus])),
        ("CPU", _distinct([f"{e.get('cpu')} ×{e.get('cpu_count')}" for e in envs if e.get("cpu")])),
        ("Host", _distinct([e.get("host") for e in envs])),
        ("OS", _distinct([e.get("os") for e in envs])),
        ("Python", _distinct([e.get("python") for e in envs])),
        ("Packages", _distinct([_packages(e) for e in envs])),
        ("Git commit", _distinct(commits)),
        ("Runs", f"{len(recs)} ({sum(r.status == 'ok' for r in recs)} ok)"),
        ("Started", _span([r.started_at for r in recs])),
    ]
    return "<h2>Environment</h2>\n" + _kv_table([(k, v) for k, v in pairs if v])


def _gpu_text(g: dict) -> str | None:
    if not g.get("gpu_name"):
        return None
    extra = [f"cc {g['capability']}" if g.get("capability") else "",
             f"{g['total_vram_mib']:,} MiB" if _is_num(g.get("total_vram_mib")) else ""]
    extra = [x for x in extra if x]
    return g["gpu_name"] + (f" ({', '.join(extra)})" if extra else "")


def _cuda_text(g: dict) -> str | None:
    parts = [f"runtime {g['cuda_runtime']}" if g.get("cuda_runtime") else "",
             f"driver {g['cuda_driver']}" if g.get("cuda_driver") else ""]
    return ", ".join(p for p in parts if p) or None


def _packages(env: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items())


def _commit(env: dict) -> str | None:
    git = env.get("git") or {}
    if not git.get("commit"):
        return None
    return git["commit"][:12] + (" (uncommitted changes)" if git.get("dirty") else "")


def _span(stamps: list[str]) -> str:
    stamps = sorted(s for s in stamps if s)
    if not stamps:
        return ""
    return stamps[0] if stamps[0] == stamps[-1] else f"{stamps[0]} … {stamps[-1]}"


# ---------------------------------------------------------------- failures

def _failures(recs: list[RunRecord]) -> list[tuple[RunRecord, Any, str, str]]:
    """(record, batch size or 'all', status, reason) for every failed point, or failed run without one."""
    out = []
    for rec in recs:
        bad = [p for p in rec.points if p.status != "ok"]
        out += [(rec, p.batch_size, p.status, p.reason or "") for p in bad]
        if not bad and rec.status != "ok":
            out.append((rec, "all", rec.status, rec.reason or ""))
    return out


def _failures_section(recs: list[RunRecord]) -> str:
    rows = _failures(recs)
    if not rows:
        return "<h2>Failed runs</h2>\n<p class=\"note\">None: every run and batch size finished.</p>"
    head = "<tr><th>backend</th><th>model</th><th>workload</th><th>batch</th><th>status</th><th>reason</th></tr>"
    trs = "".join(
        f"<tr><td>{_e(r.backend)}</td><td>{_e(r.model)}</td><td>{_e(r.workload)}</td><td>{_e(bs)}</td>"
        f"<td class=\"bad\">{_e(status)}</td><td>{_reason_html(reason)}</td></tr>"
        for r, bs, status, reason in rows)
    return f"<h2>Failed runs</h2>\n<table>{head}{trs}</table>"


def _reason_html(reason: str) -> str:
    lines = reason.strip().splitlines() or [""]
    first = _e(lines[0][:300])
    if len(lines) == 1 and len(lines[0]) <= 300:
        return first
    return f"{first}<details><summary>full reason</summary><pre>{_e(reason[-6000:])}</pre></details>"


# ---------------------------------------------------------------- the table (report.markdown as HTML)

def _table_section(recs: list[RunRecord], baseline: str | None) -> str:
    return "<h2>Results vs baseline</h2>\n" + markdown_to_html(report.markdown(recs, baseline))


def markdown_to_html(md: str) -> str:
    """The subset report.markdown writes: ### headings, pipe tables, paragraphs with **bold**."""
    out: list[str] = []
    table: list[str] = []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            out.append(_md_table(table))
            table = []
        if line.startswith("### "):
            out.append(f"<h3>{_inline(line[4:])}</h3>")
        elif line.strip():
            out.append(f"<p>{_inline(line.strip())}</p>")
    return "\n".join(out)


def _inline(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", _e(text))


def _md_cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


def _md_table(lines: list[str]) -> str:
    body = [ln for ln in lines if not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", ln.strip())]
    head, rest = _md_cells(body[0]), body[1:]
    ths = "".join(f"<th>{_inline(c)}</th>" for c in head)
    trs = []
    for ln in rest:
        cells = _md_cells(ln)
        tds = [f"<th>{_inline(cells[0])}</th>"]
        tds += [f'<td class="num">{_inline(c)}</td>' if _numeric(c) else f"<td>{_inline(c)}</td>" for c in cells[1:]]
        trs.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><tr>{ths}</tr>{''.join(trs)}</table>"


def _numeric(cell: str) -> bool:
    return bool(re.match(r"-?[\d,.]+( \([+-]?\d+%\))?$", cell))
