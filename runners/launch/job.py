"""One planned run from start to record: its quality reference first, then the measurement.

This module is the only writer of `record.json`, for measured runs and for configs rejected before
planning (`reject`). While the run goes on, the file says `incomplete` (a sweep killed from outside
must not leave a record that reads as a finished run); at the end it holds the run's own verdict, or
the launcher's (timeout, crash) with every batch size the run never reached listed as a cell that says
why.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import shutil
import sys
from pathlib import Path
from typing import IO, Any

from backends import engine_class
from backends.contract import content_key, safefs
from runners.launch import gpus, worker
from runners.launch.child import Exit, launch, log_tail
from runners.measure.failures import last_error_line
from runners.plan.planner import Plan
from runners.quality.reference import is_self, ready, reference_path
from runners.record.schema import RunRecord, start_record
from runners.record.store import RECORD_NAME, read_record, write_record

INCOMPLETE = "run stopped before it finished (interrupted or killed)"


class RecordWriter:
    """Receives the worker's snapshots; writes the record."""

    def __init__(self, path: Path, fallback: RunRecord, root: Path | None = None):
        self.path = path
        self.root = root  # the folder quantbench owns (the sweep's): no link below it is written through
        self.latest = fallback
        self.final = False
        self.error: OSError | None = None  # a write that failed (full disk): raised once the run is over

    def on_message(self, message: dict[str, Any]) -> None:
        if "record" not in message:
            return
        self.latest = RunRecord.from_dict(message["record"])
        self.final = bool(message.get("final"))
        if not self.final:
            try:
                write_record(self.path, dataclasses.replace(self.latest, status="incomplete", reason=INCOMPLETE),
                             self.root)
            except OSError as exc:  # this runs in the launcher's reader thread: keep reading
                self.error = self.error or exc

    def abandon(self, reason: str) -> None:
        """The run will not finish: write what it measured as `incomplete` (best effort)."""
        try:
            write_record(self.path, dataclasses.replace(self.latest, status="incomplete", reason=reason), self.root)
        except Exception:  # noqa: BLE001 — the signal that brought us here is what matters now
            pass

    def finish(self, exit: Exit | None, timeout_s: float, log_path: Path | None) -> RunRecord:
        record = self.latest
        how = exit.how(timeout_s) if exit is not None else None
        if how is not None:
            record.status, record.reason = how
        elif not self.final:
            record.status, record.reason = "crash", "worker ended without reporting a result"
        if record.status not in ("ok", "partial") and log_path is not None:
            record.log_tail = log_tail(log_path)
            line = last_error_line(record.log_tail)
            # A native library that ends the process itself says why only in its own output.
            if how is not None and how[0] == "crash" and "exited with code" in how[1] and line:
                record.reason = f"{how[1]}: {line}"
        record.fill_unmeasured()
        if exit is not None and (record.wall_s is None or how is not None):
            record.wall_s = exit.wall_s
        write_record(self.path, record, self.root)
        if self.error is not None:
            raise self.error
        return record


def keep_other_runs(out_dir: Path, run_id: str) -> None:
    """A record of another run in this folder (an earlier sweep whose cells moved) is moved aside,
    with its log, never overwritten."""
    path = out_dir / RECORD_NAME
    if not path.exists():
        return
    try:
        other = read_record(path).run_id
    except (ValueError, OSError):
        other = content_key(path.read_bytes()[:4096])
    if other == run_id:
        return
    dest = out_dir / "superseded" / other
    dest.mkdir(parents=True, exist_ok=True)
    for name in (RECORD_NAME, "run.log"):
        if (out_dir / name).exists():
            shutil.move(str(out_dir / name), str(dest / name))
    print(f"[quantbench] {path} held another run ({other}); kept it in {dest}", file=sys.stderr)


def prepare_reference(plan: Plan, out_dir: Path, isolate: bool, console: IO[str]) -> dict[str, Any] | None:
    """Make sure the reference's outputs are cached (computing them in their own process); what was found."""
    ref = plan.reference
    if ref is None:
        return None
    path = reference_path(ref, plan.device)
    status: dict[str, Any] = {"name": ref.backend.name, "path": str(path), "is_self": is_self(plan.run, ref)}
    if status["is_self"] or ready(path):
        return status
    ref_plan = plan.with_kind("reference", ref, status)
    print(f"[quantbench] quality: computing the {ref.backend.name} reference once, in its own process "
          f"(cached in {path})", file=console)
    outcome: dict[str, Any] = {}

    def on_message(message: dict[str, Any]) -> None:
        outcome.update(message.get("reference") or {})

    if isolate:
        with _gpus_for(ref_plan) as env:
            exit = launch(ref_plan, out_dir, "reference", ref.timeout_s, on_message, console, env)
        status["compute_s"] = exit.wall_s
        how = exit.how(ref.timeout_s)
        if how and not outcome:
            outcome["absent"] = f"reference {ref.backend.name}: {how[0]}: {how[1]} (see {out_dir / 'reference.log'})"
    else:
        import time

        t0 = time.perf_counter()
        worker.reference(ref_plan, on_message)
        status["compute_s"] = round(time.perf_counter() - t0, 3)
    status["reason"] = outcome.get("absent")
    if status["reason"] is None and not ready(path):
        status["reason"] = f"reference {ref.backend.name}: not written to {path}"
    return status


def run_job(plan: Plan, out_dir: Path, console: IO[str] | None = None, root: Path | None = None) -> RunRecord:
    """Reference, then the measured run (in its own process unless `isolate=false`); returns its record.
    `root`: the sweep's folder; a link between it and `out_dir` is refused before anything runs."""
    console = sys.stderr if console is None else console
    safefs.check_path(out_dir / RECORD_NAME, root)
    out_dir.mkdir(parents=True, exist_ok=True)
    keep_other_runs(out_dir, plan.run_id)
    run, isolate = plan.run, plan.settings.isolate
    plan.reference_status = prepare_reference(plan, out_dir, isolate, console)
    writer = RecordWriter(out_dir / RECORD_NAME, worker.new_record(plan), root)
    try:
        if not isolate:
            worker.measure(plan, writer.on_message, console, out_dir)
            return writer.finish(None, run.timeout_s, None)
        try:
            with _gpus_for(plan) as env:
                exit = launch(plan, out_dir, "run", run.timeout_s, writer.on_message, console, env)
        except (RuntimeError, TimeoutError) as exc:  # the host lacks the GPUs this cell needs
            writer.latest.status, writer.latest.reason = "unsupported_hardware", str(exc)
            writer.final = True
            return writer.finish(None, run.timeout_s, None)
    except BaseException:  # a signal stopped the sweep (its children are stopped): the record says so
        writer.abandon("run stopped by a signal (Ctrl-C or SIGTERM) before it finished")
        raise
    return writer.finish(exit, run.timeout_s, out_dir / "run.log")


@contextlib.contextmanager
def _gpus_for(plan: Plan):
    """The GPUs the plan's child may use, leased for as long as it runs: cells of a parallel sweep never
    share one. Yields the child's extra environment."""
    if plan.device != "cuda":
        yield {}
        return
    run = plan.run
    needed = plan.settings.gpus_per_job or engine_class(run.backend.engine).gpus_needed(run.backend.options)
    with gpus.acquire(needed, label=run.backend.name) as lease:
        yield lease.env()


def reject(out_dir: Path, *, backend: str, model: str, workload: str, weights: str, device: str, error: str,
           order: int, sweep_id: str | None, root: Path | None = None) -> RunRecord:
    """A cell whose config was refused before planning: its row says why (written like every record)."""
    record = start_record(run_id=content_key(backend, error), backend=backend, engine="?", model=model,
                          workload=workload, weights=weights, device=device, config={}, order=order,
                          sweep_id=sweep_id, started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                          status="invalid_config", reason=error)
    safefs.check_path(out_dir / RECORD_NAME, root)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_record(out_dir / RECORD_NAME, record, root)
    return record
