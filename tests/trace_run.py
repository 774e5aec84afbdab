"""Follow one run's config through quantbench (not a test: tests/test_architecture.py runs it).

`python tests/trace_run.py OUT.json OVERRIDES...` runs `quantbench OVERRIDES` in this process under a
profiler hook and writes, in call order, every function of ours that was handed the run's config in one
of its typed forms (the composed Hydra config, the plan, the run config and its sections, the sweep
settings, the engine's view), with the folder it lives in.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import DictConfig

# This checkout's code, whatever an editable install elsewhere points at (the script's own folder,
# tests/, is what Python put first on the path).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import runners.bench as bench  # noqa: E402
from backends.contract import EngineRun, ModelFacts  # noqa: E402
from runners.plan.config import BackendSpec, ModelSpec, QualitySpec, RunConfig, SweepSettings, WorkloadSpec  # noqa: E402
from runners.plan.planner import Plan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("plan", "launch", "open", "workload", "measure", "quality", "record", "report")
CONFIG_TYPES = (DictConfig, Plan, RunConfig, BackendSpec, ModelSpec, WorkloadSpec, QualitySpec, SweepSettings,
                EngineRun, ModelFacts)


def folder(filename: str) -> str | None:
    """`plan`, `launch`, ... for a stage folder; `backends`; `entry` (bench.py, sweep.py: Hydra's side);
    `shared` (runners' small modules outside the stages); None for code that is not ours."""
    try:
        parts = Path(filename).resolve().relative_to(ROOT).parts
    except ValueError:
        return None
    if parts[0] == "backends":
        return "backends"
    if parts[0] != "runners" or len(parts) < 2:
        return None
    if len(parts) > 2 and parts[1] in STAGES:
        return parts[1]
    return "entry" if parts[1] in ("bench.py", "sweep.py") else "shared"


def main() -> None:
    out, overrides = sys.argv[1], sys.argv[2:]
    calls: list[tuple[str, str]] = []
    seen: dict[str, str | None] = {}  # filename -> folder: the hook runs on every call of every library

    def hook(frame, event, arg):
        if event != "call":
            return
        filename = frame.f_code.co_filename
        where = seen.get(filename, "?")
        if where == "?":
            where = seen[filename] = folder(filename)
        if where is None:
            return
        code = frame.f_code
        names = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
        if any(isinstance(frame.f_locals.get(n), CONFIG_TYPES) for n in names):
            rel = Path(code.co_filename).resolve().relative_to(ROOT)
            calls.append((where, f"{rel}:{code.co_name}"))

    sys.argv = ["quantbench", *overrides]
    sys.setprofile(hook)
    try:
        bench.main()
    except SystemExit:
        pass
    finally:
        sys.setprofile(None)
    Path(out).write_text(json.dumps(calls))


if __name__ == "__main__":
    main()
