"""The table model: a results folder's records as cells and blocks, built once; every writer renders it.

- A **cell** is one run × one load point: a batch size, or an offered request rate for a `serve` run (a
  record with no point at all — a config rejected before planning — is one cell too). It holds every registry metric the run measured, with its spread, and
  for every applicable metric it did not measure the reason; never both. A failed run or batch size
  is a cell with its status and reason.
- A **parameter** is a config value that differs between runs of the folder: workload, quality and
  other top-level fields, and model or backend fields that differ between runs of the same model or
  backend name (a backend's own options differ from another backend's by design: those are the
  columns). Each is a CSV column and part of its block's title.
- A **block** is model × workload × weights × device × load (batch size, or offered rate) × parameter
  values: metrics down, backends across, each compared with the block's baseline cell. Blocks of one
  model × workload sort by batch size, then by offered rate ("all at once" last). Cells that lack a
  parameter or a load point (a run that failed before planning) join every block they fit, so they are
  never lost.
- The **baseline** is `report.baseline` when given, else the first backend of the sweep
  (`sweep.json`), else the first run's. It is never switched silently: when its record is missing or
  damaged, the table says so and shows no relative change.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.contract import Catalogue, WeightCensus
from runners.open.verify import verdict
from runners.plan.strict import build as build_config
from runners.measure.serving import Slo
from runners.measure.stats import Stat
from runners.plan.config import Expectation, coordinate_paths, field_defaults, sweep_setting_names
from runners.record.schema import Point, RunRecord
from runners.report import environment
from runners.report.metrics import INFO, Metric, applicable, catalogue, info_text, is_number
from runners.report.spread import Spread, difference

SWEEP_FILE = "sweep.json"
ROUNDED_TO_ZERO = "recorded as 0: smaller than the precision its writer rounded it to"
# Config paths that never make a parameter: a block's own coordinates (from the config's field
# metadata), and sweep settings (version-2 records still hold them in their config).
_COORDINATES = coordinate_paths() | sweep_setting_names()
_PLUMBING_PREFIXES = tuple(f"{name}." for name in sweep_setting_names()) + ("hydra.",)
# A parameter under these sections varies only between runs of the same backend / model / workload.
_SCOPED = ("backend", "model", "workload")


# -- parameters ---------------------------------------------------------------------------------
def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'workload': {'new_tokens': 4}} -> {'workload.new_tokens': 4}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def param_text(value: Any) -> str:
    """How a parameter value reads in a title: 4, true, [q_proj,k_proj], null."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(param_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{param_text(v)}" for k, v in value.items()) + "}"
    return str(value)


@dataclass(frozen=True)
class Param:
    path: str  # dotted config path, the CSV column: workload.new_tokens
    short: str  # in titles: new_tokens (the shortest suffix no other parameter shares)


def _scope(record: RunRecord, path: str) -> str:
    head = path.split(".", 1)[0]
    return f"{head}={getattr(record, head)}" if head in _SCOPED else "all"


def varying(records: list[RunRecord]) -> tuple[list[Param], dict[str, set[str]]]:
    """The parameters of a folder, and per parameter the scopes (e.g. `backend=fp32`) where it varies."""
    flats = [(r, flatten(r.config)) for r in records if r.config]
    paths = list(dict.fromkeys(p for _, f in flats for p in f))
    # A record written before a field existed (`profile`, repeats=auto's limits) meant its default.
    defaults = field_defaults()
    found: list[str] = []
    scopes: dict[str, set[str]] = {}
    for path in paths:
        if path in _COORDINATES or path.startswith(_PLUMBING_PREFIXES):
            continue
        seen: dict[str, set[str]] = {}
        for rec, flat in flats:
            seen.setdefault(_scope(rec, path), set()).add(_canon(flat.get(path, defaults.get(path))))
        where = {s for s, values in seen.items() if len(values) > 1}
        if where:
            found.append(path)
            scopes[path] = where
    return [Param(p, _short(p, found)) for p in found], scopes


def _short(path: str, paths: list[str]) -> str:
    parts = path.split(".")
    for n in range(1, len(parts) + 1):
        tail = ".".join(parts[-n:])
        if not any(o != path and (o == tail or o.endswith("." + tail)) for o in paths):
            return tail
    return path


# -- cells ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measured:
    value: float
    spread: Spread | None = None


@dataclass
class Cell:
    record: RunRecord
    point: Point | None
    status: str
    reason: str | None
    values: dict[str, Measured] = field(default_factory=dict)
    absent: dict[str, str] = field(default_factory=dict)  # applicable metric -> why it is not measured
    # Absent keys whose reason is only the registry's default (the record said nothing): such a row is
    # left out of a block rather than footnoted when no cell measured it.
    implicit: set[str] = field(default_factory=set)
    info: dict[str, str] = field(default_factory=dict)
    block_params: dict[str, Any] = field(default_factory=dict)  # parameters that place it in a block
    params: dict[str, Any] = field(default_factory=dict)  # every parameter's value in its config
    run_note: str | None = None  # an ok batch size of a run that then failed

    @property
    def backend(self) -> str:
        return self.record.backend

    @property
    def batch_size(self) -> int | None:
        return self.point.batch_size if self.point is not None else None

    @property
    def rate_per_s(self) -> float | None:
        """The offered request rate of a serve cell (math.inf: all at once); None otherwise."""
        return self.point.rate_per_s if self.point is not None else None

    @property
    def load(self) -> tuple[int, float] | None:
        """The cell's place on its run's load axis (Point.order_key), None when it has no load point: a
        block's key, and its sort order (batch sizes, then rates, all at once last)."""
        p = self.point
        if p is None or (p.batch_size is None and p.rate_per_s is None):
            return None
        return p.order_key

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def value(self, key: str) -> float | None:
        got = self.values.get(key)
        return got.value if got else None

    def status_text(self, width: int = 160) -> str:
        if self.ok:
            return "ok" + (f" ({self.run_note})" if self.run_note else "")
        lines = [ln.strip() for ln in (self.reason or "").strip().splitlines() if ln.strip()]
        if not lines:
            return self.status
        # A traceback says what happened on its last line, not its first.
        line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
        return f"{self.status}: {line[:width]}"


def _raw(m: Metric, record: RunRecord, point: Point | None) -> Any:
    if m.source in ("repeats", "point"):
        value = point.metrics.get(m.key) if point is not None and point.status == "ok" else None
        return vars(value) if isinstance(value, Stat) else value
    if m.source == "run":
        return record.load.get(m.key)
    if m.source == "quality":
        return record.quality.metrics.get(m.key)
    return None


def _measured(m: Metric, raw: Any) -> Measured | None:
    spread = Spread.of(raw, m.better)
    if m.source == "repeats":
        return Measured(spread.median, spread) if spread else None
    if spread is not None:  # a plain metric stored as a Stat dict reads as its median
        return Measured(spread.median)
    return Measured(float(raw)) if is_number(raw) else None


def _why(m: Metric, record: RunRecord, point: Point | None) -> tuple[str, bool]:
    """(reason, explicit): why `m` is absent from this cell; explicit when the record says so."""
    per_point = m.source in ("repeats", "point")
    if per_point and point is None:
        return record.status, True
    if per_point and point.status != "ok":
        return point.status, True
    if per_point and m.key in point.absent:
        return point.absent[m.key], True
    if m.source == "quality":
        q = record.quality
        why = q.absent_metrics.get(m.key) or q.absent
        if why:
            return str(why), True
        if record.status not in ("ok", "partial") and not q.metrics:
            return f"the run ended ({record.status}) before quality was measured", True
    if m.source == "run" and record.status not in ("ok", "partial") and not record.load:
        return f"the run ended ({record.status}) before it loaded", True
    return m.absent_default, False


INVALID = "invalid_record"  # a table status, never a record's: the record fails its own checks


def _numbers(value: Any) -> list[float]:
    if isinstance(value, Stat):
        return [value.median, value.min, value.max, *value.samples]
    if isinstance(value, dict):
        return [v for k, v in value.items() if k in ("median", "min", "max") and isinstance(v, (int, float))]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def _impossible(m: Metric, value: Any) -> str | None:
    for v in _numbers(value):
        if not math.isfinite(v):
            return f"{m.key} is {v}"
        if v < 0 and m.group != "quality":
            return f"{m.key} is negative ({v:g})"
        if m.group == "quality" and ((m.key.endswith("_pct") and not 0 <= v <= 100)
                                     or (m.key.endswith("_nats") and v < 0)
                                     or (m.key.endswith("perplexity") and v < 1)):
            return f"{m.key} is {v:g}, outside what it can be"
    return None


def record_problems(record: RunRecord, cat: Catalogue) -> list[str]:
    """Why a record cannot be believed as it stands (edited by hand, or written by a broken tool):
    impossible values (negative or non-finite rates, times, sizes; KL below 0; a percentage outside
    0-100), a backend name its own config does not give, or a census that fails the expectation its
    own config states. An empty list: nothing found."""
    out: list[str] = []
    for m in cat:
        for p in record.points:
            if m.key in p.metrics and (why := _impossible(m, p.metrics[m.key])):
                out.append(f"{p.where} {why}")
        holder = record.load if m.source == "run" else record.quality.metrics if m.source == "quality" else {}
        if m.key in holder and (why := _impossible(m, holder[m.key])):
            out.append(why)
    backend = (record.config or {}).get("backend") or {}
    if backend.get("name") not in (None, record.backend):
        out.append(f"it names backend {record.backend!r}, its config {backend.get('name')!r}")
    if backend.get("engine") not in (None, record.engine) and record.engine != "?":
        out.append(f"it names engine {record.engine!r}, its config {backend.get('engine')!r}")
    census = (record.engine_info or {}).get("census")
    if record.status in ("ok", "partial") and isinstance(census, dict) and backend.get("expect"):
        try:
            why = verdict(build_config(Expectation, backend["expect"], "backend.expect"), WeightCensus.from_dict(census),
                          record.backend)
        except Exception as exc:  # noqa: BLE001 — an unreadable census is itself a finding
            why = f"its census cannot be read ({type(exc).__name__})"
        if why:
            out.append(f"its own census contradicts its backend: {why}")
    return out


def make_cell(record: RunRecord, point: Point | None, cat: Catalogue, problems: list[str] | None = None) -> Cell:
    status = point.status if point is not None else record.status
    reason = point.reason if point is not None else record.reason
    if problems:
        # Shown, never compared or plotted: a number that cannot be true must not move a verdict.
        return Cell(record, point, INVALID, f"the record fails its own checks: {'; '.join(problems)}")
    cell = Cell(record, point, status, reason)
    if point is not None and status == "ok" and record.status not in ("ok", "partial"):
        cell.run_note = f"the run then ended: {record.status}"
    for m in applicable(record, cat):
        got = _measured(m, _raw(m, record, point))
        if got is not None and m.positive and got.value == 0:
            cell.absent[m.key] = ROUNDED_TO_ZERO
            continue
        if got is not None:
            cell.values[m.key] = got
            continue
        why, explicit = _why(m, record, point)
        cell.absent[m.key] = why
        if not explicit:
            cell.implicit.add(m.key)
    for info in INFO:
        text = info_text(info.get(record))
        if text:
            cell.info[info.key] = text
    return cell


# -- blocks ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    rel_pct: float | None  # (cell - baseline) / baseline, %
    within_spread: bool | None  # True: n.s.; None: no spread to judge by
    # The 95% interval of the difference of medians (runners.report.spread), in the metric's unit and
    # in % of the baseline median; None with `reason` when there is none (the difference is then n.s.).
    ci_low: float | None = None
    ci_high: float | None = None
    ci_low_pct: float | None = None
    ci_high_pct: float | None = None
    reason: str | None = None


def relative_pct(value: float, base: float) -> float | None:
    return None if base == 0 else (value - base) / base * 100.0


@dataclass
class Block:
    model: str
    workload: str
    weights: str
    device: str
    batch_size: int | None
    params: dict[str, Any]  # parameter path -> value
    shorts: dict[str, str]  # parameter path -> short name
    catalogue: Catalogue = field(default_factory=Catalogue)
    cells: list[Cell] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)  # header per cell
    baseline: Cell | None = None
    baseline_note: str | None = None  # why there is no relative change here
    # The offered request rate of a serve block, req/s (math.inf: every request at once); None otherwise.
    rate_per_s: float | None = None

    @property
    def serves(self) -> bool:
        return self.rate_per_s is not None

    @property
    def where(self) -> str | None:
        """The block's load in words, as a title shows it: "batch 8", "offered 2 req/s", "all at once"."""
        if self.rate_per_s is not None:
            where = Point(None, rate_per_s=self.rate_per_s).where
            return where if math.isinf(self.rate_per_s) else f"offered {where}"
        return f"batch {self.batch_size}" if self.batch_size is not None else None

    @property
    def title(self) -> str:
        parts = [self.model, self.workload]
        if self.where is not None:
            parts.append(self.where)
        parts += [f"{self.shorts[p]}={param_text(v)}" for p, v in self.params.items()]
        parts += [f"{self.weights} weights", self.device]
        return " · ".join(parts)

    def measured(self) -> list[Metric]:
        """Declared metrics at least one cell of this block measured, in table order."""
        return [m for m in self.catalogue if any(m.key in c.values for c in self.cells)]

    def not_measured(self) -> dict[str, list[Metric]]:
        """reason -> metrics no cell measured, from the reasons the records give (failed cells aside)."""
        shown = {m.key for m in self.measured()}
        out: dict[str, list[Metric]] = {}
        for m in self.catalogue:
            if m.key in shown:
                continue
            for c in self.cells:
                if c.ok and m.key in c.absent and m.key not in c.implicit:
                    group = out.setdefault(c.absent[m.key], [])
                    if m not in group:
                        group.append(m)
        return out

    def compare(self, cell: Cell, key: str) -> Comparison | None:
        base = self.baseline
        m = self.catalogue.get(key)
        if base is None or cell is base or (m is not None and not m.compared):
            return None
        a, b = cell.values.get(key), base.values.get(key)
        if a is None or b is None:
            return None
        rel = relative_pct(a.value, b.value)
        if a.spread is None or b.spread is None:
            return Comparison(rel, None)
        d = difference(a.spread, b.spread)
        return Comparison(rel, not d.significant, d.low, d.high, d.low_pct, d.high_pct, d.reason)

    def noisy(self, key: str) -> list[tuple[str, float]]:
        """(column, cv %) of the cells whose repeats of `key` vary more than the noisy threshold."""
        out = []
        for col, c in zip(self.columns, self.cells):
            got = c.values.get(key)
            if got and got.spread and got.spread.noisy:
                out.append((col, got.spread.cv_pct))
        return out

    def repeats(self) -> list[str | None]:
        """How many timed repeats each cell took (its first metric measured over repeats; with
        workload.repeats=auto the count differs from cell to cell)."""
        out: list[str | None] = []
        for c in self.cells:
            n = next((v.spread.n for m in self.catalogue if (v := c.values.get(m.key)) is not None and v.spread), None)
            out.append(str(n) if n is not None else None)
        return out

    def info_rows(self) -> list[tuple[str, str, list[str | None]]]:
        """(key, label, text per cell) of every info row some cell has."""
        rows = []
        repeats = self.repeats()
        if any(repeats):
            # A serve block's statistics are over its requests, not over timed repeats.
            rows.append(("repeats", "Completed requests" if self.serves else "Timed repeats", repeats))
        for info in INFO:
            texts = [c.info.get(info.key) for c in self.cells]
            if any(texts):
                rows.append((info.key, info.label, texts))
        return rows


@dataclass
class Table:
    title: str
    cells: list[Cell]
    blocks: list[Block]
    params: list[Param]
    backends: list[str]  # column order
    baseline: str | None
    baseline_source: str
    baseline_problem: str | None  # the baseline's record is missing or damaged
    damaged: list[tuple[str, str]]  # (path, why) of record files that could not be read
    environment: list[tuple[str, str]]
    runs: list[environment.RunEnv]
    records: list[RunRecord]
    catalogue: Catalogue = field(default_factory=Catalogue)  # every metric the records declare, in table order
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (backend, why) of records that fail their checks
    # The serving SLO (report.slo / --slo) its serve cells' goodput and attainment were computed under.
    slo: Slo | None = None


def _order(rec: RunRecord) -> tuple:
    return (rec.order, rec.started_at)


def _consistent(small: dict[str, str], big: dict[str, str]) -> bool:
    return all(big.get(k, v) == v for k, v in small.items())


def _sweep_file(root: Path | None) -> dict[str, Any]:
    if root is None:
        return {}
    try:
        data = json.loads((Path(root) / SWEEP_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_sweep_backends(root: Path | None) -> list[str]:
    """The backends a sweep was started with, in the order given (runners/sweep.py writes sweep.json)."""
    backends = _sweep_file(root).get("backends")
    return [str(b) for b in backends] if isinstance(backends, list) else []


def configured(records: list[RunRecord], key: str, root: Path | None = None) -> Any:
    """`report.<key>` of the sweep: from its sweep.json (the sweep's settings), else from the first record
    whose config sets it (records written before the settings left the run config)."""
    report = _sweep_file(root).get("report")
    if isinstance(report, dict) and report.get(key) not in (None, ""):
        return report[key]
    for rec in sorted(records, key=_order):
        value = ((rec.config or {}).get("report") or {}).get(key)
        if value not in (None, ""):
            return value
    return None


def resolve_baseline(records: list[RunRecord], given: str | None, sweep_backends: list[str],
                     damaged: list[tuple[str, str]], root: Path | None = None) -> tuple[str | None, str, str | None]:
    """(baseline name, where it came from, problem) — a missing baseline is named, never replaced."""
    from_config = configured(records, "baseline", root)
    if given:
        name, source = given, "--baseline / report.baseline"
    elif from_config:
        name, source = str(from_config), "report.baseline"
    elif len({r.backend for r in records}) == 1:
        name, source = records[0].backend, "the only backend"
    elif sweep_backends:
        name, source = sweep_backends[0], "the sweep's first backend"
    elif records:
        name, source = sorted(records, key=_order)[0].backend, "the first run's backend"
    else:
        return None, "", None
    if any(r.backend == name for r in records):
        return name, source, None
    mine = [(p, why) for p, why in damaged if f"backend={name}" in str(p).replace(",", "/").split("/")]
    if mine:
        path, why = mine[0]
        return name, source, f"the baseline {name}'s record {path} is damaged ({why}): no relative change is shown"
    if damaged:
        return name, source, (f"the baseline {name} has no readable record; {len(damaged)} record file(s) are "
                              f"damaged and one may be it: no relative change is shown")
    backends = ", ".join(dict.fromkeys(r.backend for r in records))
    return name, source, f"the baseline {name} has no record in this folder (backends: {backends})"


def build(records: list[RunRecord], baseline: str | None = None, root: Path | None = None,
          damaged: list[tuple[Path, str]] | None = None, columns: list[str] | None = None) -> Table:
    """The one table model of `records` (newest record per run, as runners.record.store.scan gives).
    Columns: `columns` first (a folder filled by several commands has no one sweep order), then the
    sweep's backend order, then the order the runs were made in."""
    records = sorted(records, key=_order)
    damaged_text = [(str(p), why) for p, why in (damaged or [])]
    sweep_backends = read_sweep_backends(root)
    ran = {r.backend for r in records}
    backends = list(dict.fromkeys([b for b in [*(columns or []), *sweep_backends] if b in ran]
                                  + [r.backend for r in records]))
    name, source, problem = resolve_baseline(records, baseline, sweep_backends, damaged_text, root)
    params, scopes = varying(records)
    cat = catalogue(records)
    invalid = {id(rec): record_problems(rec, cat) for rec in records}
    cells = []
    for rec in records:
        flat = flatten(rec.config) if rec.config else {}
        for point in rec.points or [None]:
            cell = make_cell(rec, point, cat, invalid[id(rec)])
            cell.params = {p.path: flat[p.path] for p in params if p.path in flat}
            cell.block_params = {p.path: flat.get(p.path) for p in params
                                 if rec.config and _scope(rec, p.path) in scopes[p.path]}
            cells.append(cell)
    shorts = {p.path: p.short for p in params}
    blocks = _blocks(cells, shorts, backends, cat)
    for block in blocks:
        _set_baseline(block, name, problem)
    return Table(environment.title(records, backends), cells, blocks, params, backends, name, source, problem,
                 damaged_text, environment.summary(records), [environment.run_env(r) for r in records], records,
                 cat, [(r.backend, "; ".join(invalid[id(r)])) for r in records if invalid[id(r)]])


def _blocks(cells: list[Cell], shorts: dict[str, str], backends: list[str], cat: Catalogue) -> list[Block]:
    def coords(c: Cell) -> tuple:
        r = c.record
        return (r.model, r.workload, r.weights, r.device)

    def canon(params: dict[str, Any]) -> dict[str, str]:
        return {k: _canon(v) for k, v in params.items()}

    # A block's load key: Cell.load, (0, batch size) or (1, offered rate).
    keyed = [(coords(c), c.load, canon(c.block_params), c) for c in cells if c.load is not None]
    candidates: list[tuple[tuple, tuple[int, float], dict[str, str], Cell]] = []
    for co, load, prm, c in keyed:
        if not any(co == o[0] and load == o[1] and prm == o[2] for o in candidates):
            candidates.append((co, load, prm, c))
    kept = [k for k in candidates if not any(
        o is not k and o[0] == k[0] and o[1] == k[1] and len(o[2]) > len(k[2]) and _consistent(k[2], o[2])
        for o in candidates)]
    blocks: list[tuple[tuple, tuple[int, float] | None, dict[str, str], Block]] = []
    for co, load, prm, first in kept:
        block = Block(*co, first.batch_size, {p: first.block_params[p] for p in shorts if p in first.block_params},
                      shorts, cat, rate_per_s=first.rate_per_s)
        blocks.append((co, load, prm, block))
    for co, load, prm, c in keyed:
        for bco, bload, bprm, block in blocks:
            if co == bco and load == bload and _consistent(prm, bprm):
                block.cells.append(c)
    for c in cells:
        if c.load is not None:
            continue
        prm = canon(c.block_params)
        fits = [b for bco, _, bprm, b in blocks if bco[:2] == coords(c)[:2] and _consistent(prm, bprm)]
        if not fits:
            own = Block(*coords(c), None, dict(c.block_params), shorts, cat)
            blocks.append((coords(c), None, prm, own))
            fits = [own]
        for block in fits:
            block.cells.append(c)
    order = _appearance_order(cells)
    out = [b for *_, b in sorted(blocks, key=lambda t: (order["coords"].index(t[0]),
                                                         order["params"].index(_canon(sorted(t[2].items()))),
                                                         t[1] if t[1] is not None else (-1, 0.0)))]
    for block in out:
        block.cells.sort(key=lambda c: backends.index(c.backend))
        block.columns = _column_names(block.cells)
    return out


def _appearance_order(cells: list[Cell]) -> dict[str, list]:
    coords, params = [], []
    for c in cells:
        r = c.record
        co = (r.model, r.workload, r.weights, r.device)
        if co not in coords:
            coords.append(co)
        key = _canon(sorted({k: _canon(v) for k, v in c.block_params.items()}.items()))
        if key not in params:
            params.append(key)
    return {"coords": coords, "params": params}


def _column_names(cells: list[Cell]) -> list[str]:
    names = [c.backend for c in cells]
    out = []
    for i, (name, c) in enumerate(zip(names, cells)):
        if names.count(name) == 1:
            out.append(name)
            continue
        extra = {p: v for p, v in c.params.items()
                 if any(o.params.get(p) != v for o in cells if o is not c and o.backend == name)}
        label = ", ".join(f"{p.rsplit('.', 1)[-1]}={param_text(v)}" for p, v in extra.items()) or c.status
        candidate = f"{name} ({label})"
        out.append(candidate if candidate not in out else f"{name} #{i + 1}")
    return out


def _set_baseline(block: Block, name: str | None, problem: str | None) -> None:
    if name is None:
        return
    mine = [c for c in block.cells if c.backend == name]
    ok = [c for c in mine if c.ok]
    if ok:
        block.baseline = ok[0]
    elif problem:
        block.baseline_note = problem
    elif mine:
        block.baseline_note = f"the baseline {name} is {mine[0].status} here: no relative change is shown"
    else:
        block.baseline_note = f"the baseline {name} did not run here: no relative change is shown"
