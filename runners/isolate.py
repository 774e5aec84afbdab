"""Run one benchmark in a child process with a wall-clock limit; classify how it ended.

The child is its own process group (so a timeout also ends the engine's own children, e.g. vLLM's
engine core) and dies with its parent (so killing a sweep leaves no orphan holding the GPU).
Its output is copied byte for byte to our stderr (progress bars keep working) and to `run.log`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from runners.records import RunRecord, read_record, write_record

ROOT = Path(__file__).resolve().parents[1]
LOG_TAIL_LINES = 40
_GRACE_S = 10.0


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _pump(src, log_path: Path) -> None:
    with open(log_path, "ab") as log:
        while True:
            chunk = os.read(src.fileno(), 65536)
            if not chunk:
                return
            log.write(chunk)
            log.flush()
            try:
                sys.stderr.buffer.write(chunk)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass


def log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = log_path.read_bytes()[-64_000:].decode("utf-8", "replace")
    except OSError:
        return ""
    # Progress bars redraw with carriage returns; keep the last state of each line.
    clean = [ln.rsplit("\r", 1)[-1] for ln in text.splitlines()]
    return "\n".join(ln for ln in clean if ln.strip())[-8000:] if clean else ""
    

def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def run_isolated(plan: dict, workdir: Path, timeout_s: float, fallback: RunRecord) -> RunRecord:
    """Execute `plan` in `python -m runners.worker`; always returns a record (and leaves it on disk)."""
    workdir.mkdir(parents=True, exist_ok=True)
    plan_path, log_path = workdir / "plan.json", workdir / "run.log"
    record_path = Path(plan["record_path"])
    record_path.unlink(missing_ok=True)
    plan_path.write_text(json.dumps(plan, indent=1, default=str))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "runners.worker", str(plan_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, env=env, preexec_fn=_die_with_parent)
    pump = threading.Thread(target=_pump, args=(proc.stdout, log_path), daemon=True)
    pump.start()
    timed_out = False
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        rc = _kill_group(proc)
    except BaseException:
        _kill_group(proc)  # Ctrl-C or a dying sweep: take the child's whole group with us
        raise
    pump.join(timeout=5)
    wall = time.perf_counter() - t0
    record = read_record(record_path) if record_path.exists() else fallback
    if timed_out:
        record.status, record.reason = "timeout", f"run exceeded timeout_s={timeout_s:g} and was killed"
        _mark_unfinished(record, "timeout")
    elif rc != 0:
        how = f"killed by {_signal_name(rc)}" if rc < 0 else f"exited with code {rc}"
        record.status, record.reason = "crash", f"worker {how}"
        _mark_unfinished(record, "crash")
    if record.status not in ("ok", "partial"):
        record.log_tail = log_tail(log_path)
    if record.wall_s is None or timed_out or rc != 0:
        record.wall_s = round(wall, 3)
    write_record(record_path, record)
    return record


def _mark_unfinished(record: RunRecord, status: str) -> None:
    """Batch sizes that finished keep their numbers; the rest are listed as not measured."""
    done = {p.batch_size for p in record.points}
    todo = [bs for bs in (record.config.get("workload") or {}).get("batch_sizes", []) if bs not in done]
    if done and todo:
        record.reason = f"{record.reason}; batch sizes {todo} not measured"


def _kill_group(proc: subprocess.Popen) -> int:
    for sig, wait in ((signal.SIGTERM, _GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()
