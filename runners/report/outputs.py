"""Records -> every output file of a results folder, built from one table model:
table.md, table.csv, rows.jsonl (flat rows), results.jsonl (the records), report.html and plots/."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from backends.contract import safefs
from runners.record.schema import RunRecord
from runners.record.store import find_records, scan
from runners.measure.serving import Slo, SloError
from runners.report import capacity, choose, csvjson, markdown
from runners.report import html as html_writer
from runners.report.table import Table, build, configured

FILES = {"table": "table.md", "csv": "table.csv", "rows": "rows.jsonl", "records": "results.jsonl",
         "report": "report.html"}


@dataclass
class Written:
    markdown: str
    paths: dict[str, Path] = field(default_factory=dict)
    decision: choose.Decision | None = None
    problems: list[str] = field(default_factory=list)  # e.g. constraints that could not be read

    def files(self) -> list[tuple[str, Path]]:
        return list(self.paths.items())


@dataclass
class Report:
    table: Table
    decision: choose.Decision | None
    problems: list[str]
    capacity: capacity.CapacityAnswer | None = None  # the table has serve blocks
    # The records as read (results.jsonl keeps them so), in table order: the table's own may be copies whose
    # serve points carry goodput under the report's SLO.
    records: list[RunRecord] | None = None

    def markdown(self) -> str:
        text = markdown.document(self.table, self.decision, self.capacity)
        if self.problems:
            head, _, rest = text.partition("\n\n")
            text = head + "\n\n" + "".join(f"**Not applied:** {p}\n\n" for p in self.problems) + rest
        return text

    def answer_markdown(self) -> str:
        """What a question asks for (the CLI prints it): the constraint answer and the capacity answer;
        with neither, the whole table.md."""
        parts = [choose.markdown(self.decision)] if self.decision is not None else []
        if self.capacity is not None and (self.decision is not None or self.table.slo is not None):
            parts.append(capacity.markdown(self.capacity))
        return "\n".join(parts) if parts else self.markdown()


def constraints_for(records: list[RunRecord], require: str | None, maximize: str | None,
                    minimize: str | None, root: Path | None = None,
                    ) -> tuple[list[choose.Constraint], choose.Objective | None, bool]:
    """Constraints and objective from the arguments, else from the sweep's `report.*` settings; raises
    choose.ConstraintError. The flag says whether any were asked for."""
    if require is None and maximize is None and minimize is None:
        require, maximize, minimize = (configured(records, k, root) for k in ("require", "maximize", "minimize"))
    asked = any(v not in (None, "") for v in (require, maximize, minimize))
    return choose.parse_constraints(require), choose.parse_objective(maximize, minimize), asked


def slo_for(records: list[RunRecord], slo: str | None, root: Path | None = None) -> Slo | None:
    """The serving SLO from the argument (`--slo`), else from the sweep's `report.slo`; raises SloError."""
    if slo is not None:
        return capacity.parse_slo(slo, "--slo")
    return capacity.parse_slo(configured(records, "slo", root), "report.slo")


def build_report(root: Path, records: list[RunRecord] | None = None, baseline: str | None = None,
                 require: str | None = None, maximize: str | None = None, minimize: str | None = None,
                 columns: list[str] | None = None, slo: str | None = None) -> Report:
    found = scan(root)
    if records is None:
        records = found.records
    problems: list[str] = []
    try:
        judged_slo = slo_for(records, slo, root)
    except SloError as exc:
        problems.append(str(exc))
        judged_slo = None
    judged = capacity.with_slo(records, judged_slo)  # copies where an SLO changes a point: records stay as read
    table = build(judged, baseline, root, found.damaged, columns)
    table.slo = judged_slo
    as_read = {id(j): r for j, r in zip(judged, records)}
    decision = None
    constraints: list[choose.Constraint] = []
    try:
        constraints, objective, asked = constraints_for(records, require, maximize, minimize, root)
        if asked:
            decision = choose.decide(table, constraints, objective)
    except choose.ConstraintError as exc:
        problems.append(str(exc))
    return Report(table, decision, problems, capacity.answer(table, judged_slo, constraints),
                  [as_read[id(r)] for r in table.records])


def markdown_for(root: Path, records: list[RunRecord], baseline: str | None) -> str:
    return build_report(Path(root), records, baseline).markdown()


def write_report(root: Path, report: Report, html: bool = True) -> Written:
    """Every output of `root`, each rendered in full first, then replaced atomically (a full disk leaves
    the previous file whole), never through a link (backends.contract.safefs)."""
    root = Path(root)
    text = report.markdown()
    paths = {k: root / name for k, name in FILES.items()}
    rows = csvjson.flat_rows(report.table)
    contents = {"table": text, "csv": csvjson.csv_text(report.table, rows), "rows": csvjson.rows_jsonl_text(rows),
                "records": csvjson.records_jsonl_text(report.records if report.records is not None
                                                             else report.table.records)}
    for key in contents:
        safefs.check_path(paths[key], root)
    for key, body in contents.items():
        safefs.write_text(paths[key], body, root)
    if html and report.table.records:
        html_writer.write(root, report.table, report.decision, report.capacity)
    else:
        paths.pop("report")
    return Written(text, paths, report.decision, report.problems)


def write_outputs(root: Path, baseline: str | None = None, html: bool = True,
                  records: list[RunRecord] | None = None) -> Written:
    """Rebuild every output of `root` from its records (or the `records` given, already read from it)."""
    if records is None:
        records = find_records(Path(root))  # warns about each damaged record file
    report = build_report(Path(root), records, baseline)
    for problem in report.problems:
        print(f"warning: {problem}", file=sys.stderr)
    for backend, why in report.table.invalid:
        print(f"warning: the record of {backend} fails its own checks ({why}): shown, never compared or plotted",
              file=sys.stderr)
    return write_report(root, report, html)
