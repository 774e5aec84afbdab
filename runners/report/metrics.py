"""How the report reads metrics: their declarations (backends.contract.Metric, made where each metric
is measured and carried by every record), the units a user may write in a constraint, the spread
columns, the info rows (what the engine says it ran), and number formatting. No metric is listed here:
`catalogue(records)` is the union of what quantbench's producers declare (runners.catalogue.shipped,
which also fixes the order) and what the records themselves declare (an outside engine's metrics).

Where a metric lives (`source`): `repeats` (a Stat per batch size, the only metrics with a spread),
`point` (one number per batch size), `run` (one number per run, in `record.load`), `quality` (one
number per run, in `record.quality.metrics`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from backends.contract import Catalogue, Metric
from backends.contract.metrics import GROUPS, RATIO, UNITS, Better, Group, Unit, split_unit, unit_of
from runners.catalogue import shipped

__all__ = ["GROUPS", "RATIO", "UNITS", "Better", "Group", "Metric", "Unit", "split_unit", "unit_of"]


def catalogue(records: Iterable[Any] = ()) -> Catalogue:
    """The shipped declarations, then every declaration a record carries that quantbench does not ship."""
    cat = shipped()
    for rec in records:
        for d in getattr(rec, "declared", None) or []:
            m = Metric.from_dict(d)
            if m.key not in cat:
                cat.add([m])
    return cat


def applicable(record: Any, cat: Catalogue) -> list[Metric]:
    """The metrics a record's run could have measured: what it declares, or (a version-2 record, which
    declares nothing) the shipped metrics of its task."""
    declared = {d.get("key") for d in getattr(record, "declared", None) or []}
    if declared:
        return [m for m in cat if m.key in declared]
    config = record.config if isinstance(record.config, dict) else {}
    task = config.get("task") or (config.get("model") or {}).get("task")
    return [m for m in cat if m.task is None or task is None or m.task == task]


# What a user may write after a number in a constraint (matched case-insensitively), per dimension.
UNIT_WORDS: dict[str, tuple[str, float]] = {
    **{w: ("time", s) for w, s in (("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0),
                                     ("sec", 1.0), ("min", 60.0))},
    **{w: ("memory", s) for w, s in (("B", 1.0), ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12),
                                       ("KiB", 2.0 ** 10), ("MiB", 2.0 ** 20), ("GiB", 2.0 ** 30),
                                       ("TiB", 2.0 ** 40))},
    **{w: ("rate", 1.0) for w in ("/s", "per_s", "tok/s", "tokens/s", "ex/s", "examples/s", "req/s",
                                  "requests/s")},
    **{w: ("bandwidth", s) for w, s in (("MB/s", 1e6), ("GB/s", 1e9), ("TB/s", 1e12))},
    **{w: ("energy", s) for w, s in (("mJ", 1e-3), ("J", 1.0), ("kJ", 1e3))},
    "%": ("percent", 1.0), "pct": ("percent", 1.0),
    "nats": ("nats", 1.0), "nat": ("nats", 1.0),
}


def in_group(cat: Catalogue, group: Group) -> list[Metric]:
    return [m for m in cat if m.group == group]


# -- spread columns ------------------------------------------------------------------------------
def tails(better: Better) -> tuple[str, str]:
    """The slow tail of a repeated metric: p10/p1 of a rate (higher is better), p90/p99 of a time."""
    return ("p10", "p1") if better == "higher" else ("p90", "p99")


def spread_columns(m: Metric) -> list[str]:
    """`ttft_ms` -> ttft_p90_ms, ttft_p99_ms, ttft_min_ms, ttft_max_ms, ttft_cv_pct, ttft_n."""
    name, unit = split_unit(m.key)
    return [f"{name}_{q}{unit}" for q in (*tails(m.better), "min", "max")] + [f"{name}_cv_pct", f"{name}_n"]


def interval_columns(m: Metric) -> tuple[list[str], list[str]]:
    """`ttft_ms` -> ([ttft_ci_low_ms, ttft_ci_high_ms], [ttft_vs_baseline_ci_low_pct, ttft_vs_baseline_ci_high_pct]):
    the median's 95% interval, and that of the change vs the baseline in %."""
    name, unit = split_unit(m.key)
    return ([f"{name}_ci_low{unit}", f"{name}_ci_high{unit}"],
            [f"{name}_vs_baseline_ci_low_pct", f"{name}_vs_baseline_ci_high_pct"])


# -- info rows: what the engine says it ran ------------------------------------------------------
@dataclass(frozen=True)
class Info:
    key: str  # the CSV column
    label: str
    get: Callable[[Any], Any]  # record -> text, list, dict or None


def _engine_info(*path: str) -> Callable[[Any], Any]:
    def get(record: Any) -> Any:
        value: Any = record.engine_info or {}
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return value
    return get


def _quality_reference(record: Any) -> str | None:
    """Which backend a row's quality compares with; a backend compared with itself says so."""
    q = getattr(record, "quality", None)
    ref = getattr(q, "reference", None)
    if not ref:
        return None
    if str((getattr(q, "facts", None) or {}).get("reference_source", "")).startswith("self"):
        return f"{ref} (this backend itself: KL 0 and 100% agreement by definition)"
    return ref


INFO: tuple[Info, ...] = (
    Info("engine", "Engine", lambda r: r.engine if r.engine not in ("", "?") else None),
    Info("quantization_method", "Quantization method, as run", _engine_info("quantization_method")),
    Info("quant_methods", "Layers per quantization method", _engine_info("quant_methods")),
    Info("linear_kernels", "Linear kernels, as run", _engine_info("linear_kernels")),
    Info("census", "Weight census (quantized layers, bits/weight)", _engine_info("census", "summary")),
    Info("placement", "Node placement (execution providers)", _engine_info("placement")),
    Info("quality_reference", "Quality reference", _quality_reference),
)


def info_text(value: Any) -> str | None:
    """A string as is, a list joined, a dict as `key: value` pairs; nothing for empty values."""
    if value in (None, "", [], {}):
        return None
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


# -- numbers -------------------------------------------------------------------------------------
def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def format_number(value: float, digits: int = 3) -> str:
    """`digits` significant digits, thousands separated; a small value never reads as 0."""
    if value == 0:
        return "0"
    a = abs(value)
    if a >= 10 ** digits:
        return f"{value:,.0f}"
    if a >= 1e-4:
        decimals = max(0, digits - 1 - math.floor(math.log10(a)))
        return f"{value:,.{decimals}f}"
    return f"{value:.{digits - 1}e}"


def format_value(m: Metric, value: float) -> str:
    return format_number(value, m.digits)


def format_relative(pct: float) -> str:
    """+151%, -42%, +2.4%: whole percent from 10% up, one decimal below."""
    if abs(pct) >= 10:
        return f"{pct:+.0f}%"
    return f"{pct:+.1f}%"
