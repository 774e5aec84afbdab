"""A sweep's life around its cells: the directory lock, `sweep.json`, the closing table, the exit code.

A sweep (or single-run) directory belongs to one sweep. The first one to start holds a lock on it
for its lifetime; a second one started into the same directory (two sweeps in the same second share
Hydra's default timestamped folder) stops with one line naming the directory and exit code 3,
before it runs anything.

Exit codes: 0 every run ok; 1 at least one run or batch size is not ok (the table says which);
2 a bad command line; 3 the directory is in use by another sweep; 4 results could not be written
(full disk, read-only folder: the records that finished are kept, the table is printed).
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from backends.contract import safefs
from runners.plan.cli import normalised
from runners.record.store import find_records
from runners.report.outputs import markdown_for, write_outputs

SWEEP_FILE = "sweep.json"
LOCK_FILE = ".quantbench.lock"
EXIT_OK, EXIT_NOT_OK, EXIT_USAGE, EXIT_LOCKED, EXIT_UNWRITABLE = 0, 1, 2, 3, 4


def exit_code(statuses: list[str]) -> int:
    """0 every run ok; 2 every run refused as invalid input (nothing was measured: a bad command line);
    1 otherwise (some run or batch size not ok: the table says which)."""
    if statuses and all(s == "invalid_config" for s in statuses):
        return EXIT_USAGE
    return EXIT_OK if statuses and all(s == "ok" for s in statuses) else EXIT_NOT_OK


def swept_backends(task_overrides: list[str]) -> list[str]:
    """The backends in the order the command named them (the default baseline is the first)."""
    for o in task_overrides:
        key, _, value = o.lstrip("+").partition("=")
        if key == "backend":
            return [v.strip() for v in value.split(",") if v.strip()]
    return []


@dataclass
class JobOutcome:
    """What one cell hands back to its sweep (in memory: Hydra gives it to the sweep's callback)."""

    status: str
    unwritable: str | None = None  # why the cell's results could not be written (full disk, read-only)


class DirLock:
    """An exclusive lock on a results directory, held by this process until released.

    The lock file is removed when the sweep ends (a folder kept in git keeps no lock of a finished
    sweep); one a crash leaves behind is harmless: flock locks die with their process, so the next
    sweep takes it. Removing a lock file races with a process that opened it just before: so a
    holder checks, after locking, that the file it locked is still the one at the path."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.fd: int | None = None

    def acquire(self) -> str | None:
        """None when held; else who holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        while True:
            fd = safefs.open_lock(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                return holder
            try:
                same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed the file we locked: lock the one at the path now
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, since {dt.datetime.now().isoformat(timespec='seconds')}".encode())
        self.fd = fd
        return None

    def release(self) -> None:
        if self.fd is not None:
            try:
                (self.folder / LOCK_FILE).unlink(missing_ok=True)
            except OSError:  # a read-only or full folder: the stale file stays harmless
                pass
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def write_sweep_file(folder: Path, sweep_id: str, overrides: list[str], report: dict[str, Any] | None = None) -> None:
    """A folder continued by later commands (resume, one backend per call) keeps the first command's
    backend order, adds the new ones after it, and remembers every command that wrote into it. `report`:
    the sweep's report settings (baseline, require, ...), which the table reads."""
    old = read_sweep_file(folder)
    command = normalised(overrides)
    commands = [c for c in old.get("commands", [old["command"]] if "command" in old else []) if c != command]
    backends = list(dict.fromkeys([*old.get("backends", []), *swept_backends(overrides)]))
    data = {"sweep_id": sweep_id, "pid": os.getpid(), "started_at": dt.datetime.now().isoformat(timespec="seconds"),
            "command": command, "commands": [*commands, command], "backends": backends,
            "first_started_at": old.get("first_started_at") or old.get("started_at")
            or dt.datetime.now().isoformat(timespec="seconds"),
            "report": report if report is not None else old.get("report", {})}
    safefs.write_text(folder / SWEEP_FILE, json.dumps(data, indent=1), folder)


def read_sweep_file(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / SWEEP_FILE).read_text())
    except (OSError, ValueError):
        return {}


def latest_same_command(root: Path, overrides: list[str]) -> Path | None:
    """The newest sweep folder under `root` started by the same command (resume= and dirs aside)."""
    want = normalised(overrides)
    found = [(p.stat().st_mtime, p.parent) for p in root.glob(f"**/{SWEEP_FILE}")
             if want in read_sweep_file(p.parent).get("commands", [])]
    return max(found)[1] if found else None


class Sweep:
    """One sweep in its folder, a single run being a sweep of one cell: the folder's lock, `sweep.json`
    (which also tells each cell its sweep's id, in any process), the cells' outcomes, the closing table
    and the exit code. Its state lives in its folder and in this object, never in the environment."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.lock = DirLock(folder)
        self.outcomes: list[JobOutcome] = []

    def start(self, overrides: list[str], report: dict[str, Any] | None = None) -> None:
        if self.folder.exists() and not self.folder.is_dir():
            print(f"error: cannot write results to {self.folder}: it is a file, not a folder; give "
                  "hydra.sweep.dir (or hydra.run.dir) a folder", file=sys.stderr)
            raise SystemExit(EXIT_UNWRITABLE)
        try:
            holder = self.lock.acquire()
        except OSError as exc:  # read-only, full, or a link where the lock goes: nothing has run yet
            why = str(exc) if isinstance(exc, safefs.UnsafePath) else f"cannot write to {self.folder}: {exc.strerror or exc}"
            print(f"error: {why}", file=sys.stderr)
            raise SystemExit(EXIT_UNWRITABLE) from None
        if holder is not None:
            print(f"error: {self.folder} is in use by another quantbench sweep ({holder}); wait for it, or give "
                  f"this one its own folder with hydra.sweep.dir=... (or hydra.run.dir=...)", file=sys.stderr)
            raise SystemExit(EXIT_LOCKED)
        try:
            write_sweep_file(self.folder, uuid.uuid4().hex[:12], overrides, report)
        except OSError as exc:
            self.lock.release()
            print(f"error: cannot write to {self.folder}: {exc.strerror or exc}", file=sys.stderr)
            raise SystemExit(EXIT_UNWRITABLE) from None

    def job_ended(self, job_return: Any) -> None:
        value = getattr(job_return, "_return_value", None)
        outcome = value if isinstance(value, JobOutcome) else JobOutcome("crash")
        if outcome.unwritable and not any(o.unwritable for o in self.outcomes):
            # One line per sweep for a full disk or a read-only folder; the sweep's end reports it too.
            print(f"error: {outcome.unwritable}; the records that finished are kept", file=sys.stderr)
        self.outcomes.append(outcome)

    def close(self, baseline: str | None, html: bool) -> int:
        """Write the sweep's table and report, release the folder; the sweep's exit code."""
        try:
            return close_sweep(self.folder, baseline, html, self.outcomes)
        finally:
            self.lock.release()


def _report_settings(config: Any) -> dict[str, Any]:
    report = config.get("report")
    return OmegaConf.to_container(report, resolve=True) if report is not None else {}


class SweepCallback(Callback):
    """Hydra callback: a `Sweep` for a multirun and for a single run alike."""

    def __init__(self) -> None:
        self.sweep: Sweep | None = None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        launcher = str(config.hydra.launcher.get("_target_", ""))
        n_jobs = config.hydra.launcher.get("n_jobs", 1)
        if "joblib" in launcher and n_jobs != 1:
            print(f"warning: hydra/launcher=joblib with n_jobs={n_jobs} runs cells at the same time on this "
                  "machine's device: their timings skew each other (on a 2-core CPU fp32 measured 382 vs 482 tok/s "
                  "serial). Use hydra.launcher.n_jobs=1 for numbers you will compare.", file=sys.stderr)
        self.sweep = Sweep(Path(config.hydra.sweep.dir))
        self.sweep.start(list(config.hydra.overrides.task), _report_settings(config))

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self.sweep = Sweep(Path(config.hydra.run.dir))
        self.sweep.start(list(config.hydra.overrides.task), _report_settings(config))

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        if self.sweep is not None:  # a parallel launcher's cells end in other processes: their records tell
            self.sweep.job_ended(job_return)

    def _close(self, config: Any, job_failed: bool = False) -> None:
        if self.sweep is None:
            return
        report = config.get("report", {}) or {}
        try:
            code = self.sweep.close(report.get("baseline"), bool(report.get("html", True)))
        except Exception as exc:  # noqa: BLE001 — Hydra would turn it into a warning and exit 0
            print(f"error: the sweep's closing step failed ({type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}); "
                  f"its records are kept in {self.sweep.folder}; rebuild the table with "
                  f"`python -m runners.report {self.sweep.folder}`", file=sys.stderr)
            raise SystemExit(EXIT_NOT_OK) from None
        # A single run whose job raised: Hydra reports that exception (and exits 1) after this callback.
        if code != EXIT_OK and not job_failed:
            raise SystemExit(code)

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        job_return = kwargs.get("job_return")
        self._close(config, job_failed=getattr(getattr(job_return, "status", None), "name", "") == "FAILED")

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        self._close(config)


def close_sweep(root: Path, baseline: str | None, html: bool, outcomes: list[JobOutcome]) -> int:
    """Write the sweep's table and report; return the sweep's exit code."""
    records = find_records(root)
    write_error = next((o.unwritable for o in outcomes if o.unwritable), None)
    try:
        written = write_outputs(root, baseline, html, records=records)
    except OSError as exc:
        print(markdown_for(root, records, baseline))
        if not write_error:
            why = str(exc) if isinstance(exc, safefs.UnsafePath) else \
                f"cannot write the tables under {root}: {exc.strerror or exc}"
            print(f"error: {why}; the records that finished are kept, the table is printed above", file=sys.stderr)
        return EXIT_UNWRITABLE
    print(written.markdown)
    print("\n".join(f"{label}: {path}" for label, path in written.files()))
    if write_error:
        return EXIT_UNWRITABLE
    statuses = [o.status for o in outcomes]
    return max(exit_code([r.status for r in records]), exit_code(statuses) if statuses else EXIT_OK)
