"""Metric declarations: every number a record may hold is declared by the code that measures it.

A producer (a workload kind, a measurement, the quality stage, an engine) declares its metrics next to
the code that computes them, as a tuple of `Metric`. The runner assembles the declarations of every
producer of a run into one `Catalogue`, stores it in the record, and refuses a record that holds a key
no producer declared; the report renders exactly what is declared, with its unit and label. (The
shape follows lm-eval-harness, whose tasks declare each metric's aggregation and direction where the
metric is defined, and whose results carry `higher_is_better` beside the numbers.)

A key ends in its unit (`ttft_ms`, `peak_rss_mib`, `kl_mean_nats`, `energy_j`); `Unit` says what the
suffix means, so a constraint solver can convert `24GiB` or `500ms` into the metric's own unit. A key
without a unit (perplexity) says so with `unitless=True`.

Where a metric lives in a record (`source`):
- `repeats`: a statistic per batch size, over the timed repeats (median, p90, ..., samples);
- `point`: one number per batch size (memory peaks, energy, roofline);
- `run`: one number per run (preparation, load, engine-reported memory);
- `quality`: one number per run, in the quality block.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Literal

Better = Literal["higher", "lower", "none"]
# Groups in the order tables show them; `prepare` and `load` are both one-off costs of a run.
Group = Literal["speed", "memory", "efficiency", "prepare", "load", "quality"]
Source = Literal["repeats", "point", "run", "quality"]
GROUPS: tuple[Group, ...] = ("speed", "memory", "efficiency", "prepare", "load", "quality")
SOURCES: tuple[Source, ...] = ("repeats", "point", "run", "quality")
TASKS = ("causal_lm", "sequence_classification")


class MetricError(ValueError):
    """A declaration that breaks the rules, or a record key that no producer declared."""


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
    unitless: bool = False  # a key without a unit suffix (perplexity) says so on purpose
    # Whether a table shows its change against the baseline. One-off costs are not compared: the first
    # cell that needs a conversion or export pays it, the next ones find it cached (a "-100%" there
    # would read as one backend's saving).
    compared: bool = True
    # A 0 that is a real reading (a profiled class that took no time), not a value rounded away.
    zero_is_real: bool = False

    def __post_init__(self) -> None:
        where = f"metric {self.key!r}"
        if not self.key or not self.key.replace("_", "").isalnum() or self.key != self.key.lower():
            raise MetricError(f"{where}: a key is lower-case letters, digits and underscores")
        if (unit_of(self.key) is RATIO) != self.unitless:
            raise MetricError(f"{where}: a key ends in its unit ({', '.join(u.suffix for u in UNITS)}), "
                              "or is declared unitless=True" if not self.unitless
                              else f"{where}: declared unitless but ends in a unit suffix")
        for name, value, allowed in (("better", self.better, ("higher", "lower", "none")),
                                     ("group", self.group, GROUPS), ("source", self.source, SOURCES)):
            if value not in allowed:
                raise MetricError(f"{where}: {name} {value!r} is not one of {', '.join(allowed)}")
        if self.task is not None and self.task not in TASKS:
            raise MetricError(f"{where}: task {self.task!r} is not one of {', '.join(TASKS)}")
        if not self.label:
            raise MetricError(f"{where}: needs a label")

    @property
    def positive(self) -> bool:
        """A time, rate, size or energy is never 0: a stored 0 was rounded away by its writer. (A KL or
        an agreement % can be 0.)"""
        return self.group != "quality" and not self.zero_is_real

    @property
    def unit(self) -> Unit:
        return unit_of(self.key)

    @property
    def name(self) -> str:
        return split_unit(self.key)[0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Metric":
        known = Metric.__dataclass_fields__
        return Metric(**{k: v for k, v in d.items() if k in known})


class Catalogue:
    """The declared metrics of a run (or of every producer quantbench ships), in table order:
    by group, then in the order the declarations were merged."""

    def __init__(self, metrics: Iterable[Metric] = ()):
        self._by_key: dict[str, Metric] = {}
        self.add(metrics)

    def add(self, metrics: Iterable[Metric]) -> "Catalogue":
        for m in metrics:
            old = self._by_key.get(m.key)
            if old is not None and old != m:
                # Two producers may share a declaration (engines reuse the contract's); never two meanings.
                raise MetricError(f"metric {m.key!r} is declared twice with different meanings: {old} and {m}")
            if old is None:
                labels = {x.label: x.key for x in self._by_key.values()}
                if m.label in labels:
                    raise MetricError(f"metrics {labels[m.label]!r} and {m.key!r} share the label {m.label!r}")
                self._by_key[m.key] = m
        return self

    @staticmethod
    def merge(*groups: Iterable[Metric]) -> "Catalogue":
        cat = Catalogue()
        for g in groups:
            cat.add(g)
        return cat

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __getitem__(self, key: str) -> Metric:
        return self._by_key[key]

    def get(self, key: str) -> Metric | None:
        return self._by_key.get(key)

    def __len__(self) -> int:
        return len(self._by_key)

    def ordered(self) -> list[Metric]:
        ranked = list(self._by_key.values())
        return sorted(ranked, key=lambda m: GROUPS.index(m.group))  # stable: merge order within a group

    def __iter__(self):
        return iter(self.ordered())

    def keys(self) -> list[str]:
        return [m.key for m in self.ordered()]

    def undeclared(self, keys: Iterable[str], source: Source) -> list[str]:
        """Keys that are not declared, or declared for another place in the record."""
        return sorted(k for k in keys if k not in self._by_key or self._by_key[k].source != source)

    def to_list(self) -> list[dict[str, Any]]:
        return [m.to_dict() for m in self.ordered()]

    @staticmethod
    def from_list(items: Iterable[dict[str, Any]]) -> "Catalogue":
        return Catalogue(Metric.from_dict(d) for d in items)


# -- what engines report: shared declarations, so the same fact has one name in every engine --------
PREPARE_COSTS: tuple[Metric, ...] = (
    Metric("export_s", "ONNX export, s", "lower", "prepare", "run", "no export in this run (cached, or not ONNX)",
           compared=False),
    Metric("quantize_s", "Quantization (ONNX rewrite or llm-compressor), s", "lower", "prepare", "run",
           "no quantization step in this run (cached, or none)", compared=False),
    Metric("checkpoint_mib", "Quantized checkpoint on disk, MiB", "lower", "prepare", "run",
           "no quantized checkpoint (not a compressed-tensors backend)"),
)
EXPORT_S, QUANTIZE_S, CHECKPOINT_MIB = PREPARE_COSTS
WEIGHTS_MIB = Metric("weights_mib", "Weights (engine-reported), MiB", "lower", "load", "run",
                     "the engine reported no weight size")
KV_CACHE_MIB = Metric("kv_cache_mib", "KV cache (engine-reported), MiB", "none", "load", "run",
                      "the engine reported no KV cache size")
