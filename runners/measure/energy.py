"""Energy over a measured region (NVML's total-energy counter).

Energy is the whole GPU's, read from `nvmlDeviceGetTotalEnergyConsumption` (millijoules since the
driver loaded) before and after the timed repeats: it includes the GPU's idle floor, which is what a
deployment pays too. Hosts without the counter (CPU runs, GPUs before Volta) leave it absent.
"""
from __future__ import annotations

from runners.measure.nvml import device_handle


class EnergyMeter:
    """`start()` then `stop()` -> joules, or None with `reason` set."""

    def __init__(self, device: str, device_index: int = 0):
        self.reason: str | None = None
        self._handle = None
        self._start_mj: int | None = None
        if device != "cuda":
            self.reason = "CPU run: NVML's energy counter is GPU-only"
            return
        try:
            self._nvml, self._handle = device_handle(device_index)
            self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except Exception as exc:  # noqa: BLE001 — no counter just makes the metric absent
            self._handle = None
            self.reason = f"NVML energy counter unavailable: {type(exc).__name__}: {exc}"

    def _read_mj(self) -> int:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)

    def start(self) -> None:
        if self._handle is not None:
            self._start_mj = self._read_mj()

    def stop(self) -> float | None:
        if self._handle is None or self._start_mj is None:
            return None
        joules = (self._read_mj() - self._start_mj) / 1e3
        if joules <= 0:
            # The counter updates every few ms: a region shorter than that reads nothing.
            self.reason = "measured region too short for NVML's energy counter"
            return None
        return joules
