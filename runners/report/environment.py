"""What the runs were measured on, from the records' `env`: the report's title and environment block.

On a shared CPU the load average decides whether a number is a finding or noise, so each run's load
average at its start and end is listed beside the CPU model and torch's thread count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runners.record.schema import RunRecord


@dataclass(frozen=True)
class RunEnv:
    """One run's host state (the 1-minute load average at its start and end)."""

    record: RunRecord
    load_start: float | None
    load_end: float | None
    cpu_count: int | None
    torch_threads: int | None

    @property
    def busy(self) -> bool:
        """Other work held the CPU before this run began: load above the cores it could use."""
        return bool(self.load_start is not None and self.cpu_count and self.load_start >= self.cpu_count)


def _first_load(value: Any) -> float | None:
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (int, float)):
        return float(value[0])
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def run_env(record: RunRecord) -> RunEnv:
    env = record.env or {}
    load = env.get("load_average") or {}
    return RunEnv(record, _first_load(load.get("start")), _first_load(load.get("end")), env.get("cpu_count"),
                  env.get("torch_threads"))


def _distinct(values: list[Any]) -> str:
    return " / ".join(dict.fromkeys(str(v) for v in values if v not in (None, "", {}, [])))


def _gpu_text(g: dict) -> str | None:
    if not g.get("gpu_name"):
        return None
    extra = [f"cc {g['capability']}" if g.get("capability") else "",
             f"{g['total_vram_mib']:,} MiB" if isinstance(g.get("total_vram_mib"), (int, float)) else ""]
    extra = [x for x in extra if x]
    return g["gpu_name"] + (f" ({', '.join(extra)})" if extra else "")


def _cuda_text(g: dict) -> str | None:
    parts = [f"runtime {g['cuda_runtime']}" if g.get("cuda_runtime") else "",
             f"driver {g['cuda_driver']}" if g.get("cuda_driver") else ""]
    return ", ".join(p for p in parts if p) or None


def _packages(envs: list[dict]) -> str:
    """Every package any run recorded, each with its distinct versions (`torch 2.8.0`, `vllm 0.26.0/0.27.0`)."""
    versions: dict[str, list[str]] = {}
    for env in envs:
        for name, version in (env.get("packages") or {}).items():
            if str(version) not in versions.setdefault(name, []):
                versions[name].append(str(version))
    return ", ".join(f"{name} {'/'.join(vs)}" for name, vs in versions.items())


def _commit(env: dict) -> str | None:
    git = env.get("git") or {}
    if not git.get("commit"):
        return None
    return git["commit"][:12] + (" (uncommitted changes)" if git.get("dirty") else "")


def _span(stamps: list[str]) -> str:
    stamps = sorted(s for s in stamps if s)
    if not stamps:
        return ""
    return stamps[0] if stamps[0] == stamps[-1] else f"{stamps[0]} … {stamps[-1]}"


def device_text(records: list[RunRecord]) -> str:
    """`NVIDIA H200` or `CPU (Intel Xeon ...)`: the hardware the numbers belong to."""
    gpus = _distinct([(r.env.get("gpu") or {}).get("gpu_name") for r in records if r.device == "cuda" and r.env])
    if gpus:
        return gpus
    cpus = _distinct([r.env.get("cpu") for r in records if r.env])
    devices = _distinct([r.device for r in records if r.device not in ("auto", "None")])
    if devices == "cpu" or cpus:
        return f"CPU ({cpus})" if cpus else "CPU"
    return devices or "unknown device"


def title(records: list[RunRecord], backends: list[str]) -> str:
    """What was compared: models, backends, device — not the folder's name."""
    if not records:
        return "quantbench: no records"
    models = ", ".join(dict.fromkeys(r.model for r in records))
    return f"quantbench: {models} — {' vs '.join(backends)} on {device_text(records)}"


def summary(records: list[RunRecord]) -> list[tuple[str, str]]:
    """(label, text) rows of the environment block; rows with nothing known are left out."""
    envs = [r.env for r in records if r.env]
    gpus = [e.get("gpu") or {} for e in envs]
    pairs = [
        ("Device", _distinct([r.device for r in records])),
        ("Weights", _distinct([r.weights for r in records])),
        ("GPU", _distinct([_gpu_text(g) for g in gpus])),
        ("Driver", _distinct([g.get("driver") for g in gpus])),
        ("CUDA", _distinct([_cuda_text(g) for g in gpus])),
        ("CPU", _distinct([f"{e.get('cpu')} ×{e.get('cpu_count')}" for e in envs if e.get("cpu")])),
        ("Torch threads", _distinct([e.get("torch_threads") for e in envs])),
        ("Host", _distinct([e.get("host") for e in envs])),
        ("OS", _distinct([e.get("os") for e in envs])),
        ("Python", _distinct([e.get("python") for e in envs])),
        ("Packages", _packages(envs)),
        ("Git commit", _distinct([_commit(e) for e in envs])),
        ("Runs", f"{len(records)} ({sum(r.status == 'ok' for r in records)} ok)"),
        ("Started", _span([r.started_at for r in records])),
    ]
    return [(k, v) for k, v in pairs if v]
