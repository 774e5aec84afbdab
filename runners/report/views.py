"""What one cell of a block says, as text: shared by the markdown and HTML writers so both read alike."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from runners.measure.stats import BOOTSTRAP_RESAMPLES, CI_LEVEL, MIN_BOOTSTRAP_REPEATS
from runners.report.metrics import Metric, format_number, format_relative, format_value
from runners.report.spread import NOISY_CV_PCT, Spread
from runners.report.table import Block, Cell, Comparison

NS = "n.s."
CI = f"{CI_LEVEL:.0%} CI"
SPREAD_NOTE = (f"{NS}: not significant — the {CI_LEVEL:.0%} percentile-bootstrap interval of the difference of "
               f"medians to the baseline ({BOOTSTRAP_RESAMPLES:,} resamples of each side, seeded by the samples) "
               f"includes 0, or a side has fewer than {MIN_BOOTSTRAP_REPEATS} repeats; noisy: a cell's repeats "
               f"vary more than {NOISY_CV_PCT:g}% (coefficient of variation)")


@dataclass(frozen=True)
class CellView:
    kind: Literal["value", "absent", "failed"]
    text: str  # the whole cell: `5.80 (+151%)`, `102 (+2.0%, n.s.)`, `n/a (CPU run: ...)`, `oom`
    value: str | None = None
    relative: str | None = None
    not_significant: bool = False
    noisy: bool = False
    detail: str | None = None  # the spread and the intervals in words (a tooltip in HTML)


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
    sp = got.spread
    detail = _detail(m, value, sp, cmp) if sp is not None else None
    return CellView("value", text, value, rel, ns, bool(sp and sp.noisy), detail)


def _detail(m: Metric, value: str, sp: Spread, cmp: Comparison | None) -> str:
    """`median 102 (95% CI 99.0–105); vs baseline +2.0% (95% CI -1.5% to +5.1%, n.s.); min–max ...; CV ...; n=10`"""
    if sp.ci_low is not None and sp.ci_high is not None:
        median = f"median {value} ({CI} {format_value(m, sp.ci_low)}–{format_value(m, sp.ci_high)})"
    else:
        median = f"median {value} (no {CI}: {sp.ci_reason})"
    parts = [median, _change_text(m, cmp) if cmp is not None and cmp.within_spread is not None else None,
             f"min–max {format_value(m, sp.min)}–{format_value(m, sp.max)}",
             f"CV {sp.cv_pct:.1f}%" if sp.cv_pct is not None else None, f"n={sp.n}"]
    return "; ".join(p for p in parts if p)


def _signed(m: Metric, x: float) -> str:
    return ("+" if x >= 0 else "") + format_value(m, x)


def _change_text(m: Metric, cmp: Comparison) -> str:
    """The change vs the baseline with its interval: in % of the baseline median, else in the metric's unit."""
    rel = format_relative(cmp.rel_pct) if cmp.rel_pct is not None else "change"
    mark = f", {NS}" if cmp.within_spread else ""
    if cmp.ci_low_pct is not None and cmp.ci_high_pct is not None:
        return f"vs baseline {rel} ({CI} {format_relative(cmp.ci_low_pct)} to {format_relative(cmp.ci_high_pct)}{mark})"
    if cmp.ci_low is not None and cmp.ci_high is not None:
        return f"vs baseline {rel} ({CI} {_signed(m, cmp.ci_low)} to {_signed(m, cmp.ci_high)}{mark})"
    return f"vs baseline {rel} ({NS}: {cmp.reason})"


ONE_OFF_NOTE = ("One-off preparation (a conversion, an export, a quantization) is paid by the first cell that "
                "needs it and cached for the others: shown, never compared with the baseline")


def row_cells(block: Block, m: Metric) -> tuple[list[CellView], str | None]:
    """A metric's row: every cell's view, and, when several cells lack it for the same reason, that reason
    once for the row (the cells then read `n/a`)."""
    views = [metric_cell(block, c, m) for c in block.cells]
    absent = [v for v in views if v.kind == "absent"]
    reasons = {v.text for v in absent}
    if len(absent) < 2 or len(reasons) != 1:
        return views, None
    reason = absent[0].text[len("n/a ("):-1]
    return [CellView("absent", "n/a") if v.kind == "absent" else v for v in views], f"{m.label}: n/a — {reason}"


def noisy_text(block: Block, m: Metric) -> str | None:
    cells = block.noisy(m.key)
    if not cells:
        return None
    return ", ".join(f"{col} CV {format_number(cv, 3)}%" for col, cv in cells)


def info_cell(text: str | None) -> str:
    return text if text else "—"
