"""Energy over a measured region (NVML's total-energy counter).

Energy is the whole GPU's (summed over every GPU the run may use), read from `nvmlDeviceGetTotalEnergyConsumption` (millijoules since the
driver loaded) before and after the timed repeats: it includes the GPU's idle floor, which is what a
deployment pays too. Hosts without the counter (CPU runs, GPUs before Volta) leave it absent.
"""
from __future__ import annotations

from backends.contract import Metric
from backends.contract.nvml import visible_handles

METRICS = (Metric("energy_j", "Energy over the timed repeats (whole GPU), J", "lower", "efficiency", "point"),)


class EnergyMeter:
    """`start()` then `stop()` -> joules, or None with `reason` set."""

    def __init__(self, device: str):
        self.reason: str | None = None
        self._handles: list = []
        self._start_mj: int | None = None
        if device != "cuda":
            self.reason = "CPU run: NVML's energy counter is GPU-only"
            return
        try:
            self._nvml, self._handles = visible_handles()
            for h in self._handles:
                self._nvml.nvmlDeviceGetTotalEnergyConsumption(h)
        except Exception as exc:  # noqa: BLE001 — no counter just makes the metric absent
            self._handles = []
            self.reason = f"NVML energy counter unavailable: {type(exc).__name__}: {exc}"

    def _read_mj(self) -> int:
        return sum(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles)

    def start(self) -> None:
        if self._handles:
            self._start_mj = self._read_mj()

    def stop(self) -> float | None:
        if not self._handles or self._start_mj is None:
            return None
        joules = (self._read_mj() - self._start_mj) / 1e3
        if joules <= 0:
            # The counter updates every few ms: a region shorter than that reads nothing.
            self.reason = "measured region too short for NVML's energy counter"
            return None
        return joules
