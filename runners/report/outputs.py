"""Records -> every output file of a results folder (table.md, table.csv, rows.jsonl, results.jsonl, report.html)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runners.record.schema import RunRecord
from runners.record.store import find_records


@dataclass
class Written:
    markdown: str
    paths: dict[str, Path] = field(default_factory=dict)

    def files(self) -> list[tuple[str, Path]]:
        return list(self.paths.items())


def markdown_for(root: Path, records: list[RunRecord], baseline: str | None) -> str:
    from runners.report.table import markdown

    return markdown(records, baseline)


def write_outputs(root: Path, baseline: str | None = None, html: bool = True,
                  records: list[RunRecord] | None = None) -> Written:
    from runners.report.table import write_outputs as legacy

    records = find_records(root) if records is None else records
    md = legacy(root, baseline, html)
    paths = {"table": root / "table.md", "csv": root / "table.csv", "records": root / "results.jsonl"}
    if html and (root / "report.html").exists():
        paths["report"] = root / "report.html"
    return Written(md, paths)
