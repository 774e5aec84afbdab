"""Batch-1 decode roofline: how far eager decoding is from the GPU's memory-bandwidth limit."""
from __future__ import annotations

import re

from backends.contract import Metric

METRICS = (
    Metric("decode_weight_bandwidth_gb_per_s", "Batch-1 decode weight bandwidth, GB/s", "higher", "efficiency",
           "point", task="causal_lm"),
    Metric("decode_weight_bandwidth_of_peak_pct", "Batch-1 decode weight bandwidth, % of GPU peak", "higher",
           "efficiency", "point", task="causal_lm"),
)

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


def decode_roofline(weights_mib: float | None, tpot_ms: float | None, gpu_name: str | None) -> tuple[dict, dict]:
    """Achieved weight bandwidth at batch-1 decode: every decode step reads all weights once.

    Returns (metrics, absent). Lower bound on real traffic (KV cache and activations are not counted).
    """
    keys = ("decode_weight_bandwidth_gb_per_s", "decode_weight_bandwidth_of_peak_pct")
    if not weights_mib or not tpot_ms:
        why = "no engine-reported weight size" if not weights_mib else "no decode steps measured"
        return {}, dict.fromkeys(keys, why)
    achieved = weights_mib * 1024 * 1024 / (tpot_ms / 1e3) / 1e9
    metrics = {keys[0]: float(f"{achieved:.5g}")}  # a tiny model on a CPU reads well under 0.1 GB/s
    peak = peak_bandwidth_gb_per_s(gpu_name)
    if peak is None:
        return metrics, {keys[1]: f"peak bandwidth of {gpu_name or 'this device'} not in quantbench's table"}
    metrics[keys[1]] = float(f"{100 * achieved / peak:.5g}")
    return metrics, {}


def add_roofline(points: list, weights_mib: float | None, device: str, gpu_name: str | None) -> None:
    """Batch-1 decode weight bandwidth on each ok batch-1 point, once the engine has said how big its
    weights are."""
    for p in points:
        if "tpot_ms" not in p.metrics or p.batch_size != 1 or p.status != "ok":
            continue
        metrics, absent = decode_roofline(weights_mib, p.metrics["tpot_ms"].median, gpu_name)
        if device != "cuda":
            absent["decode_weight_bandwidth_of_peak_pct"] = "CPU run: the roofline is against GPU memory bandwidth"
        p.metrics.update(metrics)
        p.absent.update({k: v for k, v in absent.items() if k not in metrics})
