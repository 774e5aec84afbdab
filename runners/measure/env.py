"""The environment a result was measured in: hardware, driver, versions, commit, and how busy the host was.

On a shared CPU machine the load average decides whether a number is a finding or noise (fp32 batch 4
measured 1.40 tok/s in a busy sweep and 37.7 tok/s on a quiet machine), so every record keeps the
load at the start and end of its run beside the CPU model and the threads torch used.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

from backends.contract import installed_versions
from backends.contract.nvml import text, visible_handles

CORE_PACKAGES = ("torch", "transformers", "tokenizers", "accelerate", "safetensors", "hydra-core", "numpy",
                 "nvidia-ml-py", "quantbench")


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of quantbench's core packages and `extra` (e.g. every engine's declared ones)."""
    return installed_versions(CORE_PACKAGES + tuple(extra))


def git_commit() -> dict[str, str | bool | None]:
    # The checkout this code runs from (an installed wheel has none: commit is then null).
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=5).stdout.strip()) if sha else None
    except (OSError, subprocess.SubprocessError):
        sha = dirty = None
    return {"commit": sha, "dirty": dirty, "trees": source_trees(root)}


SOURCE_DIRS = ("backends", "runners", "conf", "scripts")
_NOT_SOURCE = ("__pycache__", ".pytest_cache")


def _git_tree(path: Path) -> bytes | None:
    """Git's object id of the tree `path` would be committed as (None when it holds no file).

    Why: a GPU host gets a copy of the working tree whose `.git` may be stale, so `HEAD` there can
    name the wrong commit; this id is computed from the files themselves and equals
    `git rev-parse <commit>:<dir>` for exactly the commits whose folder held the same bytes.
    """
    entries = []
    for child in path.iterdir():
        if child.name in _NOT_SOURCE or child.name.endswith((".pyc", ".egg-info")):
            continue
        if child.is_symlink():
            target = os.readlink(child).encode()
            entries.append((child.name, b"120000", _object(b"blob", target)))
        elif child.is_dir():
            sub = _git_tree(child)
            if sub is not None:
                entries.append((child.name + "/", b"40000", sub))
        elif child.is_file():
            mode = b"100755" if os.access(child, os.X_OK) else b"100644"
            entries.append((child.name, mode, _object(b"blob", child.read_bytes())))
    if not entries:
        return None
    # Git orders a tree's entries by name, a folder's name read as if it ended in "/".
    body = b"".join(mode + b" " + name.rstrip("/").encode() + b"\0" + sha
                    for name, mode, sha in sorted(entries, key=lambda e: e[0].encode()))
    return _object(b"tree", body)


def _object(kind: bytes, data: bytes) -> bytes:
    return hashlib.sha1(kind + b" %d\0" % len(data) + data).digest()


def source_trees(root: Path) -> dict[str, str]:
    """Git tree ids of the checkout's source folders, from their files (see `_git_tree`); {} outside one."""
    if not (root / "pyproject.toml").is_file():
        return {}
    out = {}
    for name in SOURCE_DIRS:
        if (root / name).is_dir():
            tree = _git_tree(root / name)
            if tree is not None:
                out[name] = tree.hex()
    return out


def gpu_info() -> dict:
    """GPU facts from torch and NVML, if there is a GPU; {} otherwise."""
    info: dict = {}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu_name=props.name, capability=f"{props.major}.{props.minor}",
                    total_vram_mib=round(props.total_memory / 2**20), cuda_runtime=torch.version.cuda,
                    gpu_count=torch.cuda.device_count())
    info["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        nvml, handles = visible_handles()
        # Every GPU the run could use (a tensor-parallel run uses several): name, bus id, memory.
        info["gpus"] = [{"name": text(nvml.nvmlDeviceGetName(g)), "uuid": text(nvml.nvmlDeviceGetUUID(g)),
                         "pci_bus_id": text(nvml.nvmlDeviceGetPciInfo(g).busId),
                         "total_mib": round(nvml.nvmlDeviceGetMemoryInfo(g).total / 2**20)} for g in handles]
        h = handles[0]
        info.setdefault("gpu_name", text(nvml.nvmlDeviceGetName(h)))
        info["driver"] = text(nvml.nvmlSystemGetDriverVersion())
        cuda = nvml.nvmlSystemGetCudaDriverVersion()
        info["cuda_driver"] = f"{cuda // 1000}.{(cuda % 1000) // 10}"
        info["sm_clock_max_mhz"] = nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_SM)
        info["power_limit_w"] = nvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000
    except Exception:  # noqa: BLE001 — no NVML on CPU machines; torch's facts above still stand
        pass
    return info


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def capture(device: str, packages: tuple[str, ...] = ()) -> dict:
    return {
        "device": device,
        **({"gpu": gpu_info()} if device == "cuda" else {}),
        "cpu": cpu_model(),
        "cpu_count": _cpu_count(),
        "torch_threads": torch_threads(),
        "host": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(packages),
        "git": git_commit(),
        "captured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _cpu_count() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()
