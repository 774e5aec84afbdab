"""The result record: one per run, the only thing tables and reports read.

Version 3 (this one): a point's metrics are typed (a `Stat` over the timed repeats, or one number), the
quality block is typed (`Quality`), and the record carries the declarations of the metrics its
producers may write (`declared`), so a report renders any record, an outside engine's included,
without knowing its producers. A key that no producer declared is refused when the record is checked
(`check()`, on every write), never dropped on the way to a table.

Version 1 and 2 records (every record written before the typed boundary) are read and upgraded in memory:
Stat dicts become `Stat`, the flat quality dict becomes `Quality`, and `peak_vram_mib` is derived from
the per-process readings as the v2 report did; their `declared` is empty (the report then takes the
declarations quantbench ships). A record from a newer quantbench is refused with the version it has.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from backends.contract import Catalogue, MetricError
from runners.measure.memory import with_peak_vram
from runners.measure.stats import Stat

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
# ok: measured what the backend's name says. partial: some batch sizes ok, others failed.
# not_applied: the engine loaded, but did not run what the backend promises (its evidence is in
# `reason` and `engine_info.census`): never measured, never ok. incomplete: the run had not ended when
# the record was written (killed from outside, or still running).
Status = Literal["ok", "partial", "not_applied", "oom", "missing_dependency", "unsupported_hardware", "timeout",
                 "crash", "invalid_config", "incomplete"]
STATUSES: tuple[str, ...] = get_args(Status)
# The quality metrics a version-2 record held in its flat quality block (the rest were facts).
_V2_QUALITY_METRICS = ("kl_mean_nats", "kl_p99_nats", "kl_max_nats", "top1_agreement_pct",
                       "identical_generations_pct", "generation_prefix_match_pct", "perplexity",
                       "reference_perplexity", "accuracy_pct", "macro_f1_pct")


def check_status(status: str, where: str = "status") -> None:
    if status not in STATUSES:
        raise ValueError(f"{where}: {status!r} is not a record status; valid: {', '.join(STATUSES)}")


def _plain(obj: Any) -> Any:
    """Dataclasses, tuples and nested containers -> JSON-able values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, float) and math.isinf(obj):
        return "inf" if obj > 0 else "-inf"  # JSON has no infinity: a rate "all at once" is written "inf"
    return obj


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Point:
    """One load of a run: a batch size (offline kinds: `Stat`s over the timed repeats) or an offered request
    rate (`serve`: `Stat`s over the requests of the load point); single numbers, and why others are absent."""

    batch_size: int | None
    status: str = "ok"
    reason: str | None = None
    metrics: dict[str, Stat | float] = field(default_factory=dict)
    # metric key -> why it was not measured (a table shows the reason, never 0)
    absent: dict[str, str] = field(default_factory=dict)
    # What is not a number: how a figure was made (the profiled pass's top kernels, its trace file, ...).
    facts: dict[str, Any] = field(default_factory=dict)
    # The offered request rate of a `serve` load point, req/s (math.inf: every request at once; JSON "inf").
    rate_per_s: float | None = None

    @property
    def where(self) -> str:
        """The point's coordinate in words: "batch 8", "2 req/s", "all at once"."""
        if self.rate_per_s is None:
            return f"batch {self.batch_size}"
        return "all at once" if math.isinf(self.rate_per_s) else f"{self.rate_per_s:g} req/s"

    @property
    def order_key(self) -> tuple[int, float]:
        """Sorts batch sizes, then rates (all at once last)."""
        return (0, float(self.batch_size or 0)) if self.rate_per_s is None else (1, self.rate_per_s)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Point":
        metrics = {k: Stat.from_dict(v) if isinstance(v, dict) else v for k, v in (d.get("metrics") or {}).items()}
        rate = d.get("rate_per_s")
        return Point(batch_size=d.get("batch_size"), status=d.get("status", "ok"), reason=d.get("reason"),
                     metrics=metrics, absent=dict(d.get("absent") or {}), facts=dict(d.get("facts") or {}),
                     rate_per_s=None if rate is None else float(rate))


@dataclass
class Quality:
    """Quality beside speed: metric values, or why they are absent, and how they were measured."""

    metrics: dict[str, float] = field(default_factory=dict)
    absent: str | None = None  # why no quality metric was measured at all
    absent_metrics: dict[str, str] = field(default_factory=dict)  # metric key -> why this one is absent
    reference: str | None = None  # the backend the metrics compare with
    facts: dict[str, Any] = field(default_factory=dict)  # how: kl_method, eval_tokens, reference_source, ...

    @staticmethod
    def from_dict(d: dict[str, Any] | None) -> "Quality":
        d = d or {}
        known = Quality.__dataclass_fields__
        return Quality(**{k: v for k, v in d.items() if k in known})

    def flat(self) -> dict[str, Any]:
        """Metrics, facts and reasons in one mapping (the shape version-2 records stored)."""
        out: dict[str, Any] = {**self.facts, **self.metrics}
        for key in ("absent", "reference"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.absent_metrics:
            out["absent_metrics"] = dict(self.absent_metrics)
        return out

    @staticmethod
    def from_v2(d: dict[str, Any] | None) -> "Quality":
        d = dict(d or {})
        metrics = {k: d.pop(k) for k in _V2_QUALITY_METRICS if _number(d.get(k))}
        return Quality(metrics=metrics, absent=d.pop("absent", None), absent_metrics=d.pop("absent_metrics", None) or {},
                       reference=d.pop("reference", None), facts=d)


@dataclass
class RunRecord:
    run_id: str
    backend: str
    engine: str
    model: str
    workload: str
    weights: str
    device: str
    status: str = "ok"
    reason: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    points: list[Point] = field(default_factory=list)
    load: dict[str, float] = field(default_factory=dict)  # load_s, prepare_s, export_s, weights memory, ...
    quality: Quality = field(default_factory=Quality)
    engine_info: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""
    wall_s: float | None = None
    log_tail: str | None = None
    notes: list[str] = field(default_factory=list)
    order: int = 0  # position in its sweep: the table keeps the order the user gave
    sweep_id: str | None = None
    # The declarations (backends.contract.Metric as dicts) of every metric this run's producers may write.
    declared: list[dict[str, Any]] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def catalogue(self) -> Catalogue:
        return Catalogue.from_list(self.declared)

    def check(self) -> None:
        """The record's own consistency: a known status (run and points), and every metric key declared
        for the place it is in. Raises ValueError (MetricError for an undeclared key)."""
        check_status(self.status)
        for p in self.points:
            check_status(p.status, f"{p.where} status")
        if self.schema_version < SCHEMA_VERSION:
            return  # an upgraded old record: its keys were never declared
        cat = self.catalogue()
        bad = []
        for p in self.points:
            stats = [k for k, v in p.metrics.items() if isinstance(v, Stat)]
            numbers = [k for k, v in p.metrics.items() if not isinstance(v, Stat)]
            bad += [f"{p.where} {k}" for k in cat.undeclared(stats, "repeats")]
            bad += [f"{p.where} {k}" for k in cat.undeclared(numbers, "point")]
        bad += [f"load {k}" for k in cat.undeclared(self.load, "run")]
        bad += [f"quality {k}" for k in cat.undeclared(self.quality.metrics, "quality")]
        if bad:
            raise MetricError(f"record of {self.backend} holds metrics no producer declared for that place: "
                              f"{', '.join(bad)}; declare them (backends.contract.Metric) where they are measured")

    def to_dict(self) -> dict[str, Any]:
        self.check()
        return _plain(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "RunRecord":
        if not isinstance(d, dict) or "run_id" not in d:
            raise ValueError("not a quantbench record")
        version = d.get("schema_version", 2)
        if version not in READABLE_VERSIONS:
            raise ValueError(f"record schema version {version!r}: this quantbench reads versions "
                             f"{', '.join(map(str, READABLE_VERSIONS))}"
                             + ("; it was written by a newer quantbench" if isinstance(version, int)
                                and version > SCHEMA_VERSION else ""))
        d = dict(d)
        d["points"] = [Point.from_dict(p) for p in d.get("points", [])]
        if version < 3:
            for p in d["points"]:
                numbers = {k: v for k, v in p.metrics.items() if _number(v)}
                with_peak_vram(numbers, p.absent)
                if "peak_vram_mib" in numbers:
                    p.metrics["peak_vram_mib"] = numbers["peak_vram_mib"]
            d["quality"] = Quality.from_v2(d.get("quality"))
            d["load"] = {k: v for k, v in (d.get("load") or {}).items() if _number(v)}
            d["declared"] = []
        else:
            d["quality"] = Quality.from_dict(d.get("quality"))
        known = RunRecord.__dataclass_fields__
        record = RunRecord(**{k: v for k, v in d.items() if k in known})
        check_status(record.status)
        for p in record.points:
            check_status(p.status, f"{p.where} status")
        return record

    def planned_points(self) -> list[Point]:
        """The points the run's config asks for, unmeasured: its batch sizes, or its offered rates (serve)."""
        wl = self.config.get("workload") or {}
        serve = wl.get("serve") or {}
        if serve.get("rates"):
            return [Point(batch_size=None, rate_per_s=float(r)) for r in serve["rates"]]
        return [Point(batch_size=bs) for bs in wl.get("batch_sizes") or []]

    def summarize_status(self) -> None:
        """Run status from its points: ok if all ok, partial if some, else the first failure."""
        if not self.points or self.status not in ("ok", "partial"):
            return
        bad = [p for p in self.points if p.status != "ok"]
        if not bad:
            self.status, self.reason = "ok", None
        elif len(bad) < len(self.points):
            self.status = "partial"
            self.reason = "; ".join(f"{p.where}: {p.status}" for p in bad)
        else:
            self.status, self.reason = bad[0].status, bad[0].reason

    def fill_unmeasured(self) -> None:
        """Every planned point is in the record: the ones a failed run never reached say why."""
        done = {p.where for p in self.points}
        todo = [p for p in self.planned_points() if p.where not in done]
        if not todo or self.status in ("ok", "partial"):
            return
        head = (self.reason or self.status).splitlines()[0][:300]
        if done:
            self.reason = f"{self.reason}; {', '.join(p.where for p in todo)} not measured"
        for i, p in enumerate(todo):
            p.status, p.reason = self.status, head if i == 0 else f"not reached: the run ended ({self.status}) at {todo[0].where}"
            self.points.append(p)


def start_record(*, run_id: str, backend: str, engine: str, model: str, workload: str, weights: str, device: str,
                 config: dict[str, Any], order: int, sweep_id: str | None, started_at: str,
                 declared: list[dict[str, Any]] | None = None, status: str = "ok",
                 reason: str | None = None) -> RunRecord:
    """The one constructor of a run's record: measured runs and configs rejected before planning alike."""
    check_status(status)
    return RunRecord(run_id=run_id, backend=backend, engine=engine, model=model, workload=workload, weights=weights,
                     device=device, config=config, order=order, sweep_id=sweep_id, started_at=started_at,
                     declared=list(declared or []), status=status, reason=reason)
