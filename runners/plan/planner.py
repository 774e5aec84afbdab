"""From a composed Hydra config to one validated plan: the run, its device, its quality reference.

Everything a run needs is decided here, once, in the process that owns the sweep: the config is
validated, `device=auto` resolved (and `device=cuda` refused on a machine without a GPU), the quality
reference planned and validated as well. The plan is written to `plan.json` and rebuilt in the
child from that data, never resolved again. A plan carries a random id that the child checks, so a
worker can never measure a plan that another sweep wrote.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.contract import ConfigError, content_key
from runners.plan.config import RunConfig
from runners.plan.search import ConfigSearch

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
    plan_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    order: int = 0
    sweep_id: str | None = None
    # For kind run: the reference's config when decoder quality applies (the run's own when it is
    # the reference), and what the launcher found or made of its outputs (ReferenceStatus fields).
    reference: RunConfig | None = None
    reference_status: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "plan_id": self.plan_id, "run_id": self.run_id, "device": self.device,
                "order": self.order, "sweep_id": self.sweep_id, "run": self.run.to_dict(),
                "reference": self.reference.to_dict() if self.reference else None,
                "reference_status": self.reference_status}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Plan":
        return Plan(kind=d["kind"], run=RunConfig.from_plan(d["run"]), device=d["device"], run_id=d["run_id"],
                    plan_id=d["plan_id"], order=d.get("order", 0), sweep_id=d.get("sweep_id"),
                    reference=RunConfig.from_plan(d["reference"]) if d.get("reference") else None,
                    reference_status=d.get("reference_status"))

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, default=str))

    @staticmethod
    def read(path: Path, plan_id: str) -> "Plan":
        """The plan at `path`, if it is the one the launcher wrote for this child (else ConfigError)."""
        d = json.loads(Path(path).read_text())
        if d.get("plan_id") != plan_id:
            raise ConfigError(f"{path} holds plan {d.get('plan_id')}, not {plan_id}: another sweep wrote into this "
                              "directory; refusing to measure someone else's plan")
        return Plan.from_dict(d)


def plan_run(cfg: dict, backend_name: str, search: ConfigSearch, order: int = 0,
             sweep_id: str | None = None) -> Plan:
    """Validate the composed config (a plain dict) into a plan; raises ConfigError with one line."""
    from runners.quality.reference import applies, plan_reference

    run = RunConfig.from_dict(cfg, backend_name)
    device = resolve_device(run.device)
    reference = None
    if run.quality.reference != "auto" or applies(run):
        reference = plan_reference(run, device, search)  # a bad name fails here, before anything loads
    return Plan(kind="run", run=run, device=device, run_id=content_key(run.identity()), order=order,
                sweep_id=sweep_id, reference=reference if applies(run) else None)
