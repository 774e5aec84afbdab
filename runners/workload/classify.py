"""`classify`: one forward pass per batch of seeded token ids; latency per batch and per example."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from backends.contract import Engine, Metric, RunFailure
from runners.record.schema import Point
from runners.workload.inputs import token_ids
from runners.workload.loop import measure, profile_point

CLS = "sequence_classification"
METRICS = (
    Metric("per_example_ms", "Latency, ms/example", "lower", "speed", "repeats", task=CLS),
    Metric("examples_per_s", "Examples/s", "higher", "speed", "repeats", task=CLS),
    Metric("batch_ms", "Latency per batch, ms", "lower", "speed", "repeats", task=CLS),
    Metric("energy_per_example_mj", "Energy per example (whole GPU), mJ", "lower", "efficiency", "point", task=CLS),
)


@dataclass(frozen=True)
class Classify:
    kind: str = "classify"
    task: str = CLS
    calls: tuple[str, ...] = ("classify",)
    metrics: tuple[Metric, ...] = METRICS
    primary: str = "batch_ms"  # the metric workload.repeats=auto judges its stopping rule on

    def run(self, engine: Engine, wl: Any, batch_size: int, vocab_size: int, device: str,
            progress: Callable[[], None], profile_to: Path | None = None) -> Point:
        """Warm-up and timed repeats at one batch size; then, with `profile_to`, one profiled pass."""
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

        point = measure(engine, wl, batch_size, device, once, progress, ("energy_per_example_mj", batch_size),
                        self.primary)
        if point.status == "ok" and profile_to is not None:
            def run_once() -> int:
                engine.classify(ids, mask)
                engine.synchronize()
                return batch_size
            profile_point(engine, point, run_once, profile_to)
        return point


WORKLOAD = Classify()
