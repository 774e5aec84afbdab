"""Where a backend's time goes: one classifier, shared by every engine, turns a profiler's trace into a
time breakdown per output token (or per example).

An engine's profiled pass hands back a `Trace`: the device activity it saw (GPU kernels and copies on
a GPU; the leaf operators' own time on a CPU, where the CPU is the device), the host-side events that
matter for why a GPU waits (kernel launches, synchronizations), and the profiled span. This module
classifies every device activity by name, with a registry of classes and their name patterns (first
match wins, so specific classes come before general ones), and reports per unit of work:
- time per class (the unclassified share is `other`, shown, never hidden);
- the device's busy share of the profiled span (on a GPU, the rest is the host: launches, Python,
  synchronization);
- kernel launches and host<->device synchronizations;
- the top activities by time.
The classes' names and patterns are README material ("Why a backend is slow"): change them here only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from backends.contract import Metric
from backends.contract.profiling import Activity, Trace

# (class, label, pattern): matched case-insensitively against an activity's name, in this order.
CLASSES: tuple[tuple[str, str, str], ...] = (
    ("quantized_matmul", "quantized matmul",
     r"igemm|i8\d*gemm|int8.*(gemm|matmul)|gemm.*int8|imma|i8i8|s8s8|matmulinteger|matmulnbits|marlin|machete|scaled_mm|"
     r"fp8.*gemm|cutlass.*(fp8|e4m3)|gemv_4bit|kgemm_4bit|gemm_4bit|kdequantize.*gemm|awq.*gemm|gptq|"
     r"bnb.*matmul|int8_linear|_int_mm|mm_int8"),
    ("activation_quant", "activation (de)quantization",
     r"quant|vectorwise|double_row|extract_outliers|absmax"),
    ("attention", "attention",
     r"attention|attn|flash|fmha|sdpa|scaled_dot_product|paged|softmax"),
    ("float_matmul", "float matmul",
     r"gemm|gemv|matmul|\bmm\b|aten::mm|aten::bmm|addmm|linear|cublas|cutlass|sm90_xmma|ampere_.*gemm|"
     r"s\d+gemm|hgemm|sgemm|dot"),
    ("sampling", "sampling",
     r"argmax|topk|top_k|sample|multinomial|sort"),
    ("norms_elementwise", "norms and elementwise",
     r"norm|rms|elementwise|vectorized|unrolled|add|mul|sub|div|silu|gelu|relu|sigmoid|tanh|exp|pow|rsqrt|"
     r"mean|sum|reduce|rotary|rope|act_and_mul|where|neg|cos|sin|fill"),
    ("copies_indexing", "copies and indexing",
     r"memcpy|memset|copy|index|gather|scatter|cat|slice|transpose|contiguous|view|reshape|expand|clone|"
     r"embedding|to_copy|_to|narrow|select|stack|split|pad|concat|unsqueeze|squeeze|permute"),
)
# Kernel names whose generic parts would match an earlier class wrongly, seen on an H200 (torch 2.11, bitsandbytes
# 0.50): cuBLAS's Hopper GEMMs are `nvjet_sm90_*` ("splitK" would read as a copy, the rest as nothing);
# bitsandbytes' int8 GEMM is CUTLASS's `i16832gemm_s8`; torch.cat and dtype casts are "vectorized"
# elementwise kernels that copy. Checked before CLASSES.
SPECIFIC: tuple[tuple[str, str], ...] = (
    ("quantized_matmul", r"i\d+gemm_s8|gemm_s8|_s8s8"),
    ("float_matmul", r"nvjet"),
    ("copies_indexing", r"catarraybatchedcopy|direct_copy_kernel|memcpy|memset"),
)
OTHER = ("other", "other (unclassified)")
CLASS_KEYS: tuple[str, ...] = tuple(c for c, _, _ in CLASSES) + (OTHER[0],)
_COMPILED = tuple((c, re.compile(p, re.IGNORECASE)) for c, p in SPECIFIC) + tuple(
    (c, re.compile(p, re.IGNORECASE)) for c, _, p in CLASSES)
TOP_N = 10


def classify(name: str) -> str:
    for cls, pattern in _COMPILED:
        if pattern.search(name):
            return cls
    return OTHER[0]


def _metric_key(cls: str) -> str:
    return f"time_{cls}_ms"


UNIT = "unit"  # an output token (generate), an example (classify): the tables say so


def metrics_for(unit: str = UNIT) -> tuple[Metric, ...]:
    """The breakdown's declarations, per unit of work (an output token; an example for classifiers)."""
    labels = dict((c, lab) for c, lab, _ in CLASSES) | {OTHER[0]: OTHER[1]}
    out = [Metric(_metric_key(c), f"Profiled time in {labels[c]}, ms per {unit}", "lower", "efficiency", "point",
                  "not profiled (profile=false)", compared=False, zero_is_real=True) for c in CLASS_KEYS]
    out += [
        Metric("profiled_device_ms", f"Profiled device time, ms per {unit}", "lower", "efficiency", "point",
               "not profiled (profile=false)", compared=False),
        Metric("device_busy_pct", "Profiled device busy share, %", "higher", "efficiency", "point",
               "not profiled (profile=false)", compared=False),
        Metric("unclassified_pct", "Profiled unclassified device time, %", "none", "efficiency", "point",
               "not profiled (profile=false)", compared=False, zero_is_real=True),
        Metric("kernel_launches_per_unit", f"Profiled kernel launches per {unit}", "lower", "efficiency", "point",
               "not profiled (profile=false)", compared=False, unitless=True, zero_is_real=True),
        Metric("host_syncs_per_unit", f"Profiled host-device synchronizations per {unit}", "lower", "efficiency",
               "point", "not profiled (profile=false)", compared=False, unitless=True, zero_is_real=True),
    ]
    return tuple(out)


@dataclass
class Breakdown:
    metrics: dict[str, float]
    absent: dict[str, str]
    facts: dict[str, object]  # top activities, the trace file, the profiler, classes' totals


def breakdown(trace: Trace) -> Breakdown:
    """The per-unit breakdown of a trace (every class present, 0 where it took no time)."""
    units = max(1, trace.units)
    by_class = dict.fromkeys(CLASS_KEYS, 0.0)
    by_name: dict[str, list[float]] = {}
    for a in trace.activities:
        by_class[classify(a.name)] += a.dur_us
        by_name.setdefault(a.name, [0.0, 0])
        by_name[a.name][0] += a.dur_us
        by_name[a.name][1] += 1
    total_us = sum(by_class.values())
    metrics = {_metric_key(c): round(us / 1e3 / units, 6) for c, us in by_class.items()}
    # Measured apart from the activities (kernel-interval union, or top-level operators' time): the
    # classes must add up to it, and `classified_of_device_pct` says how well they do.
    metrics["profiled_device_ms"] = round(trace.device_us / 1e3 / units, 6)
    absent: dict[str, str] = {}
    if total_us > 0:
        metrics["unclassified_pct"] = round(100.0 * by_class[OTHER[0]] / total_us, 3)
    else:
        absent["unclassified_pct"] = "the profiler saw no device activity"
    if trace.span_us > 0 and trace.device == "cuda":
        # Kernels on several streams can overlap: the busy share is capped at 100%.
        metrics["device_busy_pct"] = round(min(100.0, 100.0 * trace.device_us / trace.span_us), 3)
    else:
        absent["device_busy_pct"] = ("CPU run: the CPU is the device, and busy with the host's work too"
                                     if trace.device != "cuda" else "no profiled span")
    for key, count, why in (("kernel_launches_per_unit", trace.launches, "no kernel launches seen (CPU run)"),
                            ("host_syncs_per_unit", trace.syncs, "no host-device synchronization seen (CPU run)")):
        if count is None:
            absent[key] = why
        else:
            metrics[key] = round(count / units, 3)
    top = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:TOP_N]
    facts: dict[str, object] = {
        "profiler": trace.profiler, "device": trace.device, "units": units, "span_ms": round(trace.span_us / 1e3, 3),
        "classes_sum_of_device_pct": round(100.0 * total_us / trace.device_us, 2) if trace.device_us else None,
        "top": [{"name": n[:160], "class": classify(n), "ms_per_unit": round(v[0] / 1e3 / units, 6), "calls": v[1]}
                for n, v in top],
        "trace_file": trace.trace_file, "notes": list(trace.notes), **trace.facts,
    }
    return Breakdown(metrics, absent, facts)


def why_slower(metrics: dict[str, float], label_unit: str = "token") -> str | None:
    """One clause on where a slower backend's time goes ("GPU idle 94% of the step; 168 host
    synchronizations per token"), from its breakdown; None without one."""
    parts = []
    busy = metrics.get("device_busy_pct")
    if busy is not None:
        parts.append(f"GPU idle {100 - busy:.0f}% of the step")
    syncs = metrics.get("host_syncs_per_unit")
    if syncs:
        parts.append(f"{syncs:.0f} host synchronizations per {label_unit}")
    classes = {c: metrics.get(_metric_key(c), 0.0) for c in CLASS_KEYS}
    total = sum(classes.values())
    if total > 0:
        top, ms = max(classes.items(), key=lambda kv: kv[1])
        labels = dict((c, lab) for c, lab, _ in CLASSES) | {OTHER[0]: "unclassified work"}
        parts.append(f"{labels[top]} {100 * ms / total:.0f}% of device time")
    return "; ".join(parts) or None


def activities_from(events: Iterable[dict]) -> list[Activity]:
    """Chrome-trace events (`ph: X` with a `dur`) -> activities; for a trace already filtered to device work."""
    return [Activity(str(e.get("name", "?")), float(e.get("dur", 0.0))) for e in events
            if e.get("ph") == "X" and e.get("dur") is not None]
