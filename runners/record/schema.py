"""The result record: one per run, the only thing tables and reports read."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runners.plan.strict import as_dict

SCHEMA_VERSION = 2
# ok: measured what the backend's name says. partial: some batch sizes ok, others failed.
# not_applied: the engine loaded, but did not run what the backend promises (its evidence is in
# `reason` and `engine_info.census`): never measured, never ok.
STATUSES = ("ok", "partial", "not_applied", "oom", "missing_dependency", "unsupported_hardware", "timeout", "crash",
            "invalid_config", "incomplete")


@dataclass
class Point:
    """One batch size of a run. `metrics` values are numbers or Stat dicts (median, p90, ...)."""

    batch_size: int
    status: str = "ok"
    reason: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    # metric name -> why it was not measured (a table shows the reason, never 0)
    absent: dict[str, str] = field(default_factory=dict)


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
    load: dict[str, Any] = field(default_factory=dict)  # load_s, prepare_s, export_s, weights memory, ...
    quality: dict[str, Any] = field(default_factory=dict)
    engine_info: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""
    wall_s: float | None = None
    log_tail: str | None = None
    notes: list[str] = field(default_factory=list)
    order: int = 0  # position in its sweep: the table keeps the order the user gave
    sweep_id: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return as_dict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "RunRecord":
        if not isinstance(d, dict) or "run_id" not in d:
            raise ValueError("not a quantbench record")
        d = dict(d)
        d["points"] = [Point(**p) for p in d.get("points", [])]
        known = RunRecord.__dataclass_fields__
        return RunRecord(**{k: v for k, v in d.items() if k in known})

    def planned_batch_sizes(self) -> list[int]:
        return list((self.config.get("workload") or {}).get("batch_sizes") or [])

    def summarize_status(self) -> None:
        """Run status from its points: ok if all ok, partial if some, else the first failure."""
        if not self.points or self.status not in ("ok", "partial"):
            return
        bad = [p for p in self.points if p.status != "ok"]
        if not bad:
            self.status, self.reason = "ok", None
        elif len(bad) < len(self.points):
            self.status = "partial"
            self.reason = "; ".join(f"batch {p.batch_size}: {p.status}" for p in bad)
        else:
            self.status, self.reason = bad[0].status, bad[0].reason

    def fill_unmeasured(self) -> None:
        """Every planned batch size is a point: the ones a failed run never reached say why."""
        done = {p.batch_size for p in self.points}
        todo = [bs for bs in self.planned_batch_sizes() if bs not in done]
        if not todo or self.status in ("ok", "partial"):
            return
        head = (self.reason or self.status).splitlines()[0][:300]
        if done:
            self.reason = f"{self.reason}; batch sizes {todo} not measured"
        for i, bs in enumerate(todo):
            why = head if i == 0 else f"not reached: the run ended ({self.status}) at batch {todo[0]}"
            self.points.append(Point(batch_size=bs, status=self.status, reason=why))
