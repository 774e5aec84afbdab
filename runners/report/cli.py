"""`python -m runners.report DIR [--baseline NAME] [--columns A,B,...] [--no-html] [--require ...] [--slo ...]
[--out OUT]`: rebuild a results folder's tables and report from its records, or answer which backend meets
the constraints (syntax: runners.report.choose) and, for serve runs, which serves the most requests/s
under an SLO (runners.report.capacity).

Asking a question (`--require`, `--maximize`, `--minimize`, `--slo`) prints the answer and writes
nothing, so asking never changes a folder of committed results; give `--out OUT` to write the tables
and report with the answer into OUT. Without a question, the folder's own outputs are rebuilt in place
(or in OUT), under the sweep's own `report.*` settings.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backends.contract.safefs import UnsafePath
from runners.measure.serving import SloError
from runners.record.store import scan
from runners.report import choose
from runners.report.outputs import build_report, constraints_for, slo_for, write_report


EXIT_UNWRITABLE = 4  # as a sweep that cannot write its results (runners/sweep.py)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runners.report", description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir", type=Path, help="a directory holding record.json files (searched recursively)")
    ap.add_argument("--baseline", help="backend to compare against (default: the first of the sweep)")
    ap.add_argument("--columns", help="backends in this column order, e.g. vllm_fp16,fp8,awq (the rest follow "
                                      "in run order); default: the sweep's order")
    ap.add_argument("--no-html", action="store_true", help="skip report.html and the plots")
    ap.add_argument("--require", help='constraints, e.g. "peak_vram<=24GiB,kl_mean<=0.05,ttft_p90<=500ms"')
    ap.add_argument("--maximize", help="the metric that ranks the backends meeting the constraints")
    ap.add_argument("--minimize", help="the same, for a lower-is-better metric (e.g. ttft_p90)")
    ap.add_argument("--slo", help="serving SLO for serve runs' goodput and capacity, e.g. "
                                   '"ttft_p90<=500ms,tpot_p90<=50ms" (default: the sweep\'s report.slo)')
    ap.add_argument("--out", type=Path, help="write the tables and report here instead of into SWEEP_DIR "
                                             "(with a question: write them at all)")
    args = ap.parse_args(argv)
    root = args.sweep_dir
    if not root.is_dir():
        print(f"error: {root} is not a directory", file=sys.stderr)
        return 2
    found = scan(root)
    for path, why in found.damaged:
        print(f"warning: {path} is not a readable record ({why}): treated as missing", file=sys.stderr)
    if not found.records and not found.damaged:
        print(f"error: no record.json under {root}", file=sys.stderr)
        return 2
    backends = list(dict.fromkeys(r.backend for r in found.records))
    if args.baseline and args.baseline not in backends and not found.damaged:
        print(f"error: --baseline {args.baseline} is not in {root}; backends: {', '.join(backends)}", file=sys.stderr)
        return 2
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    unknown = [c for c in columns or [] if c not in backends]
    if unknown:
        print(f"error: --columns {', '.join(unknown)} not in {root}; backends: {', '.join(backends)}", file=sys.stderr)
        return 2
    try:
        constraints_for(found.records, args.require, args.maximize, args.minimize)
        slo_for(found.records, args.slo)
    except (choose.ConstraintError, SloError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = build_report(root, found.records, args.baseline, args.require, args.maximize, args.minimize, columns,
                          args.slo)
    asked = any(v not in (None, "") for v in (args.require, args.maximize, args.minimize, args.slo))
    for backend, why in report.table.invalid:
        print(f"warning: the record of {backend} fails its own checks ({why}): shown, never compared or plotted",
              file=sys.stderr)
    if asked and args.out is None:
        print(report.answer_markdown())
        print("(nothing written; give --out DIR to write the tables and report with this answer)", file=sys.stderr)
        return 1 if report.table.invalid else 0
    out = args.out or root
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        print(f"error: --out {args.out} is a file, not a folder", file=sys.stderr)
        return 2
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = write_report(out, report, not args.no_html)
    except OSError as exc:  # a full disk, a read-only folder, a link where an output goes: files stay whole
        why = str(exc) if isinstance(exc, UnsafePath) else f"cannot write the outputs under {out}: {exc.strerror or exc}"
        print(report.markdown())
        print(f"error: {why}; the records are unchanged, the table is printed above", file=sys.stderr)
        return EXIT_UNWRITABLE
    print(report.answer_markdown() if report.decision is not None or args.slo else written.markdown)
    print("\n".join(f"{label}: {path}" for label, path in written.files()))
    return 1 if report.table.invalid else 0


if __name__ == "__main__":
    sys.exit(main())
