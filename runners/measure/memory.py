"""Peak memory over a measured region, each kind labelled.

- `peak_allocated_mib` / `peak_reserved_mib`: PyTorch's CUDA caching allocator (after a reset). Blind
  to memory that other allocators take (ONNX Runtime's arena, vLLM's engine process, cuBLAS workspaces).
- `peak_process_vram_mib`: NVML's per-process usage summed over this process tree, sampled in a thread.
- `peak_device_vram_mib`: NVML's whole-device used memory, sampled (includes other tenants).
- `peak_rss_mib`: resident host memory of the process tree, sampled (the CPU number).
- `peak_vram_mib`: the largest of the per-process readings that were measured (device-wide readings
  include other tenants, so they never stand in for it): the one VRAM number a comparison uses.
A kind that cannot be read here is absent with the reason, never 0.
"""
from __future__ import annotations

import gc
import sys
import threading
import time
from dataclasses import dataclass, field

import psutil

from backends.contract import Metric
from backends.contract.nvml import visible_handles

MIB = 1024 * 1024
_NO_VRAM = "no per-process VRAM reading (torch allocator or NVML process tree)"
METRICS = (
    Metric("peak_vram_mib", "Peak VRAM (largest per-process reading), MiB", "lower", "memory", "point", _NO_VRAM),
    Metric("peak_allocated_mib", "Peak VRAM (torch allocator), MiB", "lower", "memory", "point"),
    Metric("peak_reserved_mib", "Peak VRAM (torch reserved), MiB", "lower", "memory", "point"),
    Metric("peak_process_vram_mib", "Peak VRAM (NVML, process tree), MiB", "lower", "memory", "point"),
    Metric("peak_device_vram_mib", "Peak VRAM (NVML, whole device), MiB", "lower", "memory", "point"),
    Metric("peak_rss_mib", "Peak host RSS, MiB", "lower", "memory", "point"),
)
PEAK_VRAM = "peak_vram_mib"
VRAM_READINGS = ("peak_process_vram_mib", "peak_reserved_mib", "peak_allocated_mib")


def with_peak_vram(values_mib: dict[str, float], absent: dict[str, str]) -> None:
    """Add `peak_vram_mib` (or why it is absent) from the per-process readings already in `values_mib`."""
    readings = [values_mib[k] for k in VRAM_READINGS if k in values_mib]
    if readings:
        values_mib[PEAK_VRAM] = max(readings)
        absent.pop(PEAK_VRAM, None)
    elif PEAK_VRAM not in values_mib:
        why = [absent[k] for k in VRAM_READINGS if k in absent]
        absent[PEAK_VRAM] = why[0] if why else _NO_VRAM


class _ProcessTree:
    """This process and its descendants, and their resident memory.

    Listing descendants makes psutil read every process's /proc entry; doing that on each 10 ms
    sample held the GIL for ~30% of a CPU decode loop and slowed the very run being measured. The
    list is refreshed every `refresh_s` (a new worker process appears within that), and each tick
    only reads the known processes' memory."""

    def __init__(self, refresh_s: float = 1.0):
        self._psutil = psutil
        self._me = psutil.Process()
        self._refresh_s = refresh_s
        self._listed_at = float("-inf")
        self._procs: list = [self._me]

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._listed_at >= self._refresh_s:
            self._listed_at = now
            try:
                self._procs = [self._me, *self._me.children(recursive=True)]
            except self._psutil.Error:
                self._procs = [self._me]

    def pids(self) -> set[int]:
        self._refresh()
        return {p.pid for p in self._procs}

    def rss_bytes(self) -> int:
        self._refresh()
        total = 0
        for p in self._procs:
            try:
                total += p.memory_info().rss
            except self._psutil.Error:  # ended since it was listed
                pass
        return total


class _Nvml:
    """NVML handles of every GPU this process may use (a tensor-parallel run has several), or the
    reason they are not available. Sums are over all of them: a TP-2 run holds memory on two GPUs."""

    def __init__(self) -> None:
        self.handles: list = []
        self.reason = None
        try:
            self.nvml, self.handles = visible_handles()
        except Exception as exc:  # noqa: BLE001 — any NVML failure just makes the metric absent
            self.reason = f"NVML unavailable: {type(exc).__name__}: {exc}"
        if not self.handles and self.reason is None:
            self.reason = "NVML shows no GPU for this process"

    @property
    def handle(self):  # noqa: ANN201 — truthy when NVML can be read
        return self.handles[0] if self.handles else None

    def device_used(self) -> int:
        return sum(self.nvml.nvmlDeviceGetMemoryInfo(h).used for h in self.handles)

    def process_used(self, pids: set[int]) -> int | None:
        """Bytes used by `pids`, or None when NVML lists no process of ours (PID namespaces hide them)."""
        mine = [p.usedGpuMemory for h in self.handles for p in self.nvml.nvmlDeviceGetComputeRunningProcesses(h)
                if p.pid in pids and p.usedGpuMemory is not None]
        return sum(mine) if mine else None


@dataclass
class MemoryPeaks:
    values_mib: dict[str, float] = field(default_factory=dict)
    absent: dict[str, str] = field(default_factory=dict)


class MemoryWatcher:
    """Usage: `with MemoryWatcher(device) as w: ...` then `w.peaks`."""

    def __init__(self, device: str, interval_s: float = 0.01):
        self.device = device
        self.interval_s = interval_s
        self.peaks = MemoryPeaks()
        self._stop = threading.Event()
        self._rss = 0
        self._proc = 0
        self._dev = 0
        self._proc_seen = False
        self._nvml: _Nvml | None = None
        self._tree = _ProcessTree()

    def _torch_cuda(self):
        torch = sys.modules.get("torch")
        if torch is not None and self.device == "cuda" and torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch
        return None

    def _sample(self) -> None:
        self._rss = max(self._rss, self._tree.rss_bytes())
        if self._nvml and self._nvml.handle is not None:
            self._dev = max(self._dev, self._nvml.device_used())
            used = self._nvml.process_used(self._tree.pids())
            if used is not None:
                self._proc_seen = True
                self._proc = max(self._proc, used)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> "MemoryWatcher":
        torch = self._torch_cuda()
        if torch is not None:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        if self.device == "cuda":
            self._nvml = _Nvml()
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="memory-watcher")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        torch = self._torch_cuda()
        if torch is not None:
            torch.cuda.synchronize()
        self._stop.set()
        self._thread.join()
        self._sample()
        self.peaks = self._collect(torch)
        with_peak_vram(self.peaks.values_mib, self.peaks.absent)

    def _collect(self, torch) -> MemoryPeaks:
        out = MemoryPeaks()
        out.values_mib["peak_rss_mib"] = self._rss / MIB
        if self.device != "cuda":
            for k in ("peak_allocated_mib", "peak_reserved_mib", "peak_process_vram_mib", "peak_device_vram_mib"):
                out.absent[k] = "CPU run: no device memory"
            return out
        if torch is not None and torch.cuda.max_memory_reserved() > 0:
            out.values_mib["peak_allocated_mib"] = torch.cuda.max_memory_allocated() / MIB
            out.values_mib["peak_reserved_mib"] = torch.cuda.max_memory_reserved() / MIB
        elif torch is not None:
            # CUDA is up here but nothing went through PyTorch's allocator: the model lives in another
            # process (vLLM's engine core) or allocator (ONNX Runtime's arena). 0 would read as "free".
            for k in ("peak_allocated_mib", "peak_reserved_mib"):
                out.absent[k] = "no PyTorch allocation in this process: the engine holds its memory elsewhere"
        else:
            for k in ("peak_allocated_mib", "peak_reserved_mib"):
                out.absent[k] = "engine does not allocate through PyTorch in this process"
        if self._nvml is None or self._nvml.handle is None:
            reason = self._nvml.reason if self._nvml else "NVML not started"
            out.absent["peak_process_vram_mib"] = reason
            out.absent["peak_device_vram_mib"] = reason
            return out
        out.values_mib["peak_device_vram_mib"] = self._dev / MIB
        if self._proc_seen:
            out.values_mib["peak_process_vram_mib"] = self._proc / MIB
        else:
            out.absent["peak_process_vram_mib"] = "NVML lists no process of this tree (PID namespace?)"
        return out


def free_memory() -> None:
    """Between batch sizes and after a failure: give back what the last one held."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
