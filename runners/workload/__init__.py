"""Workload kinds, registered the way engines are: `runners/workload/<kind>.py` sets `WORKLOAD`.

A workload kind names the head it needs (`task`), the engine calls it drives (`calls`), the metrics it
measures (`metrics`, declared beside the code that computes them), and drives an engine through
warm-up and timed repeats at one batch size, returning a measured point. Adding a kind is adding a
module and a `conf/workload/<name>.yaml` with `kind: <module>`; nothing else lists it.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

# Modules of this package that are helpers of every kind, not kinds.
_HELPERS = {"client", "inputs", "loop"}


def _kind_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _HELPERS and not m.name.startswith("_"))


def workload(kind: str) -> Any:
    """The registered workload object of `kind` (has `kind`, `task`, `run`)."""
    return importlib.import_module(f"{__name__}.{kind}").WORKLOAD


def workload_kinds() -> dict[str, Any]:
    """Every registered kind by name."""
    return {name: workload(name) for name in _kind_names()}
