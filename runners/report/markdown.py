"""The table model as table.md: published-table style, one block per model × workload × load (batch size,
or offered request rate) × parameter values; metrics down, backends across, the change vs the baseline in parentheses."""
from __future__ import annotations

from runners.report import capacity, choose
from runners.report.metrics import GROUPS
from runners.report.spread import NOISY_CV_PCT
from runners.report.table import Block, Table, flatten, param_text
from runners.report.views import ONE_OFF_NOTE, SPREAD_NOTE, info_cell, noisy_text, row_cells


def _md(text: object) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def _row(cells: list[object]) -> str:
    return "|" + "|".join(f" {_md(c)} " if str(c) else " " for c in cells) + "|"


def baseline_line(table: Table) -> str:
    if table.baseline is None:
        return "No baseline: no records."
    line = f"Baseline: **{table.baseline}** ({table.baseline_source}); relative change vs it in parentheses. "
    if table.baseline_problem:
        line = f"Baseline: **{table.baseline}** ({table.baseline_source}) — {table.baseline_problem}. "
    return line + SPREAD_NOTE + "."


def block_markdown(block: Block) -> list[str]:
    out = [f"### {block.title}", ""]
    if block.baseline_note:
        out += [f"_{block.baseline_note}._", ""]
    metrics = block.measured()
    noisy = {m.key: noisy_text(block, m) for m in metrics}
    spread_col = any(noisy.values())
    head = ["", *block.columns] + ([f"Noisy (CV > {NOISY_CV_PCT:g}%)"] if spread_col else [])
    out.append(_row(head))
    out.append("|" + "---|" * len(head))
    row_notes = []
    for group in GROUPS:
        for m in (m for m in metrics if m.group == group):
            views, note = row_cells(block, m)
            if note:
                row_notes.append(note)
            out.append(_row([m.label, *(v.text for v in views)] + ([noisy[m.key] or ""] if spread_col else [])))
    pad = [""] if spread_col else []
    for _, label, texts in block.info_rows():
        out.append(_row([label, *(info_cell(t) for t in texts), *pad]))
    out.append(_row(["Status", *(c.status_text() for c in block.cells), *pad]))
    out.append("")
    out += [f"{_md(n)}.  " for n in row_notes]
    if any(m.group == "prepare" for m in metrics):
        out.append(f"{ONE_OFF_NOTE}.  ")
    for why, ms in block.not_measured().items():
        out.append(f"Not measured ({_md(why)}): {'; '.join(m.label for m in ms)}.  ")
    out.append("")
    return out


def environment_markdown(table: Table) -> list[str]:
    out = ["## Environment", "", "| | |", "|---|---|"]
    out += [_row([k, v]) for k, v in table.environment]
    out += ["", "Runs (1-minute load average at the start and end of each run; at or above the core count, other "
                "work shared the CPU):", "",
            _row(["backend", "parameters", "status", "load start → end", "cores", "torch threads", "wall s"]),
            "|---|---|---|---|---|---|---|"]
    for run in table.runs:
        rec = run.record
        flat = flatten(rec.config or {})
        params = ", ".join(f"{p.short}={param_text(flat[p.path])}" for p in table.params if p.path in flat) or "—"
        load = f"{_num(run.load_start)} → {_num(run.load_end)}" + (" (busy)" if run.busy else "")
        out.append(_row([rec.backend, params, rec.status, load, _num(run.cpu_count), _num(run.torch_threads),
                         _num(rec.wall_s)]))
    out.append("")
    return out


def _num(v: object) -> str:
    return "—" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def invalid_markdown(table: Table) -> list[str]:
    if not table.invalid:
        return []
    out = ["## Invalid records", "", "These records fail their own checks: their cells are shown as "
           "`invalid_record`, never compared with another or plotted:", ""]
    out += [f"- {_md(backend)}: {_md(why)}" for backend, why in table.invalid]
    return out + [""]


def damaged_markdown(table: Table) -> list[str]:
    if not table.damaged:
        return []
    out = ["## Damaged records", "", "These record files could not be read and are left out of every table:", ""]
    out += [f"- `{path}`: {_md(why)}" for path, why in table.damaged]
    return out + [""]


def document(table: Table, decision: choose.Decision | None = None,
             capacity_answer: capacity.CapacityAnswer | None = None) -> str:
    """The whole table.md; `capacity_answer`: serve runs' capacity under the SLO, after the answer (default:
    the table's own, under its SLO and the decision's floors)."""
    if capacity_answer is None:
        capacity_answer = capacity.answer(table, table.slo, decision.constraints if decision else [])
    out = [f"# {table.title}", ""]
    if table.damaged:
        out += [f"**Warning:** {len(table.damaged)} damaged record file(s) left out (listed below).", ""]
    if table.invalid:
        out += [f"**Warning:** {len(table.invalid)} record(s) fail their own checks (listed below): shown, never "
                "compared or plotted.", ""]
    if decision is not None:
        out += [choose.markdown(decision), ""]
    elif table.blocks:
        out += [choose.overview_markdown(choose.overview(table)), ""]
    if capacity_answer is not None:
        out += [capacity.markdown(capacity_answer), ""]
    out += ["## Results", "", baseline_line(table), ""]
    if not table.blocks:
        out += ["_no records_", ""]
    for block in table.blocks:
        out += block_markdown(block)
    out += invalid_markdown(table) + damaged_markdown(table) + environment_markdown(table)
    return "\n".join(out).rstrip() + "\n"
