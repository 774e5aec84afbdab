"""The result record: one JSON file per run, the only thing tables and reports read.

Written atomically (temp file + rename): a run killed mid-write leaves the previous record or none,
never half a JSON.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runners.typed import as_dict

SCHEMA_VERSION = 1
RECORD_NAME = "record.json"
STATUSES = ("ok", "partial", "oom", "missing_dependency", "unsupported_hardware", "timeout", "crash",
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
    load: dict[str, Any] = field(default_factory=dict)  # load_s, weights memory, ...
    quality: dict[str, Any] = field(default_factory=dict)
    engine_info: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""
    wall_s: float | None = None
    log_tail: str | None = None
    notes: list[str] = field(default_factory=list)
    order: int = 0  # position in its sweep: the table keeps the order the user gave
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return as_dict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "RunRecord":
        d = dict(d)
        d["points"] = [Point(**p) for p in d.get("points", [])]
        known = RunRecord.__dataclass_fields__
        return RunRecord(**{k: v for k, v in d.items() if k in known})

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


def write_json_atomic(path: Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=False, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(path: Path, record: RunRecord) -> None:
    write_json_atomic(path, record.to_dict())


def read_record(path: Path) -> RunRecord:
    return RunRecord.from_dict(json.loads(Path(path).read_text()))


def find_records(root: Path) -> list[RunRecord]:
    """All records under `root`; for a run_id seen twice (a resumed sweep), the newest wins."""
    latest: dict[str, tuple[float, RunRecord]] = {}
    for path in sorted(Path(root).rglob(RECORD_NAME)):
        try:
            rec = read_record(path)
        except (json.JSONDecodeError, TypeError, KeyError):
            continue  # not ours, or from an incompatible schema; the table lists only readable runs
        mtime = path.stat().st_mtime
        if rec.run_id not in latest or mtime >= latest[rec.run_id][0]:
            latest[rec.run_id] = (mtime, rec)
    return [rec for _, rec in sorted(latest.values(), key=lambda t: t[0])]
