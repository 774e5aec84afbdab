"""What an engine's profiled pass hands back: a `Trace` the runner's one classifier reads
(runners/measure/breakdown.py), and the helpers the torch engines share to make one.

A profiled pass is one more pass of the workload after the timed repeats, never mixed into them. The
engine runs it under its own profiler (torch's for torch engines, ONNX Runtime's for ONNX Runtime),
keeps the trace beside the record (a compressed Chrome trace: open it in Perfetto), and reduces it to:
- device activities with their own time: GPU kernels, copies and sets on a GPU; on a CPU, each
  operator's self time (its time less its children's), so that nothing is counted twice;
- the device time measured independently of the activities (the union of kernel intervals on a GPU,
  the top-level operators' time on a CPU), which the breakdown's classes must add up to;
- on a GPU, the host's kernel launches and its waits on the device (synchronize calls).
"""
from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from backends.contract.safefs import write_bytes

# Runtime calls that launch device work, and calls in which the host waits for the device.
LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch")
SYNC_CALLS = ("cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaEventSynchronize", "cudaMemcpy",
              "cudaStreamWaitEvent")
DEVICE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


@dataclass
class Activity:
    """One device activity: a GPU kernel or copy, or (CPU runs) an operator's self time."""

    name: str
    dur_us: float


@dataclass
class Trace:
    profiler: str  # "torch.profiler (CPU, CUDA)", "onnxruntime", ...
    device: str  # "cuda" | "cpu": where the activities ran
    span_us: float  # wall time of the profiled pass
    device_us: float  # device time measured apart from the activities (see the module doc)
    activities: list[Activity] = field(default_factory=list)
    launches: int | None = None  # kernel launches the host issued (GPU runs)
    syncs: int | None = None  # host waits on the device (GPU runs)
    units: int = 1  # output tokens (generate) or examples (classify) the pass produced
    trace_file: str | None = None
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # engine-specific findings (LLM.int8 outliers, ...)


def _union_us(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def _self_times(ops: list[dict]) -> tuple[list[Activity], float]:
    """CPU operators' self times (per thread, children subtracted by nesting) and the top-level time."""
    out: list[Activity] = []
    top_us = 0.0
    by_thread: dict[Any, list[dict]] = {}
    for e in ops:
        by_thread.setdefault((e.get("pid"), e.get("tid")), []).append(e)
    for events in by_thread.values():
        events.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack: list[list] = []  # [end_ts, name, dur, children_us]
        for e in events:
            ts, dur = float(e["ts"]), float(e["dur"])
            while stack and stack[-1][0] <= ts:
                end, name, d, child = stack.pop()
                out.append(Activity(name, max(0.0, d - child)))
            if stack:
                stack[-1][3] += dur
            else:
                top_us += dur
            stack.append([ts + dur, str(e.get("name", "?")), dur, 0.0])
        while stack:
            end, name, d, child = stack.pop()
            out.append(Activity(name, max(0.0, d - child)))
    return out, top_us


def trace_from_chrome(data: dict[str, Any], device: str, span_us: float, units: int, profiler: str) -> Trace:
    """A torch profiler's Chrome trace (`export_chrome_trace`) as a Trace."""
    events = [e for e in data.get("traceEvents", []) if e.get("ph") == "X" and "dur" in e and "ts" in e]
    if device == "cuda":
        dev = [e for e in events if e.get("cat") in DEVICE_CATEGORIES]
        activities = [Activity(str(e.get("name", "?")), float(e["dur"])) for e in dev]
        device_us = _union_us([(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in dev])
        runtime = [str(e.get("name", "")) for e in events if e.get("cat") == "cuda_runtime"]
        launches = sum(1 for n in runtime if n.startswith(LAUNCH_CALLS))
        syncs = sum(1 for n in runtime if n in SYNC_CALLS)
        return Trace(profiler, device, span_us, device_us, activities, launches, syncs, units)
    ops = [e for e in events if e.get("cat") == "cpu_op"]
    activities, top_us = _self_times(ops)
    return Trace(profiler, device, span_us, top_us, activities, None, None, units)


def save_trace(data: dict[str, Any], path: Path) -> str:
    """The Chrome trace, gzip-compressed, written atomically beside the record; returns its path."""
    write_bytes(path, gzip.compress(json.dumps(data).encode("utf-8"), compresslevel=6))
    return str(path)


def torch_profile(run_once: Callable[[], int], device: str, trace_path: Path) -> Trace:
    """One pass of `run_once` (returns the units it produced) under torch's profiler, CPU and CUDA."""
    import tempfile

    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=activities, record_shapes=False, with_stack=False) as prof:
        units = run_once()
        if device == "cuda":
            torch.cuda.synchronize()
    span_us = (time.perf_counter() - t0) * 1e6
    with tempfile.TemporaryDirectory(prefix="qb_trace_") as tmp:
        raw = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(raw))
        data = json.loads(raw.read_text())
    name = "torch.profiler (CPU" + (", CUDA)" if device == "cuda" else ")")
    trace = trace_from_chrome(data, device, span_us, units, name)
    trace.trace_file = save_trace(data, trace_path)
    return trace
