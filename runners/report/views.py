"""What one cell of a block says, as text: shared by the markdown and HTML writers so both read alike."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from runners.report.metrics import Metric, format_number, format_relative, format_value
from runners.report.spread import NOISY_CV_PCT
from runners.report.table import Block, Cell

NS = "n.s."
SPREAD_NOTE = (f"`{NS}`: inside the measurement spread (the two cells' min–max ranges over the repeats overlap, "
               f"or a side has fewer than 2 repeats); noisy: a cell's repeats vary more than {NOISY_CV_PCT:g}% "
               "(coefficient of variation)")


@dataclass(frozen=True)
class CellView:
    kind: Literal["value", "absent", "failed"]
    text: str  # the whole cell: `5.80 (+151%)`, `102 (+2.0%, n.s.)`, `n/a (CPU run: ...)`, `oom`
    value: str | None = None
    relative: str | None = None
    not_significant: bool = False
    noisy: bool = False
    detail: str | None = None  # the spread in words (a tooltip in HTML)


def metric_cell(block: Block, cell: Cell, m: Metric) -> CellView:
    got = cell.values.get(m.key)
    if got is None:
        if not cell.ok and m.source in ("repeats", "point", "derived"):
            return CellView("failed", cell.status)
        return CellView("absent", f"n/a ({cell.absent.get(m.key, m.absent_default)})")
    value = format_value(m, got.value)
    cmp = block.compare(cell, m.key)
    rel = format_relative(cmp.rel_pct) if cmp and cmp.rel_pct is not None else None
    ns = bool(cmp and cmp.within_spread)
    inside = ", ".join(x for x in (rel, NS if ns else None) if x)
    text = value + (f" ({inside})" if inside else "")
    detail = None
    sp = got.spread
    if sp is not None:
        cv = f"; CV {sp.cv_pct:.1f}%" if sp.cv_pct is not None else ""
        detail = (f"median {value}; min–max {format_value(m, sp.min)}–{format_value(m, sp.max)}{cv}; "
                  f"n={sp.n}")
    return CellView("value", text, value, rel, ns, bool(sp and sp.noisy), detail)


def noisy_text(block: Block, m: Metric) -> str | None:
    cells = block.noisy(m.key)
    if not cells:
        return None
    return ", ".join(f"{col} CV {format_number(cv, 3)}%" for col, cv in cells)


def info_cell(text: str | None) -> str:
    return text if text else "—"
