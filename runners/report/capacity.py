"""Serving under an SLO, at report time: goodput and attainment from the raw samples, and the capacity answer.

The SLO is a report setting (`report.slo`, in sweep.json like `report.require`; `--slo` of
`python -m runners.report`), never part of a measurement: records are written without goodput, and the
report recomputes `goodput_per_s` and `slo_attainment_pct` of every serve load point that keeps its
per-request samples (runners.measure.serving, the one place serving statistics are computed), in memory,
on copies: a record.json is never rewritten, and the folder's results.jsonl keeps the records as written.

**Capacity** per backend (per model × weights × device × parameters): the highest offered rate up to which
every load point meets every percentile term of the SLO (runners.measure.serving.capacity: measured, or
interpolated between it and the lowest failing rate, with the term that binds). The backends are ranked by
it, highest first; a run that ended before its proof (e.g. cut during the census after its server) is shown
with its capacity, never ranked. A record-level floor from `--require` / `report.require` (quality such as
`kl_mean<=0.05`, or a run-level number such as `weights<=4GiB`) rejects a backend whatever its capacity,
with its value; a floor the record did not measure leaves it unknown, with the reason. A backend whose
run was refused (an engine with no server) or failed is named with its reason.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Literal

from runners.measure.serving import Capacity, RequestSample, Slo, SloError, capacity, load_point_stats
from runners.record.schema import Point, RunRecord
from runners.report.choose import Constraint
from runners.report.table import INVALID, Block, Cell, Table, param_text

SLO_KEYS = ("goodput_per_s", "slo_attainment_pct")
NO_SAMPLES = "the record keeps no per-request samples to judge the SLO by"
EXAMPLE = "ttft_p90<=500ms,tpot_p90<=50ms"
NEEDS_SLO = (f"Capacity needs an SLO: give `report.slo` in the sweep's config or `--slo` to `python -m runners.report` "
             f"(e.g. `{EXAMPLE}`)")
# Record-level metrics a --require floor may hold a whole serve run to (the per-point ones are judged per
# load point in the blocks' answers).
RECORD_SOURCES = ("quality", "run")


def parse_slo(text: str | None, flag: str = "report.slo") -> Slo | None:
    """The SLO from its text, or None; SloError (one line, naming the valid forms, under `flag`) otherwise."""
    try:
        return Slo.parse(text)
    except SloError as exc:
        msg = str(exc)
        raise SloError(flag + msg[len("report.slo"):] if msg.startswith("report.slo") else msg) from None


def _md(text: object) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def rate_text(rate_per_s: float) -> str:
    """2 req/s, 0.5 req/s, all at once."""
    return Point(None, rate_per_s=rate_per_s).where


def _serve_point(p: Point) -> bool:
    return p.rate_per_s is not None


def with_slo(records: list[RunRecord], slo: Slo | None) -> list[RunRecord]:
    """`records`, with every serve load point's goodput and SLO attainment computed under `slo` from its
    samples; each changed record is a copy (its points and their metrics too), the others the same objects."""
    if slo is None or not slo.terms:
        return list(records)
    out = []
    for rec in records:
        if not any(_serve_point(p) for p in rec.points):
            out.append(rec)
            continue
        points = [_judged(p, slo) if _serve_point(p) else p for p in rec.points]
        out.append(dataclasses.replace(rec, points=points))
    return out


def _judged(point: Point, slo: Slo) -> Point:
    p = dataclasses.replace(point, metrics=dict(point.metrics), absent=dict(point.absent))
    if p.status != "ok":
        return p
    rows = p.facts.get("requests") or []
    if not rows:
        p.absent.update(dict.fromkeys(SLO_KEYS, NO_SAMPLES))
        for key in SLO_KEYS:
            p.metrics.pop(key, None)
        return p
    stats = load_point_stats([RequestSample.from_compact(r) for r in rows], p.rate_per_s, slo)
    for key in SLO_KEYS:
        if key in stats.metrics:
            p.metrics[key] = stats.metrics[key]
            p.absent.pop(key, None)
        else:
            p.metrics.pop(key, None)
            p.absent[key] = stats.absent.get(key) or "no completed request"
    return p


# -- the capacity answer ----------------------------------------------------------------------------------
@dataclass
class CapacityRow:
    column: str  # the backend's column in the group's blocks
    backend: str
    # ranked: it has a capacity; none: no measured rate meets the SLO; rejected / unknown: a --require floor
    # failed or was not measured; failed: the run (or every load point) failed, or was refused.
    kind: Literal["ranked", "none", "rejected", "unknown", "failed"]
    capacity: Capacity | None = None
    text: str = ""  # the capacity in words, or why there is none
    binding: str = ""  # the term that binds, at which rate
    notes: list[str] = field(default_factory=list)  # load points that failed, what a floor found, ...

    @property
    def rate_per_s(self) -> float | None:
        return self.capacity.rate_per_s if self.capacity is not None else None


@dataclass
class CapacityGroup:
    title: str  # model · serve · parameters · weights · device
    rows: list[CapacityRow]  # ranked rows first (highest capacity first), then the others
    answer: str


@dataclass
class CapacityAnswer:
    slo: Slo | None
    floors: list[Constraint]  # the record-level --require terms held (quality, run)
    groups: list[CapacityGroup]

    @property
    def heading(self) -> str:
        return f"Capacity under the SLO ({self.slo.text})" if self.slo is not None else "Capacity under an SLO"


def _group_title(block: Block) -> str:
    parts = [block.model, block.workload]
    parts += [f"{block.shorts[p]}={param_text(v)}" for p, v in block.params.items()]
    parts += [f"{block.weights} weights", block.device]
    return " · ".join(str(p) for p in parts)


def serve_groups(table: Table) -> dict[tuple, list[Block]]:
    """The serve blocks of `table` by model × workload × weights × device × parameters (rates ascending)."""
    out: dict[tuple, list[Block]] = {}
    for b in table.blocks:
        if b.serves:
            params = json.dumps(sorted(b.params.items()), default=str)
            key = (b.model, b.workload, b.weights, b.device, params)
            out.setdefault(key, []).append(b)
    return out


def _floor_checks(cell: Cell, floors: list[Constraint]) -> tuple[list[str], list[str]]:
    """(failed, unmeasured) record-level floors of one backend, each with its value or reason."""
    failed, unmeasured = [], []
    for c in floors:
        value, _ = c.target.value(cell)
        if value is None:
            unmeasured.append(f"{c.target.text} ({cell.absent.get(c.target.metric.key, 'not measured')})")
        elif not c.holds(value):
            failed.append(f"{c.target.text} = {c.target.fmt(value)}, needs {c.op} {c.target.fmt(c.threshold)}")
    return failed, unmeasured


def _capacity_words(cap: Capacity, rates: list[float]) -> tuple[str, str]:
    """(the capacity, what binds) in words, from capacity()'s answer over the measured `rates`."""
    if cap.rate_per_s is None:
        lowest = rate_text(min(rates)) if rates else "—"
        return "none", f"{cap.binding} at {lowest}" if cap.binding else "no measured rate meets the SLO"
    above = [r for r in rates if r > cap.rate_per_s]
    if cap.how == "interpolated":
        lo = max(r for r in rates if r <= cap.rate_per_s)
        hi = min(above)
        return (f"{cap.rate_per_s:.3g} req/s (interpolated between {rate_text(lo)} and {rate_text(hi)})",
                f"{cap.binding} at {rate_text(hi)}")
    if not above:
        every = "every measured rate meets the SLO"
        if math.isinf(cap.rate_per_s):
            finite = [r for r in rates if math.isfinite(r)]
            # A burst of a fixed number of requests is no rate: say the highest sustained one met.
            text = f"≥ {rate_text(max(finite))}, and all at once" if finite else "all at once"
            return text, f"none: {every}, all at once included"
        return f"≥ {rate_text(cap.rate_per_s)} (the highest measured rate)", f"none: {every}"
    return rate_text(cap.rate_per_s), f"{cap.binding} at {rate_text(min(above))}" if cap.binding else ""


def _row(column: str, cells: list[Cell], slo: Slo, floors: list[Constraint]) -> CapacityRow:
    first = cells[0]
    row = CapacityRow(column, first.backend, "failed")
    if first.status == INVALID:
        row.text = first.status_text(200)
        return row
    ok = [c for c in cells if c.ok and c.rate_per_s is not None]
    broken = [c for c in cells if not c.ok and c.rate_per_s is not None]
    if broken and ok:
        row.notes.append("load points that failed: " + "; ".join(f"{rate_text(c.rate_per_s)} {c.status}"
                                                                  for c in broken))
    if not ok:
        row.text = first.status_text(200) if not broken else broken[0].status_text(200)
        return row
    rates = sorted(c.rate_per_s for c in ok)
    row.capacity = capacity([(c.rate_per_s, c.point.metrics) for c in ok], slo)
    row.text, row.binding = _capacity_words(row.capacity, rates)
    cap = row.capacity.rate_per_s
    above = sorted((c for c in broken if cap is not None and c.rate_per_s > cap), key=lambda c: c.rate_per_s)
    if above and not any(r > cap for r in rates):
        # A load point that failed above the highest passing one stops it there: no "at least" about it.
        row.text = rate_text(cap)
        row.binding = f"the load point at {rate_text(above[0].rate_per_s)} failed ({above[0].status})"
    # Said, never ranked: a run that ended before it proved what ran (the census after its server), or a
    # floor it fails or did not measure (a floor decides before speed does).
    unproven = next((c.run_note for c in ok if c.run_note), None)
    failed, unmeasured = ([], []) if unproven else _floor_checks(ok[0], floors)
    if unproven or failed or unmeasured:
        row.notes.insert(0, f"capacity {row.text}, not ranked" + (f" ({row.binding})" if row.binding else ""))
        row.kind, row.binding = ("rejected" if failed else "unknown"), ""
        row.text = (f"not ranked: {unproven}" if unproven else "rejected: " + "; ".join(failed) if failed
                    else "unknown: not measured: " + "; ".join(unmeasured))
    else:
        row.kind = "ranked" if row.capacity.rate_per_s is not None else "none"
    return row


_KIND_ORDER = {"ranked": 0, "none": 1, "rejected": 2, "unknown": 3, "failed": 4}


def capacity_group(blocks: list[Block], slo: Slo, floors: list[Constraint]) -> CapacityGroup:
    by_record: dict[int, tuple[str, list[Cell]]] = {}
    for b in blocks:
        for col, c in zip(b.columns, b.cells):
            entry = by_record.setdefault(id(c.record), (col, []))
            if all(c is not o for o in entry[1]):
                entry[1].append(c)  # a cell with no load point sits in every block of its group: once
    rows = [_row(col, cells, slo, floors) for col, cells in by_record.values()]
    rows.sort(key=lambda r: (_KIND_ORDER[r.kind], -(r.rate_per_s or 0.0) if r.kind == "ranked" else 0.0))
    ranked = [r for r in rows if r.kind == "ranked"]
    if not ranked:
        answer = "no backend meets the SLO at any measured rate" + (" and every floor" if floors else "")
    else:
        lead = ranked[0]
        tie = [r for r in ranked[1:] if r.rate_per_s == lead.rate_per_s]
        answer = (f"tie between {', '.join(r.column for r in [lead, *tie])}: capacity {lead.text}" if tie else
                  f"{lead.column}: the highest capacity, {lead.text}"
                  + (f", of the {len(ranked)} backends that meet the SLO" if len(ranked) > 1 else ""))
    return CapacityGroup(_group_title(blocks[0]), rows, answer)


def answer(table: Table, slo: Slo | None, constraints: list[Constraint] | None = None) -> CapacityAnswer | None:
    """The capacity answer of a table's serve blocks (None: the table has none)."""
    groups = serve_groups(table)
    if not groups:
        return None
    floors = [c for c in constraints or [] if c.target.metric.source in RECORD_SOURCES]
    if slo is None or not slo.terms:
        return CapacityAnswer(None, floors, [])
    return CapacityAnswer(slo, floors, [capacity_group(bs, slo, floors) for bs in groups.values()])


def row_cells(row: CapacityRow, rank: int | None) -> list[str]:
    """# | backend | capacity | what binds | notes: one row of the capacity table, shared by md and html."""
    return [str(rank) if rank else "—", row.column, row.text, row.binding or "—", "; ".join(row.notes) or ""]


HEAD = ["#", "backend", "capacity", "what binds", "notes"]


def ranked_rows(group: CapacityGroup) -> list[tuple[int | None, CapacityRow]]:
    """Each row with its rank (tied capacities share one), None for a row not ranked."""
    ranked = [r for r in group.rows if r.kind == "ranked"]
    return [(1 + sum(o.rate_per_s > r.rate_per_s for o in ranked) if r.kind == "ranked" else None, r)
            for r in group.rows]


def floors_text(ans: CapacityAnswer) -> str | None:
    if not ans.floors:
        return None
    return "Floors from --require / report.require: " + ", ".join(c.explained for c in ans.floors)


def markdown(ans: CapacityAnswer) -> str:
    """The capacity answer as a markdown section (table.md, and the CLI when asked)."""
    out = [f"## {ans.heading}", ""]
    if ans.slo is None:
        return "\n".join(out + [f"{NEEDS_SLO}.", ""]) + "\n"
    out += [RULE, ""]
    if (floors := floors_text(ans)) is not None:
        out += [f"{floors}.", ""]
    for g in ans.groups:
        out += [f"### {g.title}", "", f"**Answer:** {_md(g.answer)}.", ""]
        out.append("| " + " | ".join(HEAD) + " |")
        out.append("|" + "---|" * len(HEAD))
        for rank, r in ranked_rows(g):
            out.append("| " + " | ".join(_md(x) for x in row_cells(r, rank)) + " |")
        out.append("")
    return "\n".join(out) + "\n"


RULE = ("Capacity: the highest offered rate up to which every load point meets every term of the SLO at its "
        "percentile over the point's requests, with no failed request; between that rate and the lowest failing "
        "one, where the binding term crosses its limit (linear interpolation); the all-at-once burst counts only "
        "when every sustained rate passes. Goodput and SLO attainment in the "
        "tables below are computed under this SLO from each load point's per-request samples")
