"""Clocks engines time their work with (the workload loop reads them).

On a GPU, work is asynchronous: a host clock read without a synchronize measures the launch, not the
work. `CudaClock` records CUDA events on the current stream and reads them after one synchronize at
the end; `HostClock` is perf_counter for CPU engines (and for engines that block until done).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable


class HostClock:
    kind = "perf_counter"

    def __init__(self, synchronize: Callable[[], None] | None = None):
        self._sync = synchronize or (lambda: None)

    def mark(self) -> float:
        self._sync()
        return time.perf_counter()

    def resolve(self) -> None:
        pass

    @staticmethod
    def ms(a: float, b: float) -> float:
        return (b - a) * 1e3


class CudaClock:
    kind = "cuda_events"

    def __init__(self) -> None:
        import torch

        self._torch = torch

    def mark(self) -> Any:
        ev = self._torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def resolve(self) -> None:
        self._torch.cuda.synchronize()

    @staticmethod
    def ms(a: Any, b: Any) -> float:
        return float(a.elapsed_time(b))


@dataclass
class GenerateSample:
    ttft_ms: float
    e2e_ms: float
    decode_ms_per_token: float | None  # None when only one token was generated
    new_tokens: int


class StepTimer:
    """Times one generate call: begin(), token() after each step's logits, end().

    Engines that measure themselves (e.g. vLLM's request metrics) call `external()` instead.
    """

    def __init__(self, clock: HostClock | CudaClock):
        self.clock = clock
        self._begin: Any = None
        self._marks: list[Any] = []
        self._end: Any = None
        self._external: GenerateSample | None = None

    def begin(self) -> None:
        self._marks = []
        self._external = None
        self._begin = self.clock.mark()

    def token(self) -> None:
        self._marks.append(self.clock.mark())

    def end(self) -> None:
        self._end = self.clock.mark()

    def external(self, ttft_ms: float, e2e_ms: float, new_tokens: int) -> None:
        self._external = GenerateSample(ttft_ms, e2e_ms, _decode(ttft_ms, e2e_ms, new_tokens), new_tokens)

    def sample(self) -> GenerateSample:
        if self._external is not None:
            return self._external
        self.clock.resolve()
        if not self._marks:
            raise RuntimeError("engine reported no token steps to the timer")
        ttft = self.clock.ms(self._begin, self._marks[0])
        e2e = self.clock.ms(self._begin, self._end)
        n = len(self._marks)
        decode = self.clock.ms(self._marks[0], self._marks[-1]) / (n - 1) if n > 1 else None
        return GenerateSample(ttft, e2e, decode, n)


def _decode(ttft_ms: float, e2e_ms: float, n: int) -> float | None:
    return (e2e_ms - ttft_ms) / (n - 1) if n > 1 else None
