"""Records on disk: written atomically by one writer, read back tolerantly.

Written through a temp file and a rename: a run killed mid-write leaves the previous record or none,
never half a JSON. A file that is not a readable record (random bytes, truncated JSON, another
tool's JSON) is named in a warning and treated as missing: resume re-runs it, tables leave it out
and say so, and nothing crashes on it.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.contract import safefs
from runners.record.schema import RunRecord

RECORD_NAME = "record.json"


def dumps(data: Any) -> str:
    """Indented JSON, with every list of plain values on one line: a serving record keeps each request's
    chunk arrival times, thousands of numbers that one-per-line would make several times larger."""
    return "".join(_chunks(data, 0))


def _flat(value: Any) -> bool:
    return not any(isinstance(v, (list, dict)) for v in value)


def _chunks(value: Any, level: int):
    pad, inner = "\n" + " " * level, "\n" + " " * (level + 1)
    if isinstance(value, dict) and value:
        yield "{"
        for i, (k, v) in enumerate(value.items()):
            yield ("," if i else "") + inner + json.dumps(str(k)) + ": "
            yield from _chunks(v, level + 1)
        yield pad + "}"
    elif isinstance(value, (list, tuple)) and value and not _flat(value):
        yield "["
        for i, v in enumerate(value):
            yield ("," if i else "") + inner
            yield from _chunks(v, level + 1)
        yield pad + "]"
    else:
        yield json.dumps(value, default=str, separators=(",", ":") if isinstance(value, (list, tuple)) else None)


def write_json_atomic(path: Path, data: Any, root: Path | None = None) -> None:
    """JSON to `path` through a temp file and a rename, never through a link (backends.contract.safefs);
    `root`: the folder quantbench owns (a link at it is the user's choice)."""
    safefs.write_text(path, dumps(data), root)


def write_record(path: Path, record: RunRecord, root: Path | None = None) -> None:
    write_json_atomic(path, record.to_dict(), root)


def read_record(path: Path) -> RunRecord:
    """Raises ValueError (UnicodeDecodeError and JSONDecodeError are ValueErrors) for a damaged file."""
    return RunRecord.from_dict(json.loads(Path(path).read_bytes().decode("utf-8")))


@dataclass
class Found:
    records: list[RunRecord] = field(default_factory=list)
    damaged: list[tuple[Path, str]] = field(default_factory=list)  # (path, why) of unreadable record files


def scan(root: Path) -> Found:
    """All readable records under `root` (for a run_id seen twice, the newest wins) and the damaged ones."""
    found = Found()
    latest: dict[str, tuple[float, RunRecord]] = {}
    for path in sorted(Path(root).rglob(RECORD_NAME)):
        try:
            rec = read_record(path)
        except (ValueError, TypeError, KeyError, OSError) as exc:
            found.damaged.append((path, f"{type(exc).__name__}: {str(exc)[:120]}"))
            continue
        mtime = path.stat().st_mtime
        if rec.run_id not in latest or mtime >= latest[rec.run_id][0]:
            latest[rec.run_id] = (mtime, rec)
    found.records = [rec for _, rec in sorted(latest.values(), key=lambda t: t[0])]
    return found


def find_records(root: Path, warn: bool = True) -> list[RunRecord]:
    found = scan(root)
    if warn:
        for path, why in found.damaged:
            print(f"warning: {path} is not a readable record ({why}): treated as missing", file=sys.stderr)
    return found.records
