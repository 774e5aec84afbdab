"""`generate`: greedy decoding of exactly `new_tokens` per prompt; TTFT, TPOT, end-to-end, rates."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from backends.contract import Engine, Metric, RunFailure, StepTimer
from runners.record.schema import Point
from runners.workload.inputs import token_ids
from runners.workload.loop import measure, profile_point

GEN = "causal_lm"
METRICS = (
    Metric("ttft_ms", "TTFT, ms", "lower", "speed", "repeats", task=GEN),
    Metric("tpot_ms", "Decode time per output token (TPOT), ms", "lower", "speed", "repeats", task=GEN),
    Metric("e2e_ms", "End-to-end latency per request, ms", "lower", "speed", "repeats", task=GEN),
    Metric("output_tokens_per_s", "Output tokens/s", "higher", "speed", "repeats", task=GEN),
    Metric("total_tokens_per_s", "Total (prompt + output) tokens/s", "higher", "speed", "repeats", task=GEN),
    Metric("requests_per_s", "Requests/s", "higher", "speed", "repeats", task=GEN),
    Metric("energy_per_output_token_mj", "Energy per output token (whole GPU), mJ", "lower", "efficiency", "point",
           task=GEN),
)


@dataclass(frozen=True)
class Generate:
    kind: str = "generate"
    task: str = GEN
    calls: tuple[str, ...] = ("generate",)
    metrics: tuple[Metric, ...] = METRICS
    primary: str = "e2e_ms"  # the metric workload.repeats=auto judges its stopping rule on

    def run(self, engine: Engine, wl: Any, batch_size: int, vocab_size: int, device: str,
            progress: Callable[[], None], profile_to: Path | None = None) -> Point:
        """Warm-up and timed repeats at one batch size; then, with `profile_to`, one profiled pass."""
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

        point = measure(engine, wl, batch_size, device, once, progress,
                        ("energy_per_output_token_mj", batch_size * wl.new_tokens), self.primary)
        if point.status == "ok" and "tpot_ms" not in point.metrics:
            point.absent["tpot_ms"] = "one new token per request: no decode steps"
        if point.status == "ok" and profile_to is not None:
            def run_once() -> int:
                engine.generate(prompts, wl.new_tokens, StepTimer(engine.make_clock()))
                return batch_size * wl.new_tokens
            profile_point(engine, point, run_once, profile_to)
        return point


WORKLOAD = Generate()
