"""Workload loops: deterministic inputs, warm-up, timed repeats, per-batch-size points.

The loop is the same for every engine: it only calls the adapter contract.
"""
from __future__ import annotations

import gc
import sys
from typing import Callable

import numpy as np

from backends.base import Engine, RunFailure
from runners.config import WorkloadSpec
from runners.energy import EnergyMeter
from runners.memory import MemoryWatcher
from runners.records import Point
from runners.timing import Stat, StepTimer

# Low ids are special tokens in most vocabularies (pad, bos, eos, unk); random prompts avoid them.
_FIRST_ORDINARY_ID = 16


def token_ids(seed: int, batch_size: int, length: int, vocab_size: int) -> np.ndarray:
    """The same prompts for every engine: seeded by (seed, batch size, length) only."""
    rng = np.random.default_rng([seed, batch_size, length])
    low = min(_FIRST_ORDINARY_ID, vocab_size - 1)
    return rng.integers(low, vocab_size, size=(batch_size, length), dtype=np.int64)


def classify_oom(exc: BaseException) -> RunFailure:
    """Map an exception from a measured region to a classified failure."""
    if isinstance(exc, RunFailure):
        return exc
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if ("out of memory" in lowered or "outofmemory" in lowered or "failed to allocate memory" in lowered
            or isinstance(exc, MemoryError)):
        return RunFailure("oom", text.splitlines()[0][:500])
    if isinstance(exc, (ImportError, ModuleNotFoundError)):
        return RunFailure("missing_dependency", text[:500])
    return RunFailure("crash", text[:2000])


def free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _repeat(warmup: int, repeats: int, once: Callable[[], dict[str, float | None]],
            progress: Callable[[], None], energy: EnergyMeter) -> dict[str, list[float]]:
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


def run_generate(engine: Engine, wl: WorkloadSpec, batch_size: int, vocab_size: int, device: str,
                 progress: Callable[[], None]) -> Point:
    prompts = token_ids(wl.seed, batch_size, wl.prompt_tokens, vocab_size).tolist()
    timer = StepTimer(engine.make_clock())

    def once() -> dict[str, float | None]:
        timer.begin()
        out = engine.generate(prompts, wl.new_tokens, timer)
        timer.end()
        lengths = {len(o) for o in out}
        if len(out) != batch_size or lengths != {wl.new_tokens}:
            raise RunFailure("crash", f"engine returned {len(out)} sequences of lengths {sorted(lengths)}; "
                                      f"the workload asks {batch_size} x {wl.new_tokens} new tokens")
        s = timer.sample()
        seconds = s.e2e_ms / 1e3
        return {"ttft_ms": s.ttft_ms, "tpot_ms": s.decode_ms_per_token, "e2e_ms": s.e2e_ms,
                "output_tokens_per_s": batch_size * wl.new_tokens / seconds,
                "total_tokens_per_s": batch_size * (wl.prompt_tokens + wl.new_tokens) / seconds,
                "requests_per_s": batch_size / seconds}

    return _measure(engine, wl, batch_size, device, once, progress,
                    ("energy_per_output_token_mj", wl.repeats * batch_size * wl.new_tokens))


def run_classify(engine: Engine, wl: WorkloadSpec, batch_size: int, vocab_size: int, device: str,
                 progress: Callable[[], None]) -> Point:
    ids = token_ids(wl.seed, batch_size, wl.seq_len, vocab_size)
    mask = np.ones_like(ids)
    clock = engine.make_clock()

    def once() -> dict[str, float | None]:
        a = clock.mark()
        logits = engine.classify(ids, mask)
        b = clock.mark()
        clock.resolve()
        if getattr(logits, "shape", (None,))[0] != batch_size:
            raise RunFailure("crash", f"engine returned logits of shape {getattr(logits, 'shape', None)}")
        ms = clock.ms(a, b)
        return {"batch_ms": ms, "per_example_ms": ms / batch_size, "examples_per_s": batch_size / (ms / 1e3)}

    return _measure(engine, wl, batch_size, device, once, progress, ("energy_per_example_mj", wl.repeats * batch_size))


def _measure(engine: Engine, wl: WorkloadSpec, batch_size: int, device: str,
             once: Callable[[], dict[str, float | None]], progress: Callable[[], None],
             energy_unit: tuple[str, int]) -> Point:
    """energy_unit: (metric key, how many units the timed repeats produced) for energy per unit."""
    point = Point(batch_size=batch_size)
    energy = EnergyMeter(device)
    try:
        with MemoryWatcher(device) as watch:
            samples = _repeat(wl.warmup, wl.repeats, once, progress, energy)
            joules = energy.stop()
    except Exception as exc:  # noqa: BLE001 — one batch size failing must not lose the others
        failure = classify_oom(exc)
        free_memory()
        point.status, point.reason = failure.status, failure.reason
        return point
    point.metrics = {k: vars(Stat.of(v)) for k, v in samples.items()}
    if wl.kind == "generate" and "tpot_ms" not in samples:
        point.absent["tpot_ms"] = "one new token per request: no decode steps"
    point.metrics.update({k: round(v, 1) for k, v in watch.peaks.values_mib.items()})
    point.absent.update(watch.peaks.absent)
    key, units = energy_unit
    if joules is None:
        point.absent[key] = energy.reason or "not measured"
    else:
        point.metrics[key] = round(joules * 1e3 / units, 4)
        point.metrics["energy_j"] = round(joules, 3)
    return point


RUNNERS = {"generate": run_generate, "classify": run_classify}
