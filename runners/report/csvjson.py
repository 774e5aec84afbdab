"""The table model as flat rows: table.csv and rows.jsonl (one row per run × load point: a batch size, or an
offered request rate of a serve run; the same rows),
and results.jsonl (the records themselves).

Columns: the cell's coordinates (`batch_size`, or for a serve row `offered_rate_per_s`, "inf" for all at
once; the other is empty) and status; every parameter that varies in the folder (dotted config
path, e.g. `workload.new_tokens`); `baseline`; each measured registry metric under its key, and for a
metric measured over repeats its spread columns (see runners.report.spread: `ttft_p90_ms`,
`output_tokens_p10_per_s`, `<name>_min<unit>`, `<name>_max<unit>`, `<name>_cv_pct`, `<name>_n`), the
median's 95% interval `<name>_ci_low<unit>`, `<name>_ci_high<unit>` (empty below 6 repeats), its
change vs the baseline `<name>_vs_baseline_pct` with that change's 95% interval
`<name>_vs_baseline_ci_low_pct`, `<name>_vs_baseline_ci_high_pct` (empty below 5 repeats a side) and
`<name>_within_spread` (true: the `n.s.` mark, the interval includes 0 or there is none);
what the engine ran (`linear_kernels`, `census`, `placement`, ...); the host state
(`load_average_start`, `load_average_end`, `torch_threads`); and `absent_reasons` (`key: why; ...`).
A metric not measured is an empty field, never 0. `pd.read_json("rows.jsonl", lines=True)` loads it.
"""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from runners.record.schema import RunRecord
from runners.report.environment import run_env
from runners.report.metrics import INFO, interval_columns, spread_columns, split_unit, tails
from runners.report.table import Block, Cell, Table, param_text

# offered_rate_per_s: a serve row's offered request rate ("inf": every request at once); empty offline.
ID_COLUMNS = ["backend", "engine", "model", "workload", "batch_size", "offered_rate_per_s", "weights", "device",
              "status", "reason"]
ENV_COLUMNS = ["run_id", "started_at", "wall_s", "load_average_start", "load_average_end", "torch_threads"]


def _flat(value: Any) -> Any:
    return param_text(value) if isinstance(value, (list, tuple, dict)) else value


def _metric_columns(cell: Cell, block: Block | None, cat) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in cat:
        got = cell.values.get(m.key)
        if got is None:
            continue
        out[m.key] = got.value
        sp = got.spread
        if sp is not None:
            names = spread_columns(m)
            q1, q2 = tails(m.better)
            values = [sp.quantiles.get(q1), sp.quantiles.get(q2), sp.min, sp.max, sp.cv_pct, sp.n]
            out.update({k: v for k, v in zip(names, values) if v is not None})
            out.update({k: v for k, v in zip(interval_columns(m)[0], (sp.ci_low, sp.ci_high)) if v is not None})
        cmp = block.compare(cell, m.key) if block is not None else None
        if cmp is not None:
            name = split_unit(m.key)[0]
            if cmp.rel_pct is not None:
                out[f"{name}_vs_baseline_pct"] = cmp.rel_pct
            pct = (cmp.ci_low_pct, cmp.ci_high_pct)
            out.update({k: v for k, v in zip(interval_columns(m)[1], pct) if v is not None})
            if cmp.within_spread is not None:
                out[f"{name}_within_spread"] = cmp.within_spread
    return out


def _rate(rate_per_s: float | None) -> float | str | None:
    """JSON has no infinity: "all at once" is written "inf", as the records write it."""
    return "inf" if rate_per_s is not None and math.isinf(rate_per_s) else rate_per_s


def flat_rows(table: Table) -> list[dict[str, Any]]:
    """One dict per cell (run × load point), in table order; absent metrics are absent keys."""
    home: dict[int, Block] = {}
    for block in table.blocks:
        for c in block.cells:
            home.setdefault(id(c), block)
    rows = []
    for cell in table.cells:
        rec = cell.record
        block = home.get(id(cell))
        row: dict[str, Any] = {"backend": rec.backend, "engine": rec.engine, "model": rec.model,
                               "workload": rec.workload, "batch_size": cell.batch_size,
                               "offered_rate_per_s": _rate(cell.rate_per_s), "weights": rec.weights,
                               "device": rec.device, "status": cell.status, "reason": cell.reason}
        row.update({p.path: _flat(cell.params[p.path]) for p in table.params if p.path in cell.params})
        if table.baseline:
            row["baseline"] = table.baseline
        row.update(_metric_columns(cell, block, table.catalogue))
        row.update({i.key: cell.info[i.key] for i in INFO if i.key != "engine" and i.key in cell.info})
        env = run_env(rec)
        row.update(run_id=rec.run_id, started_at=rec.started_at, wall_s=rec.wall_s,
                   load_average_start=env.load_start, load_average_end=env.load_end,
                   torch_threads=env.torch_threads)
        reasons = {k: why for k, why in cell.absent.items() if k not in cell.implicit and why != cell.status}
        if reasons:
            row["absent_reasons"] = "; ".join(f"{k}: {why}" for k, why in reasons.items())
        rows.append({k: v for k, v in row.items() if v is not None or k in ID_COLUMNS})
    return rows


def columns(table: Table, rows: list[dict[str, Any]]) -> list[str]:
    """Every column some row has, in a fixed order: coordinates, parameters, metrics (table order), info."""
    order = ID_COLUMNS + [p.path for p in table.params] + ["baseline"]
    for m in table.catalogue:
        name = split_unit(m.key)[0]
        median_ci, change_ci = interval_columns(m)
        order += [m.key, *spread_columns(m), *median_ci, f"{name}_vs_baseline_pct", *change_ci,
                  f"{name}_within_spread"]
    order += [i.key for i in INFO] + ENV_COLUMNS + ["absent_reasons"]
    present = {k for r in rows for k in r}
    return [k for k in dict.fromkeys(order) if k in present or k in ID_COLUMNS]


def csv_text(table: Table, rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=columns(table, rows), restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def rows_jsonl_text(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, default=str) + "\n" for row in rows)


def records_jsonl_text(records: list[RunRecord]) -> str:
    return "".join(json.dumps(rec.to_dict(), default=str) + "\n" for rec in records)
