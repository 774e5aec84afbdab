"""Which metrics a run may write: the declarations of its producers, gathered in table order.

Each producer declares its metrics next to the code that measures them (backends.contract.Metric):
the workload kind (runners/workload/<kind>.py), the measurements (runners/measure: memory, energy,
roofline), opening the engine (runners/open/engine.py: preparation, load, load peaks), the engine
itself (`Engine.metrics`), and quality (runners/quality/measure.py). This module only gathers them:
- `for_run`: what one run's record declares (the launcher stores it in the record, which then refuses
  any other key);
- `shipped`: everything quantbench's own producers declare, in the order tables show it (the report
  reads records of version 2, which carry no declarations, with it, and keeps columns in this order).
"""
from __future__ import annotations

from typing import Any

from backends import engine_metrics
from backends.contract import CHECKPOINT_MIB, EXPORT_S, KV_CACHE_MIB, QUANTIZE_S, WEIGHTS_MIB, Catalogue, Metric
from runners.measure import breakdown, energy, memory, roofline
from runners.open.engine import LOAD_METRICS, LOAD_PEAK_METRICS, PREPARE_METRICS
from runners.quality.measure import METRICS as QUALITY_METRICS
from runners.quality.measure import metrics_for
from runners.workload import workload_kinds

_MEASURED = (*memory.METRICS, *energy.METRICS, *roofline.METRICS, *breakdown.metrics_for())


def for_run(kind: Any, engine_cls: type, task: str) -> Catalogue:
    """The declarations of one run's producers: its workload kind, the measurements, opening its engine,
    the engine, and quality for its task."""
    wanted = [m for m in _MEASURED if m.task in (None, task)]
    return Catalogue.merge(kind.metrics, wanted, PREPARE_METRICS, LOAD_METRICS, engine_cls.metrics,
                           LOAD_PEAK_METRICS, metrics_for(task))


def shipped() -> Catalogue:
    """Every metric quantbench's own producers declare (decoder kinds first)."""
    kinds = sorted(workload_kinds().values(), key=lambda k: (k.task != "causal_lm", k.kind))
    standard: tuple[Metric, ...] = (EXPORT_S, QUANTIZE_S, CHECKPOINT_MIB, WEIGHTS_MIB, KV_CACHE_MIB)
    return Catalogue.merge(*(k.metrics for k in kinds), _MEASURED, PREPARE_METRICS, LOAD_METRICS, standard,
                           engine_metrics(), LOAD_PEAK_METRICS, QUALITY_METRICS)
