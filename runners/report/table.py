"""Records -> table.csv / table.md / results.jsonl (and report.html): the only reader of records.

`python -m runners.report SWEEP_DIR [--baseline NAME]` rebuilds everything from stored records.
Every number shown comes from a record; a metric a run could not measure shows its reason.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from runners.record.schema import RunRecord
from runners.record.store import find_records

ID_COLUMNS = ["backend", "model", "workload", "batch_size", "weights", "device", "engine", "status", "reason"]
# Stat metrics, in table order. Each is (key, label); the key ends in its unit.
STAT_METRICS = [
    ("ttft_ms", "TTFT, ms"),
    ("tpot_ms", "Decode time per output token (TPOT), ms"),
    ("e2e_ms", "End-to-end latency per request, ms"),
    ("output_tokens_per_s", "Output tokens/s"),
    ("per_example_ms", "Latency, ms/example"),
    ("examples_per_s", "Examples/s"),
    ("batch_ms", "Latency per batch, ms"),
    ("total_tokens_per_s", "Total (prompt + output) tokens/s"),
    ("requests_per_s", "Requests/s"),
]
MEMORY_METRICS = [
    ("peak_allocated_mib", "Peak VRAM (torch allocator), MiB"),
    ("peak_reserved_mib", "Peak VRAM (torch reserved), MiB"),
    ("peak_process_vram_mib", "Peak VRAM (NVML, process tree), MiB"),
    ("peak_device_vram_mib", "Peak VRAM (NVML, whole device), MiB"),
    ("peak_rss_mib", "Peak host RSS, MiB"),
]
EFFICIENCY_METRICS = [
    ("energy_per_output_token_mj", "Energy per output token (whole GPU), mJ"),
    ("energy_per_example_mj", "Energy per example (whole GPU), mJ"),
    ("decode_weight_bandwidth_gb_per_s", "Batch-1 decode weight bandwidth, GB/s"),
    ("decode_weight_bandwidth_of_peak_pct", "Batch-1 decode weight bandwidth, % of GPU peak"),
]
LOAD_METRICS = [
    ("load_s", "Load time, s"),
    ("weights_mib", "Weights (engine-reported), MiB"),
    ("kv_cache_mib", "KV cache (engine-reported), MiB"),
]
QUALITY_METRICS = [
    ("kl_mean_nats", "KL vs reference, mean (nats)"),
    ("kl_p99_nats", "KL vs reference, p99 (nats)"),
    ("top1_agreement_pct", "Top-1 agreement vs reference, %"),
    ("identical_generations_pct", "Identical greedy generations, %"),
    ("perplexity", "Perplexity"),
    ("accuracy_pct", "Accuracy, %"),
    ("macro_f1_pct", "Macro-F1, %"),
]
# What the engine really ran (text, no relative %): where silent fallbacks show.
INFO_ROWS = [
    ("placement", "Node placement (execution providers)"),
    ("quantization_method", "Quantization method, as run"),
    ("linear_kernels", "Linear kernels, as run"),
]
_SUFFIXES = ("_per_s", "_ms", "_mib", "_mj", "_j", "_s", "_pct", "_nats")


def split_unit(key: str) -> tuple[str, str]:
    """'ttft_ms' -> ('ttft', '_ms'); so spread columns read 'ttft_p90_ms' and keep their unit last."""
    for suf in _SUFFIXES:
        if key.endswith(suf):
            return key[: -len(suf)], suf
    return key, ""


def _order(rec: RunRecord) -> tuple:
    return (rec.order, rec.started_at)


def rows(records: list[RunRecord]) -> list[dict[str, Any]]:
    """One row per run x batch size (a failed run with no points still gets one row)."""
    out = []
    for rec in sorted(records, key=_order):
        base = {"backend": rec.backend, "model": rec.model, "workload": rec.workload, "weights": rec.weights,
                "device": rec.device, "engine": rec.engine}
        extra = _run_level(rec)
        points = rec.points or [None]
        for p in points:
            row = dict(base, batch_size=p.batch_size if p else None)
            if p is None:
                row.update(status=rec.status, reason=rec.reason)
            else:
                row.update(status=p.status, reason=p.reason)
                for key, _ in STAT_METRICS:
                    st = p.metrics.get(key)
                    if isinstance(st, dict):
                        name, unit = split_unit(key)
                        row[key] = st["median"]
                        for q in ("p90", "p99", "min", "max"):
                            row[f"{name}_{q}{unit}"] = st[q]
                        row[f"{name}_cv_pct"] = st["cv_pct"]
                        row[f"{name}_n"] = st["n"]
                for key, _ in MEMORY_METRICS + EFFICIENCY_METRICS:
                    if key in p.metrics:
                        row[key] = p.metrics[key]
            row.update(extra)
            out.append(row)
    return out


def _run_level(rec: RunRecord) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for key, _ in LOAD_METRICS:
        if isinstance(rec.load.get(key), (int, float)):
            d[key] = rec.load[key]
    for key, _ in QUALITY_METRICS:
        if isinstance(rec.quality.get(key), (int, float)):
            d[key] = rec.quality[key]
    info = rec.engine_info or {}
    for key, _ in INFO_ROWS:
        if info.get(key):
            d[key] = info[key] if isinstance(info[key], str) else ", ".join(map(str, info[key])) \
                if isinstance(info[key], list) else json.dumps(info[key])
    return d


def relative_pct(value: float, base: float) -> float | None:
    if base == 0:
        return None
    return (value - base) / base * 100.0


def _fmt(v: float) -> str:
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _cell(rec: RunRecord, row: dict | None, key: str, base_val: float | None, is_base: bool) -> str:
    val = row.get(key) if row else None
    if isinstance(val, (int, float)):
        text = _fmt(val)
        rel = relative_pct(val, base_val) if base_val is not None and not is_base else None
        return text + (f" ({rel:+.0f}%)" if rel is not None else "")
    why = _absent_reason(rec, row, key)
    if why:
        return f"n/a ({why})"
    status = (row or {}).get("status", rec.status)
    return status if status != "ok" else "—"


def _absent_reason(rec: RunRecord, row: dict | None, key: str) -> str | None:
    for p in rec.points:
        if row is not None and p.batch_size == row.get("batch_size") and key in p.absent:
            return p.absent[key]
    if key in (rec.quality.get("absent_metrics") or {}):
        return rec.quality["absent_metrics"][key]
    if key in dict(QUALITY_METRICS) and rec.quality.get("absent"):
        return rec.quality["absent"]
    return None


def pick_baseline(records: list[RunRecord], baseline: str | None) -> str | None:
    names = [r.backend for r in sorted(records, key=_order)]
    if baseline:
        if baseline not in names:
            raise SystemExit(f"report.baseline={baseline!r} is not in this sweep; backends: {', '.join(dict.fromkeys(names))}")
        return baseline
    return names[0] if names else None


def markdown(records: list[RunRecord], baseline: str | None = None) -> str:
    """Published-table style: one block per model x workload x batch size; metrics down, backends across."""
    if not records:
        return "_no records_\n"
    baseline = pick_baseline(records, baseline)
    all_rows = rows(records)
    # One record per backend within a model x workload x weights cell (newest wins upstream).
    recs = {(r.backend, r.model, r.workload, r.weights): r for r in sorted(records, key=_order)}
    backends = list(dict.fromkeys(r["backend"] for r in all_rows))
    measured_cells = {(r["model"], r["workload"], r["weights"]) for r in all_rows if r["batch_size"] is not None}
    # A run that failed before its first batch size has no batch size: it is shown in every block
    # of its model x workload, and only gets a block of its own when nothing else ran there.
    groups = list(dict.fromkeys(
        (r["model"], r["workload"], r["weights"], r["batch_size"]) for r in all_rows
        if r["batch_size"] is not None or (r["model"], r["workload"], r["weights"]) not in measured_cells))
    out = [f"Baseline: **{baseline}** (relative change in parentheses).\n"]
    for model, workload, weights, bs in groups:
        cell = (model, workload, weights)
        sel = {r["backend"]: r for r in all_rows if (r["model"], r["workload"], r["weights"], r["batch_size"]) == (*cell, bs)}
        failed_whole = {b for b in backends if b not in sel and any(
            rr["backend"] == b and rr["batch_size"] is None and (rr["model"], rr["workload"], rr["weights"]) == cell
            for rr in all_rows)}
        cols = [b for b in backends if b in sel or b in failed_whole]
        rec_of = {b: recs[(b, *cell)] for b in cols}
        devices = [d for d in dict.fromkeys(rec_of[b].device for b in cols) if d != "auto"]
        device = "/".join(devices) or "auto"
        bs_text = f", batch {bs}" if bs is not None else ""
        out.append(f"### {model} · {workload}{bs_text} · {weights} weights · {device}\n")
        out.append("| | " + " | ".join(cols) + " |")
        out.append("|---|" + "---|" * len(cols))
        metrics = STAT_METRICS + MEMORY_METRICS + EFFICIENCY_METRICS + LOAD_METRICS + QUALITY_METRICS
        not_measured: dict[str, list[str]] = {}
        for key, label in metrics:
            if not any(isinstance((sel.get(b) or {}).get(key), (int, float)) for b in cols):
                # A row with no number anywhere is noise in the table: name it once below instead.
                reasons = {_absent_reason(rec_of[b], sel.get(b), key) for b in cols} - {None}
                for why in reasons:
                    not_measured.setdefault(why, []).append(label.rsplit(", ", 1)[0])
                continue
            base_row = sel.get(baseline)
            base_val = base_row.get(key) if base_row and base_row.get("status") == "ok" else None
            cells = [_cell(rec_of[b], sel.get(b) or {"status": rec_of[b].status}, key,
                           base_val if isinstance(base_val, (int, float)) else None, b == baseline) for b in cols]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        for key, label in INFO_ROWS:
            texts = [(sel.get(b) or {}).get(key) for b in cols]
            if any(texts):
                out.append(f"| {label} | " + " | ".join((t or "—").replace("|", "/") for t in texts) + " |")
        status_cells = [_status_text(sel.get(b), rec_of[b]) for b in cols]
        out.append("| Status | " + " | ".join(status_cells) + " |")
        out.append("")
        for why, labels in not_measured.items():
            out.append(f"Not measured ({why}): {', '.join(dict.fromkeys(labels))}.  ")
        out.append("")
    return "\n".join(out) + "\n"


def _status_text(row: dict | None, rec: RunRecord) -> str:
    status = row["status"] if row else rec.status
    reason = row.get("reason") if row else rec.reason
    if status == "ok":
        return "ok"
    return f"{status}: {(reason or '').splitlines()[0][:120]}".replace("|", "/")


def write_outputs(root: Path, baseline: str | None = None, html: bool = True) -> str:
    """Rebuild table.md, table.csv, results.jsonl (and report.html) in `root`; returns the markdown."""
    import pandas as pd

    records = find_records(root)
    md = markdown(records, baseline)
    env = _env_line(records)
    (root / "table.md").write_text(f"# quantbench results\n\n{env}\n\n{md}")
    pd.DataFrame(rows(records)).to_csv(root / "table.csv", index=False)
    with open(root / "results.jsonl", "w") as f:
        for rec in sorted(records, key=_order):
            f.write(json.dumps(rec.to_dict(), default=str) + "\n")
    if html and records:
        try:
            from runners.report import html as report_html
        except ImportError:
            report_html = None
        if report_html is not None:
            report_html.write(root, records, pick_baseline(records, baseline))
    return md


def _env_line(records: list[RunRecord]) -> str:
    envs = [r.env for r in records if r.env]
    if not envs:
        return ""
    e = envs[0]
    gpu = e.get("gpu") or {}
    pk = e.get("packages", {})
    hw = (f"{gpu.get('gpu_name')} (cc {gpu.get('capability')}, driver {gpu.get('driver')}, CUDA {gpu.get('cuda_runtime')})"
          if gpu else f"CPU {e.get('cpu')} x{e.get('cpu_count')}")
    vers = ", ".join(f"{k} {v}" for k, v in pk.items() if k != "quantbench")
    commit = (e.get("git") or {}).get("commit") or "unknown"
    return f"Measured on {hw}; {vers}; commit {commit[:12]}."


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runners.report", description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir", type=Path, help="a directory holding record.json files (searched recursively)")
    ap.add_argument("--baseline", help="backend to compare against (default: the first of the sweep)")
    ap.add_argument("--no-html", action="store_true", help="skip report.html and the plots")
    args = ap.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    if not find_records(args.sweep_dir):
        print(f"error: no record.json under {args.sweep_dir}", file=sys.stderr)
        return 2
    print(write_outputs(args.sweep_dir, args.baseline, not args.no_html))
    return 0


if __name__ == "__main__":
    sys.exit(main())
