"""Energy over a measured region (NVML's total-energy counter) and the batch-1 decode roofline.

Energy is the whole GPU's, read from `nvmlDeviceGetTotalEnergyConsumption` (millijoules since the
driver loaded) before and after the timed repeats: it includes the GPU's idle floor, which is what a
deployment pays too. Hosts without the counter (CPU runs, GPUs before Volta) leave it absent.
"""
from __future__ import annotations

import re

# Peak DRAM bandwidth in GB/s (10^9 bytes/s) from the vendors' datasheets, matched against the NVML
# device name (most specific first). A GPU not listed leaves the roofline column absent, not guessed.
PEAK_BANDWIDTH_GB_PER_S: tuple[tuple[str, float], ...] = (
    (r"H200", 4800.0),
    (r"H100.*(PCIe|PCI-E)", 2000.0),
    (r"H100.*NVL", 3900.0),
    (r"H100", 3350.0),  # SXM5 80 GB
    (r"GH200", 4000.0),
    (r"B200", 8000.0),
    (r"A100.*80", 2039.0),
    (r"A100", 1555.0),
    (r"L40S", 864.0),
    (r"L40", 864.0),
    (r"L4\b", 300.0),
    (r"A10G", 600.0),
    (r"A10\b", 600.0),
    (r"T4\b", 320.0),
    (r"V100", 900.0),
    (r"RTX 4090", 1008.0),
    (r"RTX 3090", 936.0),
)


def peak_bandwidth_gb_per_s(gpu_name: str | None) -> float | None:
    for pattern, gb_s in PEAK_BANDWIDTH_GB_PER_S:
        if gpu_name and re.search(pattern, gpu_name):
            return gb_s
    return None


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
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
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


def decode_roofline(weights_mib: float | None, tpot_ms: float | None, gpu_name: str | None) -> tuple[dict, dict]:
    """Achieved weight bandwidth at batch-1 decode: every decode step reads all weights once.

    Returns (metrics, absent). Lower bound on real traffic (KV cache and activations are not counted).
    """
    keys = ("decode_weight_bandwidth_gb_per_s", "decode_weight_bandwidth_of_peak_pct")
    if not weights_mib or not tpot_ms:
        why = "no engine-reported weight size" if not weights_mib else "no decode steps measured"
        return {}, dict.fromkeys(keys, why)
    achieved = weights_mib * 1024 * 1024 / (tpot_ms / 1e3) / 1e9
    metrics = {keys[0]: round(achieved, 1)}
    peak = peak_bandwidth_gb_per_s(gpu_name)
    if peak is None:
        return metrics, {keys[1]: f"peak bandwidth of {gpu_name or 'this device'} not in quantbench's table"}
    metrics[keys[1]] = round(100 * achieved / peak, 1)
    return metrics, {}
