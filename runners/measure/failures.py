"""Every exception from a run, classified into the record's status vocabulary; and the host's own
evidence of why a worker died (the kernel's out-of-memory killer, the engine's last error line)."""
from __future__ import annotations

import re
from pathlib import Path

from backends.contract import DamagedArtefact, RunFailure

# Where the kernel counts the processes its out-of-memory killer ended: this cgroup's (v2, v1), else
# the host's (/proc/vmstat, kernel >= 4.13).
OOM_COUNTERS = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control", "/proc/vmstat")
_ERROR_LINE = re.compile(r"error|exception|fatal|abort|segmentation|killed|assert", re.IGNORECASE)


def oom_kills() -> int | None:
    """How many processes the out-of-memory killer has ended, from the first counter readable here."""
    for path in OOM_COUNTERS:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None


def last_error_line(log_text: str) -> str | None:
    """The line a native library's own error message is most likely on: the last that says error
    (abort, fatal, ...), else the last line; progress-bar redraws and our own lines left out."""
    lines = []
    for ln in log_text.splitlines():
        ln = ln.rsplit("\r", 1)[-1]
        if "/s]" in ln:  # a progress bar's last redraw; a library's message can follow it on the same line
            ln = ln.rsplit("/s]", 1)[1]
        ln = ln.strip()
        if ln and not ln.startswith("[quantbench]"):
            lines.append(ln)
    if not lines:
        return None
    found = [ln for ln in lines if _ERROR_LINE.search(ln)]
    return (found or lines)[-1][:300]


def classify_exception(exc: BaseException) -> RunFailure:
    """Map an exception from loading or a measured region to a classified failure."""
    if isinstance(exc, RunFailure):
        return exc
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if ("out of memory" in lowered or "outofmemory" in lowered or "failed to allocate memory" in lowered
            or isinstance(exc, MemoryError)):
        return RunFailure("oom", text.splitlines()[0][:500])
    if isinstance(exc, (ImportError, ModuleNotFoundError)):
        return RunFailure("missing_dependency", text[:500])
    if isinstance(exc, DamagedArtefact):
        return RunFailure("crash", str(exc)[:2000])
    return RunFailure("crash", text[:2000])
