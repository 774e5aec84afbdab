"""The one place quantbench's measurements open NVML."""
from __future__ import annotations

from typing import Any


def device_handle(index: int = 0) -> tuple[Any, Any]:
    """(pynvml module, handle of device `index`); raises whatever NVML raises when it is not there."""
    import pynvml

    pynvml.nvmlInit()
    return pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)


def text(value: Any) -> str:
    """NVML strings are bytes in older bindings."""
    return value.decode() if isinstance(value, bytes) else str(value)
