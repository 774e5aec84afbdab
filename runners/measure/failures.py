"""Every exception from a run, classified into the record's status vocabulary."""
from __future__ import annotations

from backends.contract import DamagedArtefact, RunFailure


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
