"""The metrics registry: every number a record can hold, once — key, unit, label, better direction,
format, group, and where in a record it lives. Every writer (markdown, csv/jsonl, html, plots) and the
constraint solver read it; nothing else lists metrics.

A key ends in its unit (`ttft_ms`, `peak_rss_mib`, `kl_mean_nats`, `energy_j`); `Unit` says what the
suffix means, so the solver can convert `24GiB` or `500ms` into the metric's own unit.

Where a metric lives (`source`):
- `repeats`: a Stat dict per batch size (median, p90, p99, min, max, cv_pct, n, samples), measured over
  the timed repeats; the only metrics with a spread.
- `point`: one number per batch size (memory peaks, energy, roofline).
- `run`: one number per run in `record.load` (prepare, export, load, engine-reported memory).
- `quality`: one number per run in `record.quality`.
- `derived`: computed here from other measured metrics of the same batch size (never from a guess).

Info rows (`INFO`) are what the engine says it ran (kernels, census, placement): text, not numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal

Better = Literal["higher", "lower", "none"]
Group = Literal["speed", "memory", "efficiency", "load", "quality"]
Source = Literal["repeats", "point", "run", "quality", "derived"]
GROUPS: tuple[Group, ...] = ("speed", "memory", "efficiency", "load", "quality")


@dataclass(frozen=True)
class Unit:
    suffix: str  # how a key ends: "_ms"
    symbol: str  # how a value is written: "ms"
    dimension: str  # what converts into what: time, memory, rate, bandwidth, energy, percent, nats, ratio
    scale: float  # size in the dimension's base unit (s, bytes, 1/s, bytes/s, J, %, nats, 1)


# Longest suffix first: `_gb_per_s` before `_per_s`, `_ms` and `_mj` before `_s` and `_j`.
UNITS: tuple[Unit, ...] = (
    Unit("_gb_per_s", "GB/s", "bandwidth", 1e9),
    Unit("_per_s", "/s", "rate", 1.0),
    Unit("_nats", "nats", "nats", 1.0),
    Unit("_mib", "MiB", "memory", 2.0 ** 20),
    Unit("_pct", "%", "percent", 1.0),
    Unit("_ms", "ms", "time", 1e-3),
    Unit("_mj", "mJ", "energy", 1e-3),
    Unit("_s", "s", "time", 1.0),
    Unit("_j", "J", "energy", 1.0),
)
RATIO = Unit("", "", "ratio", 1.0)  # perplexity: no unit

# What a user may write after a number in a constraint (matched case-insensitively), per dimension.
UNIT_WORDS: dict[str, tuple[str, float]] = {
    **{w: ("time", s) for w, s in (("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0),
                                     ("sec", 1.0), ("min", 60.0))},
    **{w: ("memory", s) for w, s in (("B", 1.0), ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12),
                                       ("KiB", 2.0 ** 10), ("MiB", 2.0 ** 20), ("GiB", 2.0 ** 30),
                                       ("TiB", 2.0 ** 40))},
    **{w: ("rate", 1.0) for w in ("/s", "per_s", "tok/s", "tokens/s", "ex/s", "examples/s", "req/s",
                                  "requests/s")},
    **{w: ("bandwidth", s) for w, s in (("MB/s", 1e6), ("GB/s", 1e9), ("TB/s", 1e12))},
    **{w: ("energy", s) for w, s in (("mJ", 1e-3), ("J", 1.0), ("kJ", 1e3))},
    "%": ("percent", 1.0), "pct": ("percent", 1.0),
    "nats": ("nats", 1.0), "nat": ("nats", 1.0),
}


def unit_of(key: str) -> Unit:
    for unit in UNITS:
        if key.endswith(unit.suffix):
            return unit
    return RATIO


def split_unit(key: str) -> tuple[str, str]:
    """'ttft_ms' -> ('ttft', '_ms'): spread columns read `ttft_p90_ms`, the unit stays last."""
    suffix = unit_of(key).suffix
    return (key[: -len(suffix)], suffix) if suffix else (key, "")


@dataclass(frozen=True)
class Metric:
    key: str
    label: str  # unique; says the unit
    better: Better
    group: Group
    source: Source
    # Why a record that does not hold this key lacks it, when the record gives no reason itself.
    absent_default: str = "not reported by this run"
    # The model head it applies to (`causal_lm`, `sequence_classification`); None: every run.
    task: str | None = None
    digits: int = 3  # significant digits shown

    @property
    def positive(self) -> bool:
        """A time, rate, size or energy is never 0: a stored 0 was rounded away by its writer. (A KL or
        an agreement % can be 0.)"""
        return self.group != "quality"

    @property
    def unit(self) -> Unit:
        return unit_of(self.key)

    @property
    def name(self) -> str:
        return split_unit(self.key)[0]


GEN, CLS = "causal_lm", "sequence_classification"
_NO_VRAM = "no per-process VRAM reading (torch allocator or NVML process tree)"
METRICS: tuple[Metric, ...] = (
    # speed: medians over the timed repeats
    Metric("ttft_ms", "TTFT, ms", "lower", "speed", "repeats", task=GEN),
    Metric("tpot_ms", "Decode time per output token (TPOT), ms", "lower", "speed", "repeats", task=GEN),
    Metric("e2e_ms", "End-to-end latency per request, ms", "lower", "speed", "repeats", task=GEN),
    Metric("output_tokens_per_s", "Output tokens/s", "higher", "speed", "repeats", task=GEN),
    Metric("total_tokens_per_s", "Total (prompt + output) tokens/s", "higher", "speed", "repeats", task=GEN),
    Metric("requests_per_s", "Requests/s", "higher", "speed", "repeats", task=GEN),
    Metric("per_example_ms", "Latency, ms/example", "lower", "speed", "repeats", task=CLS),
    Metric("examples_per_s", "Examples/s", "higher", "speed", "repeats", task=CLS),
    Metric("batch_ms", "Latency per batch, ms", "lower", "speed", "repeats", task=CLS),
    # memory over the timed repeats
    Metric("peak_vram_mib", "Peak VRAM (largest per-process reading), MiB", "lower", "memory", "derived",
           _NO_VRAM),
    Metric("peak_allocated_mib", "Peak VRAM (torch allocator), MiB", "lower", "memory", "point"),
    Metric("peak_reserved_mib", "Peak VRAM (torch reserved), MiB", "lower", "memory", "point"),
    Metric("peak_process_vram_mib", "Peak VRAM (NVML, process tree), MiB", "lower", "memory", "point"),
    Metric("peak_device_vram_mib", "Peak VRAM (NVML, whole device), MiB", "lower", "memory", "point"),
    Metric("peak_rss_mib", "Peak host RSS, MiB", "lower", "memory", "point"),
    # efficiency
    Metric("energy_per_output_token_mj", "Energy per output token (whole GPU), mJ", "lower", "efficiency", "point",
           task=GEN),
    Metric("energy_per_example_mj", "Energy per example (whole GPU), mJ", "lower", "efficiency", "point", task=CLS),
    Metric("energy_j", "Energy over the timed repeats (whole GPU), J", "lower", "efficiency", "point"),
    Metric("decode_weight_bandwidth_gb_per_s", "Batch-1 decode weight bandwidth, GB/s", "higher", "efficiency",
           "point", task=GEN),
    Metric("decode_weight_bandwidth_of_peak_pct", "Batch-1 decode weight bandwidth, % of GPU peak", "higher",
           "efficiency", "point", task=GEN),
    # one-off costs and engine-reported memory, per run
    Metric("prepare_s", "Preparation (weights, export, quantization), s", "lower", "load", "run",
           "not timed by this run"),
    Metric("export_s", "ONNX export, s", "lower", "load", "run", "no export in this run (cached, or not ONNX)"),
    Metric("quantize_s", "Quantization (ONNX rewrite or llm-compressor), s", "lower", "load", "run",
           "no quantization step in this run (cached, or none)"),
    Metric("checkpoint_mib", "Quantized checkpoint on disk, MiB", "lower", "load", "run",
           "no quantized checkpoint (not a compressed-tensors backend)"),
    Metric("load_s", "Load time, s", "lower", "load", "run", "the run ended before the model loaded"),
    Metric("weights_mib", "Weights (engine-reported), MiB", "lower", "load", "run",
           "the engine reported no weight size"),
    Metric("kv_cache_mib", "KV cache (engine-reported), MiB", "none", "load", "run",
           "the engine reported no KV cache size"),
    Metric("model_load_mib", "Model load memory (vLLM-reported), MiB", "lower", "load", "run",
           "not a vLLM run, or vLLM did not log it"),
    Metric("onnx_artifact_mib", "ONNX model on disk, MiB", "lower", "load", "run", "not an ONNX Runtime run"),
    Metric("load_peak_allocated_mib", "Peak VRAM during load (torch allocator), MiB", "lower", "load", "run",
           "no torch allocator reading during load"),
    Metric("load_peak_reserved_mib", "Peak VRAM during load (torch reserved), MiB", "lower", "load", "run",
           "no torch allocator reading during load"),
    Metric("load_peak_process_vram_mib", "Peak VRAM during load (NVML, process tree), MiB", "lower", "load",
           "run", "no NVML process reading during load"),
    Metric("load_peak_device_vram_mib", "Peak VRAM during load (NVML, whole device), MiB", "lower", "load",
           "run", "no NVML device reading during load"),
    Metric("load_peak_rss_mib", "Peak host RSS during load, MiB", "lower", "load", "run",
           "not sampled during load"),
    # quality vs the reference, per run
    Metric("kl_mean_nats", "KL vs reference, mean (nats)", "lower", "quality", "quality", task=GEN),
    Metric("kl_p99_nats", "KL vs reference, p99 (nats)", "lower", "quality", "quality", task=GEN),
    Metric("kl_max_nats", "KL vs reference, max (nats)", "lower", "quality", "quality", task=GEN),
    Metric("top1_agreement_pct", "Top-1 agreement vs reference, %", "higher", "quality", "quality", task=GEN),
    Metric("identical_generations_pct", "Identical greedy generations, %", "higher", "quality", "quality", task=GEN),
    Metric("generation_prefix_match_pct", "Greedy generation prefix match, %", "higher", "quality", "quality",
           task=GEN),
    Metric("perplexity", "Perplexity", "lower", "quality", "quality", task=GEN),
    Metric("reference_perplexity", "Perplexity of the reference", "none", "quality", "quality", task=GEN),
    Metric("accuracy_pct", "Accuracy, %", "higher", "quality", "quality", task=CLS),
    Metric("macro_f1_pct", "Macro-F1, %", "higher", "quality", "quality", task=CLS),
)
BY_KEY: dict[str, Metric] = {m.key: m for m in METRICS}
# peak_vram_mib: the largest of these per-process readings that were measured (device-wide readings
# include other tenants, so they never stand in for it).
VRAM_READINGS = ("peak_process_vram_mib", "peak_reserved_mib", "peak_allocated_mib")


def metric(key: str) -> Metric:
    return BY_KEY[key]


def in_group(group: Group) -> list[Metric]:
    return [m for m in METRICS if m.group == group]


# -- spread columns ------------------------------------------------------------------------------
def tails(better: Better) -> tuple[str, str]:
    """The slow tail of a repeated metric: p10/p1 of a rate (higher is better), p90/p99 of a time."""
    return ("p10", "p1") if better == "higher" else ("p90", "p99")


def spread_columns(m: Metric) -> list[str]:
    """`ttft_ms` -> ttft_p90_ms, ttft_p99_ms, ttft_min_ms, ttft_max_ms, ttft_cv_pct, ttft_n."""
    name, unit = split_unit(m.key)
    return [f"{name}_{q}{unit}" for q in (*tails(m.better), "min", "max")] + [f"{name}_cv_pct", f"{name}_n"]


# -- info rows: what the engine says it ran ------------------------------------------------------
@dataclass(frozen=True)
class Info:
    key: str  # the CSV column
    label: str
    get: Callable[[Any], Any]  # record -> text, list, dict or None


def _engine_info(*path: str) -> Callable[[Any], Any]:
    def get(record: Any) -> Any:
        value: Any = record.engine_info or {}
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return value
    return get


INFO: tuple[Info, ...] = (
    Info("engine", "Engine", lambda r: r.engine if r.engine not in ("", "?") else None),
    Info("quantization_method", "Quantization method, as run", _engine_info("quantization_method")),
    Info("quant_methods", "Layers per quantization method", _engine_info("quant_methods")),
    Info("linear_kernels", "Linear kernels, as run", _engine_info("linear_kernels")),
    Info("census", "Weight census (quantized layers, bits/weight)", _engine_info("census", "summary")),
    Info("placement", "Node placement (execution providers)", _engine_info("placement")),
)


def info_text(value: Any) -> str | None:
    """A string as is, a list joined, a dict as `key: value` pairs; nothing for empty values."""
    if value in (None, "", [], {}):
        return None
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


# -- numbers -------------------------------------------------------------------------------------
def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def format_number(value: float, digits: int = 3) -> str:
    """`digits` significant digits, thousands separated; a small value never reads as 0."""
    if value == 0:
        return "0"
    a = abs(value)
    if a >= 10 ** digits:
        return f"{value:,.0f}"
    if a >= 1e-4:
        decimals = max(0, digits - 1 - math.floor(math.log10(a)))
        return f"{value:,.{decimals}f}"
    return f"{value:.{digits - 1}e}"


def format_value(m: Metric, value: float) -> str:
    return format_number(value, m.digits)


def format_relative(pct: float) -> str:
    """+151%, -42%, +2.4%: whole percent from 10% up, one decimal below."""
    if abs(pct) >= 10:
        return f"{pct:+.0f}%"
    return f"{pct:+.1f}%"
