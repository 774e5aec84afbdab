"""A sweep never loses work: injected faults become classified rows; a killed sweep resumes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from runners.record.store import find_records, read_record

from .conftest import FAST, ROOT, TEST_CONF, bench


def test_faulty_sweep_keeps_every_row(tmp_path):
    backends = "fault_none,fault_oom_above_batch,fault_missing,fault_unsupported,fault_segfault,fault_hang,fp32"
    bench("-m", f"backend={backends}", *FAST, "workload.batch_sizes=[1,2]", "timeout_s=20",
          f"hydra.sweep.dir={tmp_path}", timeout=400)
    recs = {r.backend: r for r in find_records(tmp_path)}
    assert set(recs) == set(backends.split(","))
    assert recs["fault_none"].status == "ok"
    oom = recs["fault_oom_above_batch"]
    assert oom.status == "partial"
    assert [(p.batch_size, p.status) for p in oom.points] == [(1, "ok"), (2, "oom")]
    assert oom.points[0].metrics["ttft_ms"].median > 0  # the batch size that fit keeps its numbers
    assert recs["fault_missing"].status == "missing_dependency"
    assert "pip install 'quantbench[dev]'" in recs["fault_missing"].reason
    assert recs["fault_unsupported"].status == "unsupported_hardware"
    assert "compute capability >= 8.9" in recs["fault_unsupported"].reason
    assert recs["fault_segfault"].status == "crash"
    assert "SIGSEGV" in recs["fault_segfault"].reason
    assert recs["fault_segfault"].log_tail
    assert recs["fault_hang"].status == "timeout"
    assert recs["fp32"].status == "ok" and all(p.metrics["tpot_ms"].median > 0 for p in recs["fp32"].points)
    table = (tmp_path / "table.md").read_text()
    assert "missing_dependency" in table and "timeout" in table and "crash" in table
    assert "| Status | ok | oom: " in table  # batch 2: the OOM is that cell's status, batch 1 kept its numbers
    assert table.split("## Results", 1)[1].count("### tiny · generate") == 2  # runs that failed early join the batch blocks


def test_crash_after_first_batch_keeps_first(tmp_path):
    bench("backend=fault_segfault_after_first", *FAST, "workload.batch_sizes=[1,4]", f"hydra.run.dir={tmp_path}")
    [rec] = find_records(tmp_path)
    assert rec.status == "crash"
    # The killed batch size is a cell that says so; the finished one keeps its numbers.
    assert [(p.batch_size, p.status) for p in rec.points] == [(1, "ok"), (4, "crash")]
    assert rec.points[0].metrics["e2e_ms"].median > 0
    assert "SIGSEGV" in rec.points[1].reason and not rec.points[1].metrics
    assert "batch 4 not measured" in rec.reason
    table = (tmp_path / "table.md").read_text()
    assert "| Status | crash: worker killed by SIGSEGV" in table and "batch 4" in table


def test_sigkilled_sweep_resumes_without_rerunning(tmp_path):
    args = [sys.executable, "-m", "runners.bench", "-m", f"hydra.searchpath=[file://{TEST_CONF}]",
            "backend=fault_none,fp32,bnb_int8", *FAST, "workload.batch_sizes=[1]", f"hydra.sweep.dir={tmp_path}",
            "resume=true"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300

    def done() -> list:
        return [r for r in find_records(tmp_path, warn=False) if r.status == "ok"]

    while time.time() < deadline and not done():
        time.sleep(0.2)
    # Job 0 has finished for sure: kill the whole sweep while a later job runs.
    while time.time() < deadline and len(list(tmp_path.glob("backend=*"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {r.backend: r for r in find_records(tmp_path)}
    assert first["fault_none"].status == "ok"
    assert "bnb_int8" not in first or first["bnb_int8"].status != "ok"
    [done_path] = [p for p in tmp_path.rglob("record.json") if read_record(p).backend == "fault_none"]
    done_mtime = done_path.stat().st_mtime
    done_at = first["fault_none"].started_at

    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "fault_none x tiny x generate already done" in out.stderr
    recs = {r.backend: r for r in find_records(tmp_path)}
    assert set(recs) == {"fault_none", "fp32", "bnb_int8"}
    assert all(r.status == "ok" for r in recs.values())
    assert recs["fault_none"].started_at == done_at
    assert done_path.stat().st_mtime == done_mtime
    table = (tmp_path / "table.md").read_text()
    assert "| | fault_none | fp32 | bnb_int8 |" in table


def test_run_interrupted_midway_is_marked_incomplete_not_ok(tmp_path):
    proc = bench("backend=fault_interrupt_after_first", *FAST, "workload.batch_sizes=[1,2]", "isolate=false",
                 f"hydra.run.dir={tmp_path}", timeout=120)
    assert proc.returncode != 0
    rec = read_record(tmp_path / "record.json")
    assert rec.status == "incomplete" and "before it finished" in rec.reason
    assert [p.batch_size for p in rec.points] == [1]  # the finished batch size is kept
