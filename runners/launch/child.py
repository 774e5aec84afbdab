"""The one launcher of child processes: measured runs and quality references alike.

A child is its own process group (so a timeout also ends the engine's own children, e.g. vLLM's
engine core) and dies with its parent (so killing a sweep leaves no orphan holding the GPU). It gets
three channels: its stdout/stderr (library chatter) go to the log file only; a console pipe
(progress bars, our messages) goes to the user's terminal and the log; a result pipe carries JSON
lines (record snapshots, a reference's outcome) back to the launcher.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

import psutil

from backends.contract import safefs
from runners.measure.failures import oom_kills
from runners.plan.planner import Plan

_GRACE_S = 10.0
LOG_TAIL_LINES = 40


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = log_path.read_bytes()[-64_000:].decode("utf-8", "replace")
    except OSError:
        return ""
    # Progress bars redraw with carriage returns; keep the last state of each line.
    clean = [ln.rsplit("\r", 1)[-1] for ln in text.splitlines()]
    kept = [ln for ln in clean if ln.strip()][-lines:]
    return "\n".join(kept)[-8000:]


def signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


@dataclass
class Exit:
    rc: int
    timed_out: bool
    wall_s: float
    messages: list[dict[str, Any]] = field(default_factory=list)
    oom_killed: bool = False  # the kernel's out-of-memory killer counted a kill while the child ran
    peak_rss_mib: float | None = None  # the child's process tree, sampled by the launcher

    @property
    def last(self) -> dict[str, Any] | None:
        return self.messages[-1] if self.messages else None

    def how(self, timeout_s: float) -> tuple[str, str] | None:
        """(status, reason) when the child did not end by itself, or None."""
        if self.timed_out:
            return "timeout", f"run exceeded timeout_s={timeout_s:g} and was killed"
        if self.rc == -signal.SIGKILL and self.oom_killed:
            rss = f" (its process tree peaked at {self.peak_rss_mib:,.0f} MiB of {host_memory_mib():,.0f} MiB)" \
                if self.peak_rss_mib else ""
            return "oom", f"host memory: the kernel's out-of-memory killer stopped the worker (SIGKILL){rss}"
        if self.rc != 0:
            what = f"killed by {signal_name(self.rc)}" if self.rc < 0 else f"exited with code {self.rc}"
            if self.rc == -signal.SIGKILL:
                what += (" (not by quantbench; the kernel's out-of-memory killer sends SIGKILL too, but counted no "
                         "kill here)") if not self.oom_killed else ""
            return "crash", f"worker {what}"
        return None


class _Log:
    """The run's log file, written by two pumps at once."""

    def __init__(self, path: Path):
        self.file = safefs.open_append(path)
        self.lock = threading.Lock()
        self.broken = False

    def write(self, chunk: bytes) -> None:
        # A full disk must not stop the pumps: a child blocked on a full pipe would hang the sweep.
        with self.lock:
            if self.broken:
                return
            try:
                self.file.write(chunk)
                self.file.flush()
            except OSError:
                self.broken = True

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass


def _pump(fd: int, log: _Log, console: IO[str] | None) -> None:
    with os.fdopen(fd, "rb", buffering=0) as src:
        while chunk := src.read(65536):
            log.write(chunk)
            if console is None:
                continue
            try:
                if hasattr(console, "buffer"):
                    console.buffer.write(chunk)
                else:
                    console.write(chunk.decode("utf-8", "replace"))
                console.flush()
            except (OSError, ValueError):
                pass


def _read_results(fd: int, on_message: Callable[[dict[str, Any]], None], messages: list) -> None:
    with os.fdopen(fd, "r", encoding="utf-8") as src:
        for line in src:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            messages.append(message)
            on_message(message)


def launch(plan: Plan, workdir: Path, name: str, timeout_s: float,
           on_message: Callable[[dict[str, Any]], None] = lambda m: None, console: IO[str] | None = None,
           extra_env: dict[str, str] | None = None) -> Exit:
    """Run `plan` in `python -m runners.launch.worker`; `name` names its files (`<name>-plan.json`,
    `<name>.log`); `extra_env` (e.g. the leased CUDA_VISIBLE_DEVICES) goes to the child."""
    console = sys.stderr if console is None else console
    workdir.mkdir(parents=True, exist_ok=True)
    plan_path, log_path = workdir / f"{name}-plan.json", workdir / f"{name}.log"
    safefs.write_text(plan_path, plan.data(), workdir)
    log = _Log(log_path)
    console_r, console_w = os.pipe()
    result_r, result_w = os.pipe()
    # PCI order: CUDA's device indices then mean what NVML's (and a scheduler's) indices mean.
    env = dict(os.environ, PYTHONUNBUFFERED="1", CUDA_DEVICE_ORDER="PCI_BUS_ID", QUANTBENCH_CONSOLE_FD=str(console_w),
               QUANTBENCH_RESULT_FD=str(result_w), **(extra_env or {}))
    # The child imports quantbench from wherever this process did (a checkout or an install).
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    t0 = time.perf_counter()
    messages: list[dict[str, Any]] = []
    try:
        proc = subprocess.Popen([sys.executable, "-m", "runners.launch.worker", str(plan_path), plan.plan_id],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, preexec_fn=_die_with_parent,
                                pass_fds=(console_w, result_w))
    finally:
        os.close(console_w)
        os.close(result_w)
    threads = [threading.Thread(target=_pump, args=(os.dup(proc.stdout.fileno()), log, None), daemon=True),
               threading.Thread(target=_pump, args=(console_r, log, console), daemon=True),
               threading.Thread(target=_read_results, args=(result_r, on_message, messages), daemon=True)]
    proc.stdout.close()
    for t in threads:
        t.start()
    timed_out = False
    kills_before = oom_kills()
    watch = _RssWatch(proc.pid)
    watch.start()
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        rc = _kill_group(proc)
    except BaseException:
        _kill_group(proc)  # Ctrl-C or a dying sweep: take the child's whole group with us
        raise
    finally:
        watch.stop()
        for t in threads:
            t.join(timeout=5)
        log.close()
    kills_after = oom_kills()
    oom = kills_before is not None and kills_after is not None and kills_after > kills_before
    return Exit(rc, timed_out, round(time.perf_counter() - t0, 3), messages, oom_killed=oom,
                peak_rss_mib=watch.peak_mib)


class _RssWatch(threading.Thread):
    """The child's process tree's resident memory, sampled twice a second: the evidence beside an OOM kill."""

    def __init__(self, pid: int):
        super().__init__(daemon=True, name="child-rss")
        self.pid = pid
        self.peak_mib: float | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop_event.wait(0.5):
            try:
                procs = [root, *root.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in procs) / 2**20
            except psutil.Error:
                continue
            self.peak_mib = max(self.peak_mib or 0.0, rss)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=2)


def host_memory_mib() -> float:
    return psutil.virtual_memory().total / 2**20


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
