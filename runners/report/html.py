"""The table model as report.html: one self-contained page (inline CSS, plots as base64 PNGs, no
network), with the PNGs also written to plots/. It renders the model directly, like table.md does.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Callable

from backends.contract import safefs
from runners.report import capacity, choose, plots
from runners.report.metrics import GROUPS
from runners.report.spread import NOISY_CV_PCT
from runners.report.table import Block, Cell, Table, flatten, param_text
from runners.report.views import NS, ONE_OFF_NOTE, SPREAD_NOTE, info_cell, noisy_text, row_cells

REPORT_NAME = "report.html"
PLOTS_DIR = "plots"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1400px;
 padding:0 16px;color:#1b1f24;background:#fff}
h1{font-size:22px;margin:0 0 12px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.absent{color:#57606a}td.failed,.bad{color:#cf222e;font-weight:600}
tr.noisy th{background:#fff8c5}tr.noisy td.noisy{background:#fff8c5}.noisy-key{background:#fff8c5;padding:0 4px}
.ns{color:#57606a;font-style:italic}
img{max-width:100%;height:auto;border:1px solid #eaeef2}
.note{color:#57606a;margin:4px 0}.warn{color:#9a6700;font-weight:600}
.answer{font-size:15px}
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


def _kv_table(pairs: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in pairs) + "</table>"


def _reason_html(reason: str) -> str:
    lines = (reason or "").strip().splitlines() or [""]
    first = _e(lines[0][:300])
    if len(lines) == 1 and len(lines[0]) <= 300:
        return first
    return f"{first}<details><summary>full reason</summary><pre>{_e(reason[-6000:])}</pre></details>"


# -- the answer (issue: which backend under my constraints) -------------------------------------
def decision_html(decision: choose.Decision) -> str:
    parts = ["<h2>Which backend</h2>", f'<p class="note">{_e(decision.heading)}</p>']
    for d in decision.blocks:
        parts.append(f"<h3>{_e(d.block.title)}</h3>")
        parts.append(f'<p class="answer"><b>Answer:</b> {_e(d.answer)}.</p>')
        checked = [c for c in decision.constraints if any(c.text in v.checks for v in d.verdicts)]
        head = ["backend", "verdict"] + ([d.objective.target.label] if d.objective else []) + [c.text for c in checked]
        rows = ["<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
        for v in d.ranked + [v for v in d.verdicts if v not in d.ranked]:
            cls = "bad" if v.kind in ("rejected", "failed") else "absent" if v.kind == "unknown" else ""
            tds = [f"<th>{_e(v.column)}</th>", f'<td class="{cls}">{_e(choose.verdict_text(d, v))}</td>']
            if d.objective:
                obj = d.objective.target.fmt(v.objective) if v.objective is not None else "—"
                tds.append(f'<td class="num">{_e(obj)}</td>')
            tds += [f"<td>{_e(v.checks.get(c.text, '—'))}</td>" for c in checked]
            rows.append("<tr>" + "".join(tds) + "</tr>")
        parts.append("<table>" + "".join(rows) + "</table>")
        if d.pareto_axes:
            parts.append(f'<p class="note"><b>{_e(choose.pareto_text(d))}</b></p>')
        parts += [f'<p class="note">{_e(n)}</p>' for n in d.notes]
    return "\n".join(parts)


def overview_html(items: list[choose.Overview]) -> str:
    parts = ["<h2>Answer</h2>", '<p class="note">No constraints given: per block, the backends no other beats on '
             "every axis (the Pareto front) and how each compares with the baseline. Add --require / "
             "report.require to ask which backend meets your limits.</p>"]
    for o in items:
        parts.append(f"<h3>{_e(o.block.title)}</h3>")
        if o.pareto_axes:
            parts.append(f'<p class="answer"><b>{_e(choose.pareto_text_of(o.pareto, o.pareto_axes))}.</b></p>')
        if o.lines:
            parts.append("<ul>" + "".join(f"<li>{_e(line)}</li>" for line in o.lines) + "</ul>")
        parts += [f'<p class="note">{_e(n)}.</p>' for n in o.notes]
    return "\n".join(parts)


def capacity_html(ans: capacity.CapacityAnswer) -> str:
    parts = [f"<h2>{_e(ans.heading)}</h2>"]
    if ans.slo is None:
        return "\n".join(parts + [f'<p class="note">{_e(capacity.NEEDS_SLO.replace("`", ""))}.</p>'])
    parts.append(f'<p class="note">{_e(capacity.RULE)}.</p>')
    if (floors := capacity.floors_text(ans)) is not None:
        parts.append(f'<p class="note">{_e(floors)}.</p>')
    for g in ans.groups:
        parts += [f"<h3>{_e(g.title)}</h3>", f'<p class="answer"><b>Answer:</b> {_e(g.answer)}.</p>']
        rows = ["<tr>" + "".join(f"<th>{_e(h)}</th>" for h in capacity.HEAD) + "</tr>"]
        for rank, r in capacity.ranked_rows(g):
            cls = "bad" if r.kind in ("rejected", "failed") else "absent" if r.kind in ("unknown", "none") else ""
            rank_text, column, text, binding, notes = capacity.row_cells(r, rank)
            rows.append(f"<tr><td>{_e(rank_text)}</td><th>{_e(column)}</th><td class=\"{cls}\">{_e(text)}</td>"
                        f"<td>{_e(binding)}</td><td>{_e(notes)}</td></tr>")
        parts.append("<table>" + "".join(rows) + "</table>")
    return "\n".join(parts)


# -- the results tables ---------------------------------------------------------------------------
def block_html(block: Block) -> str:
    parts = [f"<h3>{_e(block.title)}</h3>"]
    if block.baseline_note:
        parts.append(f'<p class="warn">{_e(block.baseline_note)}</p>')
    metrics = block.measured()
    noisy = {m.key: noisy_text(block, m) for m in metrics}
    spread_col = any(noisy.values())
    head = ["", *block.columns] + [f"Noisy (CV > {NOISY_CV_PCT:g}%)"] * spread_col
    rows = ["<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    row_notes = []
    for group in GROUPS:
        for m in (m for m in metrics if m.group == group):
            tds = []
            views, note = row_cells(block, m)
            if note:
                row_notes.append(note)
            for v in views:
                title = f' title="{_e(v.detail)}"' if v.detail else ""
                if v.kind != "value":
                    tds.append(f'<td class="{v.kind}">{_e(v.text)}</td>')
                    continue
                inside = ", ".join(x for x in (_e(v.relative) if v.relative else "",
                                               f'<span class="ns">{NS}</span>' if v.not_significant else "") if x)
                cls = "num noisy" if v.noisy else "num"
                tds.append(f'<td class="{cls}"{title}>{_e(v.value)}{f" ({inside})" if inside else ""}</td>')
            extra = [f"<td>{_e(noisy[m.key] or '')}</td>"] if spread_col else []
            row_cls = ' class="noisy"' if noisy[m.key] else ""
            rows.append(f"<tr{row_cls}><th>{_e(m.label)}</th>{''.join(tds + extra)}</tr>")
    pad = "<td></td>" if spread_col else ""
    for _, label, texts in block.info_rows():
        rows.append(f"<tr><th>{_e(label)}</th>" + "".join(f"<td>{_e(info_cell(t))}</td>" for t in texts) + pad
                    + "</tr>")
    status = "".join(f'<td class="{"" if c.ok else "failed"}">{_reason_html(c.status_text(300))}</td>'
                     for c in block.cells)
    rows.append(f"<tr><th>Status</th>{status}{pad}</tr>")
    parts.append("<table>" + "".join(rows) + "</table>")
    parts += [f'<p class="note">{_e(n)}.</p>' for n in row_notes]
    if any(m.group == "prepare" for m in metrics):
        parts.append(f'<p class="note">{_e(ONE_OFF_NOTE)}.</p>')
    for why, ms in block.not_measured().items():
        parts.append(f'<p class="note">Not measured ({_e(why)}): {_e("; ".join(m.label for m in ms))}.</p>')
    return "\n".join(parts)


def results_html(table: Table) -> str:
    if table.baseline is None:
        line = "No baseline: no records."
    elif table.baseline_problem:
        line = f"Baseline: <b>{_e(table.baseline)}</b> ({_e(table.baseline_source)}) — " \
               f'<span class="warn">{_e(table.baseline_problem)}</span>.'
    else:
        line = f"Baseline: <b>{_e(table.baseline)}</b> ({_e(table.baseline_source)}); relative change in parentheses."
    parts = ["<h2>Results vs baseline</h2>", f"<p>{line}</p>", f'<p class="note">{_e(SPREAD_NOTE)}.</p>',
             f'<p class="note"><span class="noisy-key">Yellow</span> cells are noisy: their repeats vary more than '
             f"{NOISY_CV_PCT:g}% (coefficient of variation), so the machine, not the backend, may have moved the "
             "number; hover a number for its interval and spread.</p>"]
    return "\n".join(parts + [block_html(b) for b in table.blocks])


# -- failures, damaged records, environment -----------------------------------------------------
def failures_html(table: Table) -> str:
    bad = [c for c in table.cells if not c.ok]
    if not bad:
        return '<h2>Failed runs</h2>\n<p class="note">None: every run and batch size finished.</p>'
    head = "<tr><th>backend</th><th>model</th><th>workload</th><th>parameters</th><th>batch / rate</th><th>status</th>" \
           "<th>reason</th></tr>"
    trs = "".join(
        f"<tr><td>{_e(c.backend)}</td><td>{_e(c.record.model)}</td><td>{_e(c.record.workload)}</td>"
        f"<td>{_e(', '.join(f'{k.rsplit(chr(46), 1)[-1]}={param_text(v)}' for k, v in c.block_params.items()))}</td>"
        f"<td>{_e(_load_text(c))}</td>"
        f'<td class="bad">{_e(c.status)}</td><td>{_reason_html(c.reason or "")}</td></tr>'
        for c in bad)
    return f"<h2>Failed runs</h2>\n<table>{head}{trs}</table>"


def _load_text(cell: Cell) -> str:
    """A failed cell's load: its batch size, its offered rate ("2 req/s", "all at once"), or "all" (the run
    failed before any load point, so every one)."""
    if cell.batch_size is not None:
        return str(cell.batch_size)
    return cell.point.where if cell.load is not None else "all"


def damaged_html(table: Table) -> str:
    if not table.damaged:
        return ""
    items = "".join(f"<li><code>{_e(p)}</code>: {_e(why)}</li>" for p, why in table.damaged)
    return (f'<h2>Damaged records</h2>\n<p class="warn">{len(table.damaged)} record file(s) could not be read and are '
            f"left out of every table and plot:</p><ul>{items}</ul>")


def environment_html(table: Table) -> str:
    head = ("<tr><th>backend</th><th>parameters</th><th>status</th><th>load average start → end</th><th>cores</th>"
            "<th>torch threads</th><th>wall s</th></tr>")
    trs = []
    for run in table.runs:
        rec = run.record
        flat = flatten(rec.config or {})
        params = ", ".join(f"{p.short}={param_text(flat[p.path])}" for p in table.params if p.path in flat)
        load = f"{_opt(run.load_start)} → {_opt(run.load_end)}" + (" (busy)" if run.busy else "")
        trs.append(f"<tr><td>{_e(rec.backend)}</td><td>{_e(params or '—')}</td><td>{_e(rec.status)}</td>"
                   f"<td>{_e(load)}</td><td>{_e(_opt(run.cpu_count))}</td><td>{_e(_opt(run.torch_threads))}</td>"
                   f"<td>{_e(_opt(rec.wall_s))}</td></tr>")
    note = ('<p class="note">1-minute load average at the start and end of each run; at or above the core count '
            "(busy), other work shared the CPU and CPU timings are suspect.</p>")
    return "<h2>Environment</h2>\n" + _kv_table(table.environment) + note + f"<table>{head}{''.join(trs)}</table>"


def _opt(v: Any) -> str:
    return "—" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


# -- plots and the page ---------------------------------------------------------------------------
def plot_html(plot: plots.Plot, folder: Path, root: Path) -> str:
    parts = [f"<h2>{_e(plot.title)}</h2>"]
    path = folder / f"{plot.name}.png"
    png = None
    if plot.figure is not None:
        buf = io.BytesIO()
        try:
            plot.figure.savefig(buf, format="png", dpi=100)
            png = buf.getvalue()
        except Exception as exc:  # noqa: BLE001 — one plot never costs the rest of the report
            plot.notes.append(f"This plot could not be drawn ({type(exc).__name__}: {str(exc)[:200]}).")
    if png is not None:
        safefs.write_bytes(path, png, root)
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<img alt="{_e(plot.title)}" src="data:image/png;base64,{data}">')
    else:
        safefs.check_path(path, root)
        path.unlink(missing_ok=True)  # a plot from an earlier report of this folder no longer holds
    parts += [f'<p class="note">{_e(n)}</p>' for n in plot.notes]
    return "\n".join(parts)


def page(title: str, body: str) -> str:
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>\n"
            f"<h1>{_e(title)}</h1>\n{body}\n<script>{SCRIPT}</script>\n</body></html>\n")


def write(root: Path, table: Table, decision: choose.Decision | None = None,
          capacity_answer: capacity.CapacityAnswer | None = None) -> Path:
    """Write `root/report.html` and `root/plots/*.png`; returns the page's path. `capacity_answer`: serve
    runs' capacity under the SLO, shown after the answer (default: the table's own, as table.md's)."""
    if capacity_answer is None:
        capacity_answer = capacity.answer(table, table.slo, decision.constraints if decision else [])
    root = Path(root)
    folder = root / PLOTS_DIR
    safefs.check_path(folder, root)
    folder.mkdir(parents=True, exist_ok=True)
    body = []
    if table.damaged:
        body.append(f'<p class="warn">Warning: {len(table.damaged)} damaged record file(s) left out '
                    "(listed below).</p>")
    if decision is not None:
        body.append(decision_html(decision))
    elif table.blocks:
        body.append(overview_html(choose.overview(table)))
    if capacity_answer is not None:
        body.append(capacity_html(capacity_answer))
    body += [plot_html(p, folder, root) for p in plots.all_plots(table, pareto_of(decision))]
    body += [results_html(table), failures_html(table), damaged_html(table), environment_html(table)]
    path = root / REPORT_NAME
    safefs.write_text(path, page(table.title, "\n".join(b for b in body if b)), root)
    return path


def pareto_of(decision: choose.Decision | None) -> Callable[[Block], list[str]]:
    """The Pareto front of a block: from the decision when constraints were given, else unconstrained."""
    by_block = {id(d.block): d.pareto for d in decision.blocks} if decision else {}

    def front(block: Block) -> list[str]:
        if id(block) in by_block:
            return by_block[id(block)]
        return choose.decide_block(block, [], None).pareto
    return front
