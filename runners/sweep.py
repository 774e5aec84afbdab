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
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from runners.plan.cli import normalised
from runners.record.store import find_records

SWEEP_FILE = "sweep.json"
LOCK_FILE = ".quantbench.lock"
EXIT_OK, EXIT_NOT_OK, EXIT_USAGE, EXIT_LOCKED, EXIT_UNWRITABLE = 0, 1, 2, 3, 4
# Set by a job whose results could not be written, read by the sweep's end (same process).
WRITE_ERROR_ENV = "QUANTBENCH_WRITE_ERROR"
SWEEP_ID_ENV = "QUANTBENCH_SWEEP_ID"


def exit_code(statuses: list[str]) -> int:
    return EXIT_OK if statuses and all(s == "ok" for s in statuses) else EXIT_NOT_OK


def swept_backends(task_overrides: list[str]) -> list[str]:
    """The backends in the order the command named them (the default baseline is the first)."""
    for o in task_overrides:
        key, _, value = o.lstrip("+").partition("=")
        if key == "backend":
            return [v.strip() for v in value.split(",") if v.strip()]
    return []


class DirLock:
    """An exclusive lock on a results directory, held by this process until released."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.fd: int | None = None

    def acquire(self) -> str | None:
        """None when held; else who holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            return holder
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, since {dt.datetime.now().isoformat(timespec='seconds')}".encode())
        self.fd = fd
        return None

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def write_sweep_file(folder: Path, sweep_id: str, overrides: list[str]) -> None:
    """A folder continued by later commands (resume, one backend per call) keeps the first command's
    backend order, adds the new ones after it, and remembers every command that wrote into it."""
    old = read_sweep_file(folder)
    command = normalised(overrides)
    commands = [c for c in old.get("commands", [old["command"]] if "command" in old else []) if c != command]
    backends = list(dict.fromkeys([*old.get("backends", []), *swept_backends(overrides)]))
    data = {"sweep_id": sweep_id, "pid": os.getpid(), "started_at": dt.datetime.now().isoformat(timespec="seconds"),
            "command": command, "commands": [*commands, command], "backends": backends,
            "first_started_at": old.get("first_started_at") or old.get("started_at")
            or dt.datetime.now().isoformat(timespec="seconds")}
    (folder / SWEEP_FILE).write_text(json.dumps(data, indent=1))


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


class SweepCallback(Callback):
    """Hydra callback: lock at the start, one cross-backend table and an honest exit code at the end."""

    def __init__(self) -> None:
        self.lock: DirLock | None = None
        self.statuses: list[str] = []

    def _start(self, folder: Path, overrides: list[str]) -> None:
        self.lock = DirLock(folder)
        holder = self.lock.acquire()
        if holder is not None:
            print(f"error: {folder} is in use by another quantbench sweep ({holder}); wait for it, or give "
                  f"this one its own folder with hydra.sweep.dir=... (or hydra.run.dir=...)", file=sys.stderr)
            raise SystemExit(EXIT_LOCKED)
        sweep_id = uuid.uuid4().hex[:12]
        os.environ[SWEEP_ID_ENV] = sweep_id
        os.environ.pop(WRITE_ERROR_ENV, None)
        try:
            write_sweep_file(folder, sweep_id, overrides)
        except OSError as exc:
            print(f"error: cannot write to {folder}: {exc.strerror or exc}", file=sys.stderr)
            raise SystemExit(EXIT_UNWRITABLE) from None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        launcher = str(config.hydra.launcher.get("_target_", ""))
        n_jobs = config.hydra.launcher.get("n_jobs", 1)
        if "joblib" in launcher and n_jobs != 1:
            print(f"warning: hydra/launcher=joblib with n_jobs={n_jobs} runs cells at the same time on this "
                  "machine's device: their timings skew each other (on a 2-core CPU fp32 measured 382 vs 482 tok/s "
                  "serial). Use hydra.launcher.n_jobs=1 for numbers you will compare.", file=sys.stderr)
        self._start(Path(config.hydra.sweep.dir), list(config.hydra.overrides.task))

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self._start(Path(config.hydra.run.dir), list(config.hydra.overrides.task))

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        status = getattr(getattr(job_return, "_return_value", None), "status", None)
        self.statuses.append(status or "crash")

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        if self.lock:
            self.lock.release()

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        root = Path(config.hydra.sweep.dir)
        try:
            code = close_sweep(root, config.get("report", {}).get("baseline"), bool(config.get("report", {}).get("html", True)),
                               self.statuses)
        finally:
            if self.lock:
                self.lock.release()
        if code != EXIT_OK:
            raise SystemExit(code)


def close_sweep(root: Path, baseline: str | None, html: bool, statuses: list[str]) -> int:
    """Write the sweep's table and report; return the sweep's exit code."""
    from runners.report.outputs import write_outputs

    records = find_records(root)
    write_error = os.environ.get(WRITE_ERROR_ENV)
    try:
        written = write_outputs(root, baseline, html, records=records)
    except OSError as exc:
        from runners.report.outputs import markdown_for

        print(markdown_for(root, records, baseline))
        if not write_error:
            print(f"error: cannot write the tables under {root}: {exc.strerror or exc}; the records that finished "
                  "are kept, the table is printed above", file=sys.stderr)
        return EXIT_UNWRITABLE
    print(written.markdown)
    print("\n".join(f"{label}: {path}" for label, path in written.files()))
    if write_error:
        return EXIT_UNWRITABLE
    return max(exit_code([r.status for r in records]), exit_code(statuses) if statuses else EXIT_OK)
