"""The loop every workload kind shares: warm-up, timed repeats, memory and energy around them.

The loop is the same for every engine: it only calls the adapter contract.
"""
from __future__ import annotations

from typing import Any, Callable

from backends.contract import Engine
from runners.measure.energy import EnergyMeter
from runners.measure.failures import classify_exception
from runners.measure.memory import MemoryWatcher, free_memory
from runners.measure.stats import Stat
from runners.record.schema import Point

Once = Callable[[], dict[str, float | None]]


def _repeat(warmup: int, repeats: int, once: Once, progress: Callable[[], None],
            energy: EnergyMeter) -> dict[str, list[float]]:
    for _ in range(warmup):
        once()
        progress()
    samples: dict[str, list[float]] = {}
    energy.start()  # after warm-up: compilation and first-touch allocations are not the steady state
    for _ in range(repeats):
        for k, v in once().items():
            if v is not None:
                samples.setdefault(k, []).append(v)
        progress()
    return samples


def measure(engine: Engine, wl: Any, batch_size: int, device: str, once: Once,
            progress: Callable[[], None], energy_unit: tuple[str, int]) -> Point:
    """One batch size. energy_unit: (metric key, how many units the timed repeats produced)."""
    point = Point(batch_size=batch_size)
    energy = EnergyMeter(device)
    try:
        with MemoryWatcher(device) as watch:
            samples = _repeat(wl.warmup, wl.repeats, once, progress, energy)
            joules = energy.stop()
    except Exception as exc:  # noqa: BLE001 — one batch size failing must not lose the others
        failure = classify_exception(exc)
        free_memory()
        point.status, point.reason = failure.status, failure.reason
        return point
    point.metrics = {k: Stat.of(v) for k, v in samples.items()}
    point.metrics.update({k: round(v, 1) for k, v in watch.peaks.values_mib.items()})
    point.absent.update(watch.peaks.absent)
    key, units = energy_unit
    if joules is None:
        point.absent[key] = energy.reason or "not measured"
        point.absent["energy_j"] = energy.reason or "not measured"
    else:
        point.metrics[key] = round(joules * 1e3 / units, 4)
        point.metrics["energy_j"] = round(joules, 3)
    return point
