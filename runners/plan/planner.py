"""From a composed Hydra config to one validated plan: the run, its sweep settings, its device, what its
engine may know of it, and its quality reference.

Everything a run needs is decided here, once, in the process that owns the sweep: the config is
validated, `device=auto` resolved (and `device=cuda` refused on a machine without a GPU), the engine's
view of the run built and checked against what the engine can do, the quality reference planned (the
run's config with its backend replaced) and validated as well, and the plan's serialised form made.
The plan travels to the child as that data and is rebuilt there, never resolved again. A plan carries
a random id that the child checks, so a worker can never measure a plan that another sweep wrote.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from backends.contract import ConfigError, EngineRun, content_key
from runners.plan.config import RunConfig, SweepSettings, backend_spec, check_engine
from runners.plan.search import ConfigSearch
from runners.policy import decoder_quality_applies, reference_name

PLAN_KINDS = ("run", "reference")


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if cuda_available() else "cpu"
    if requested == "cuda" and not cuda_available():
        raise ConfigError("device: cuda was asked for, but no CUDA GPU is visible here "
                          "(torch.cuda.is_available() is False); use device=auto or device=cpu")
    return requested


@dataclass
class Plan:
    kind: str  # "run": measure; "reference": compute and cache the quality reference's outputs
    run: RunConfig
    device: str
    run_id: str  # content key of what is measured: resume recognises a finished run by it
    engine_run: EngineRun  # what the engine may know of the run (built here, once)
    settings: SweepSettings = field(default_factory=SweepSettings)
    plan_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    order: int = 0
    sweep_id: str | None = None
    # For kind run: the reference's config when decoder quality applies (the run's own when it is
    # the reference), and what the launcher found or made of its outputs (ReferenceStatus fields).
    reference: RunConfig | None = None
    reference_status: dict[str, Any] | None = None
    # The run's config as data (what the record keeps, and what travels to the child).
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "plan_id": self.plan_id, "run_id": self.run_id, "device": self.device,
                "order": self.order, "sweep_id": self.sweep_id, "run": self.config or self.run.to_dict(),
                "settings": self.settings.to_dict(),
                "reference": self.reference.to_dict() if self.reference else None,
                "reference_status": self.reference_status}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Plan":
        run = RunConfig.from_plan(d["run"])
        return Plan(kind=d["kind"], run=run, device=d["device"], run_id=d["run_id"],
                    engine_run=run.engine_view(d["device"]), settings=SweepSettings.from_dict(d.get("settings") or {}),
                    plan_id=d["plan_id"], order=d.get("order", 0), sweep_id=d.get("sweep_id"),
                    reference=RunConfig.from_plan(d["reference"]) if d.get("reference") else None,
                    reference_status=d.get("reference_status"), config=d["run"])

    def with_kind(self, kind: str, run: RunConfig, reference_status: dict[str, Any] | None) -> "Plan":
        """The plan of another run of the same cell (the quality reference), with its own view and id."""
        return Plan(kind=kind, run=run, device=self.device, run_id=content_key(run.identity()),
                    engine_run=run.engine_view(self.device), settings=self.settings, order=self.order,
                    sweep_id=self.sweep_id, reference_status=reference_status, config=run.to_dict())

    def data(self) -> str:
        """The plan as the JSON text a child reads back."""
        return json.dumps(self.to_dict(), indent=1, default=str)

    @staticmethod
    def read(path: Path, plan_id: str) -> "Plan":
        """The plan at `path`, if it is the one the launcher wrote for this child (else ConfigError)."""
        d = json.loads(Path(path).read_text())
        if d.get("plan_id") != plan_id:
            raise ConfigError(f"{path} holds plan {d.get('plan_id')}, not {plan_id}: another sweep wrote into this "
                              "directory; refusing to measure someone else's plan")
        return Plan.from_dict(d)


def reference_run(run: RunConfig, device: str, search: ConfigSearch) -> RunConfig:
    """The quality reference of `run`: the same run with its backend replaced by the reference's YAML.

    Raises ConfigError naming the valid choices when `quality.reference` names no backend."""
    name = reference_name(run.quality.reference, device)
    if name == run.backend.name:
        return run
    valid = search.choices("backend")
    if name not in valid:
        raise ConfigError(f"quality.reference: unknown backend {name!r}; choose auto or one of "
                          f"{', '.join(sorted(valid))}")
    try:
        backend, cls = backend_spec(search.load("backend", name), name)
        ref = replace(run, backend=backend)
        check_engine(ref, ref.engine_view(device), cls)
    except ConfigError as exc:
        raise ConfigError(f"quality.reference {name}: {exc}") from None
    return ref


def plan_run(cfg: dict, backend_name: str, search: ConfigSearch, order: int = 0,
             sweep_id: str | None = None) -> Plan:
    """Validate the composed config (a plain dict) into a plan; raises ConfigError with one line."""
    run = RunConfig.from_dict(cfg, backend_name)
    settings = SweepSettings.from_dict(cfg)
    device = resolve_device(run.device)
    view = run.engine_view(device)
    applies = decoder_quality_applies(run.quality.enabled, run.weights, run.task)
    reference = None
    if run.quality.reference != "auto" or applies:
        reference = reference_run(run, device, search)  # a bad name fails here, before anything loads
    return Plan(kind="run", run=run, device=device, run_id=content_key(run.identity()), engine_run=view,
                settings=settings, order=order, sweep_id=sweep_id, reference=reference if applies else None,
                config=run.to_dict())
