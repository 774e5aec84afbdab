"""The loop every workload kind shares: warm-up, timed repeats, memory and energy around them.

The loop is the same for every engine: it only calls the adapter contract.

`workload.repeats=auto` repeats until the median of the kind's primary metric (e2e_ms, batch_ms) has a
95% interval (runners.measure.stats) whose half-width is under `ci_target_pct` of the median, or until
`max_repeats` repeats or `max_seconds` of timed repeats; when a limit stopped it short of the target,
the point's reason says so (its status stays ok, and each Stat's `n` says how many repeats it took).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from backends.contract import Engine
from runners.measure.breakdown import breakdown
from runners.measure.breakdown import metrics_for as breakdown_metrics
from runners.measure.energy import EnergyMeter
from runners.measure.failures import classify_exception
from runners.measure.memory import MemoryWatcher, free_memory
from runners.measure.stats import CI_LEVEL, Stat, median_interval
from runners.record.schema import Point

Once = Callable[[], dict[str, float | None]]
AUTO = "auto"


@dataclass(frozen=True)
class Repeats:
    samples: dict[str, list[float]]  # metric key -> one value per timed repeat that gave one
    count: int  # timed repeats run
    short_of_target: str | None = None  # repeats=auto stopped by a limit: why, for the point's reason


def _once(once: Once, samples: dict[str, list[float]]) -> None:
    for k, v in once().items():
        if v is not None:
            samples.setdefault(k, []).append(v)


def _half_width_pct(values: list[float]) -> tuple[float | None, str | None]:
    """(half-width of the median's interval in % of the median, or None with why)."""
    if not values:
        return None, "no samples"
    ci = median_interval(values)
    if ci.reason:
        return None, ci.reason
    width = ci.half_width_pct(Stat.of(values).median)
    return width, None if width is not None else "the median is 0"


def _limit(wl: Any, count: int, seconds: float) -> str | None:
    if count >= wl.max_repeats:
        return f"max_repeats={wl.max_repeats}"
    if seconds >= wl.max_seconds:
        return f"max_seconds={wl.max_seconds:g}"
    return None


def _repeat_auto(wl: Any, once: Once, progress: Callable[[], None], primary: str,
                 clock: Callable[[], float]) -> Repeats:
    # The interval is checked after every repeat, so its coverage is nominal (stopping when it first
    # looks narrow favours narrow draws); max_repeats bounds how often it is checked.
    samples: dict[str, list[float]] = {}
    start, count = clock(), 0
    while True:
        _once(once, samples)
        progress()
        count += 1
        width, why = _half_width_pct(samples.get(primary, []))
        if width is not None and width < wl.ci_target_pct:
            return Repeats(samples, count)
        limit = _limit(wl, count, clock() - start)
        if limit is not None:
            got = f"half-width {width:.1f}% > {wl.ci_target_pct:g}%" if width is not None else f"none ({why})"
            return Repeats(samples, count, f"repeats=auto: stopped at {limit} after {count} repeats with the "
                                           f"{primary} median's {CI_LEVEL:.0%} interval {got}")


def _repeat(wl: Any, once: Once, progress: Callable[[], None], energy: EnergyMeter, primary: str,
            clock: Callable[[], float] = time.perf_counter) -> Repeats:
    for _ in range(wl.warmup):
        once()
        progress()
    energy.start()  # after warm-up: compilation and first-touch allocations are not the steady state
    if wl.repeats == AUTO:
        return _repeat_auto(wl, once, progress, primary, clock)
    samples: dict[str, list[float]] = {}
    for _ in range(wl.repeats):
        _once(once, samples)
        progress()
    return Repeats(samples, wl.repeats)


def profile_point(engine: Engine, point: Point, run_once: Callable[[], int], trace_path: Path) -> None:
    """One more pass, after the timed repeats and never mixed into them, under the engine's profiler: the
    point gains its time breakdown (runners.measure.breakdown), or why it has none."""
    keys = [m.key for m in breakdown_metrics()]
    try:
        trace = engine.profile(run_once, trace_path)
    except Exception as exc:  # noqa: BLE001 — the timed numbers stand; the breakdown says why it is absent
        failure = classify_exception(exc)
        point.absent.update(dict.fromkeys(keys, f"profiling failed: {failure.reason.splitlines()[0][:200]}"))
        free_memory()
        return
    if trace is None:
        point.absent.update(dict.fromkeys(keys, f"the {engine.name} engine has no profiler hook"))
        return
    found = breakdown(trace)
    point.metrics.update(found.metrics)
    point.absent.update({k: v for k, v in found.absent.items() if k not in found.metrics})
    point.facts["profile"] = found.facts


def measure(engine: Engine, wl: Any, batch_size: int, device: str, once: Once,
            progress: Callable[[], None], energy_per_repeat: tuple[str, int], primary: str) -> Point:
    """One batch size. energy_per_repeat: (metric key, how many units one timed repeat produces);
    primary: the metric repeats=auto judges its stopping rule on."""
    point = Point(batch_size=batch_size)
    energy = EnergyMeter(device)
    try:
        with MemoryWatcher(device) as watch:
            rep = _repeat(wl, once, progress, energy, primary)
            joules = energy.stop()
    except Exception as exc:  # noqa: BLE001 — one batch size failing must not lose the others
        failure = classify_exception(exc)
        free_memory()
        point.status, point.reason = failure.status, failure.reason
        return point
    point.reason = rep.short_of_target
    point.metrics = {k: Stat.of(v) for k, v in rep.samples.items()}
    point.metrics.update({k: round(v, 1) for k, v in watch.peaks.values_mib.items()})
    point.absent.update(watch.peaks.absent)
    key, per_repeat = energy_per_repeat
    if joules is None:
        point.absent[key] = energy.reason or "not measured"
        point.absent["energy_j"] = energy.reason or "not measured"
    else:
        point.metrics[key] = round(joules * 1e3 / (per_repeat * rep.count), 4)
        point.metrics["energy_j"] = round(joules, 3)
    return point
