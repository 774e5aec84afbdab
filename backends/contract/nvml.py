"""The one place quantbench opens NVML (runner and engines alike) and finds the GPUs this process may use.

NVML numbers GPUs physically and ignores CUDA_VISIBLE_DEVICES, so a run leased GPU 3 must read GPU 3,
not NVML's device 0: `visible_handles` maps the CUDA_VISIBLE_DEVICES entries (indices, or UUIDs as
schedulers write them) to NVML handles. The launcher sets CUDA_DEVICE_ORDER=PCI_BUS_ID so that CUDA's
indices are NVML's.
"""
from __future__ import annotations

import os
from typing import Any


def _nvml() -> Any:
    import pynvml

    pynvml.nvmlInit()
    return pynvml


def visible_handles() -> tuple[Any, list[Any]]:
    """(pynvml module, handles of the GPUs this process may use); raises what NVML raises without one."""
    nvml = _nvml()
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is None:
        return nvml, [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    handles = []
    for entry in (e.strip() for e in given.split(",") if e.strip()):
        if entry.isdigit():
            handles.append(nvml.nvmlDeviceGetHandleByIndex(int(entry)))
        else:
            handles.append(nvml.nvmlDeviceGetHandleByUUID(entry))
    return nvml, handles


def device_handle(index: int = 0) -> tuple[Any, Any]:
    """(pynvml module, handle of the `index`-th GPU this process may use)."""
    nvml, handles = visible_handles()
    if index >= len(handles):
        raise RuntimeError(f"no visible GPU {index} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')})")
    return nvml, handles[index]


def text(value: Any) -> str:
    """NVML strings are bytes in older bindings."""
    return value.decode() if isinstance(value, bytes) else str(value)
