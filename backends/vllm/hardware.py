"""Which GPU this is, and whether a backend's minimum compute capability refuses it before loading."""
from __future__ import annotations


from backends.contract import RunFailure
from backends.contract.nvml import device_handle, text
from backends.vllm.options import Options


def gpu_capability() -> tuple[tuple[int, int] | None, str]:
    """Compute capability and name of the first visible GPU, via NVML (no CUDA context) or torch."""
    try:
        nvml, handle = device_handle(0)
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        return (int(major), int(minor)), text(nvml.nvmlDeviceGetName(handle))
    except Exception:  # noqa: BLE001 — fall back to torch
        pass
    try:
        import torch

        if torch.cuda.is_available():
            return tuple(torch.cuda.get_device_capability(0)), torch.cuda.get_device_name(0)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001
        pass
    return None, ""


def capability_failure(options: Options, capability: tuple[int, int] | None, gpu_name: str = "") -> RunFailure | None:
    """unsupported_hardware when the GPU is below `min_capability` (checked before anything loads)."""
    if options.min_capability is None or capability is None:
        return None
    have = capability[0] * 10 + capability[1]
    if have >= options.min_capability:
        return None
    need = f"{options.min_capability // 10}.{options.min_capability % 10}"
    what = options.quantization if options.quantization != "none" else "this backend"
    name = f" ({gpu_name})" if gpu_name else ""
    return RunFailure("unsupported_hardware",
                      f"{what} needs compute capability >= {need}, this GPU is {capability[0]}.{capability[1]}{name}")
