"""The environment a result was measured in: hardware, driver, versions, commit."""
from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import platform
import socket
import subprocess
import sys
from pathlib import Path

PACKAGES = ("torch", "transformers", "accelerate", "bitsandbytes", "vllm", "onnxruntime", "onnxruntime-gpu",
            "onnx", "hydra-core", "numpy", "nvidia-ml-py", "quantbench")


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def git_commit() -> dict[str, str | bool | None]:
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha, "dirty": dirty}


def gpu_info() -> dict:
    """GPU facts from torch and NVML, if there is a GPU; {} otherwise."""
    info: dict = {}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu_name=props.name, capability=f"{props.major}.{props.minor}",
                    total_vram_mib=round(props.total_memory / 2**20), cuda_runtime=torch.version.cuda,
                    gpu_count=torch.cuda.device_count())
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(h)
        info.setdefault("gpu_name", name.decode() if isinstance(name, bytes) else name)
        drv = pynvml.nvmlSystemGetDriverVersion()
        info["driver"] = drv.decode() if isinstance(drv, bytes) else drv
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        info["cuda_driver"] = f"{cuda // 1000}.{(cuda % 1000) // 10}"
        info["sm_clock_max_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM)
        info["power_limit_w"] = pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000
    except Exception:  # noqa: BLE001 — no NVML on CPU machines; torch's facts above still stand
        pass
    return info


def capture(device: str) -> dict:
    return {
        "device": device,
        **({"gpu": gpu_info()} if device == "cuda" else {}),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": _cpu_count(),
        "host": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "git": git_commit(),
        "captured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _cpu_count() -> int | None:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()
