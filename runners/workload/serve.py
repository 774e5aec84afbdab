"""`serve`: a real server per backend under load, one load point per offered request rate.

The engine starts its own server (`Engine.server`: vLLM's OpenAI-compatible server with the offline
path's exact engine arguments, `transformers serve` with continuous batching); this kind only sends
requests to it (runners.workload.client), keeps every request's raw sample in the point's facts, and
computes every statistic from them (runners.measure.serving). The server runs for all load points of
the run and is always stopped. Memory is NVML's reading of this process tree (the server is a child),
never the torch allocator of this process, which does none of the work; energy is the whole GPU over
each load point, per output token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from backends.contract import Engine, RunFailure
from runners.evaldata import bbc_split
from runners.measure.energy import EnergyMeter
from runners.measure.failures import classify_exception
from runners.measure.memory import MemoryWatcher, with_peak_vram
from runners.measure.serving import METRICS as SERVING_METRICS
from runners.measure.serving import RequestSample, load_point_stats
from runners.record.schema import Point
from runners.workload.client import Request, run_load_point
from runners.workload.generate import METRICS as GENERATE_METRICS
from runners.workload.inputs import token_ids

ENERGY = next(m for m in GENERATE_METRICS if m.key == "energy_per_output_token_mj")
# The worker process holds no model while a server runs: its allocator's peaks would read 0 and say nothing.
_ALLOCATOR = ("peak_allocated_mib", "peak_reserved_mib")
_SERVER_MEMORY = "the server's memory is in its own process: NVML's process-tree reading stands for it"


@dataclass
class Served:
    """What one serving run gives the record: its load points, and what the server said of itself."""

    points: list[Point] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    census: Any = None  # backends.contract.WeightCensus of the model the server loaded, when it tells


def prompts_for(engine: Engine, wl: Any, vocab_size: int, count: int) -> list[str | list[int]]:
    """`count` prompts of wl.prompt_tokens tokens, for every load point of the run at once: consecutive,
    non-overlapping pieces of the BBC News text cut by the model's tokenizer, or seeded token ids. No
    point repeats another's prompts (a server's prefix cache would otherwise see them again)."""
    if wl.serve.prompts == "random":
        return token_ids(wl.seed, count, wl.prompt_tokens, vocab_size).tolist()
    tokenizer = engine.ctx.files.load_tokenizer()
    if tokenizer is None:
        raise RunFailure("invalid_config", f"workload.serve.prompts=bbc needs the model's tokenizer and "
                                           f"{engine.ctx.run.model.name} ({engine.ctx.run.weights} weights) has none: "
                                           f"use workload.serve.prompts=random")
    return bbc_prompts(tokenizer, wl.prompt_tokens, count)


def bbc_prompts(tokenizer: Any, n: int, count: int) -> list[str]:
    """`count` consecutive pieces of `n` tokens of the BBC News text (wrapping round when it runs out),
    as text: a server tokenizes them again."""
    want = (count + 1) * n
    ids: list[int] = []
    for text, _ in bbc_split()[0]:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= want:
            break
    if len(ids) < n:
        raise RunFailure("invalid_config", f"workload.prompt_tokens={n}: the BBC News text holds only {len(ids)} tokens")
    starts = [(i * n) % (len(ids) - n + 1) for i in range(count)]
    return [tokenizer.decode(ids[s:s + n]) for s in starts]


@dataclass(frozen=True)
class Serve:
    kind: str = "serve"
    task: str = "causal_lm"
    calls: tuple[str, ...] = ()  # nothing in-process while serving; quality's calls come after the server
    needs: frozenset[str] = frozenset({"serve"})  # engine capabilities the kind needs (Engine.capabilities)
    serves: bool = True
    metrics: tuple = (*SERVING_METRICS, ENERGY)
    primary: str = "e2e_ms"

    def serve(self, engine: Engine, wl: Any, device: str, vocab_size: int, bar: Callable[[int, str], Any],
              folder: Path, on_point: Callable[[Point], None]) -> Served:
        """Start the engine's server, run every load point, stop it. `bar(total, desc)`: a progress bar;
        `on_point`: called with each finished point (the worker snapshots the record)."""
        serve = wl.serve
        out = Served()
        # Every point's prompts before the server starts: a run that cannot have them starts nothing.
        sizes = [serve.warmup_requests + serve.requests_at(rate) for rate in serve.rates_per_s]
        prompts = prompts_for(engine, wl, vocab_size, sum(sizes))
        server = engine.server(folder / "server.log")
        if server is None:
            raise RunFailure("invalid_config", f"the {engine.name} engine has no server for backend "
                                               f"{engine.ctx.run.backend}")
        server.start_timeout_s = serve.start_timeout_s
        out.facts["command"] = list(server.cmd)
        out.facts["log"] = "server.log"
        with server:
            first = 0
            for i, (rate, size) in enumerate(zip(serve.rates_per_s, sizes)):
                point = self._point(engine, wl, server, rate, i, prompts[first:first + size], device, bar)
                first += size
                out.points.append(point)
                on_point(point)
                if point.status != "ok" and server.proc is not None and server.proc.poll() is not None:
                    break  # the server died: the later points cannot run
        out.facts.update(server.facts)
        try:
            out.census = engine.server_census(server)
        except Exception as exc:  # noqa: BLE001 — the in-process census still proves the run
            out.facts["census_error"] = f"{type(exc).__name__}: {exc}"[:300]
        return out

    def _point(self, engine: Engine, wl: Any, server: Any, rate: float, index: int, texts: list[str | list[int]],
               device: str, bar: Callable[[int, str], Any]) -> Point:
        """One load point: `texts` holds its warm-up prompts, then its measured ones."""
        serve = wl.serve
        point = Point(batch_size=None, rate_per_s=rate)
        warm = [Request(t, wl.new_tokens) for t in texts[:serve.warmup_requests]]
        requests = [Request(t, wl.new_tokens) for t in texts[serve.warmup_requests:]]
        energy = EnergyMeter(device)
        desc = f"{engine.ctx.run.backend} serve {point.where}"
        try:
            with bar(len(texts), desc) as progress, MemoryWatcher(device) as watch:
                samples = run_load_point(server.base_url, server.model, requests, rate, serve.arrival,
                                         wl.seed + index, serve.request_timeout_s, warm, server.request_extra,
                                         max_concurrency=serve.max_concurrency, progress=progress.update,
                                         on_warm=energy.start)
                joules = energy.stop()
        except Exception as exc:  # noqa: BLE001 — one load point failing must not lose the others
            failure = classify_exception(exc)
            point.status, point.reason = failure.status, failure.reason
            return point
        # The statistics come from the samples as the record keeps them, so anyone can recompute them exactly.
        samples = [RequestSample.from_compact(s.to_compact()) for s in samples]
        stats = load_point_stats(samples, rate)
        point.metrics.update(stats.metrics)
        point.absent.update(stats.absent)
        peaks = {k: v for k, v in watch.peaks.values_mib.items() if k not in _ALLOCATOR}
        absent = {**watch.peaks.absent, **dict.fromkeys(_ALLOCATOR, _SERVER_MEMORY)}
        peaks.pop("peak_vram_mib", None)
        with_peak_vram(peaks, absent)
        point.metrics.update({k: round(v, 1) for k, v in peaks.items()})
        point.absent.update(absent)
        out_tokens = sum(s.output_tokens for s in samples if s.ok)
        if joules is None or not out_tokens:
            point.absent[ENERGY.key] = energy.reason or "no output token"
            point.absent["energy_j"] = energy.reason or "not measured"
        else:
            point.metrics[ENERGY.key] = round(joules * 1e3 / out_tokens, 4)
            point.metrics["energy_j"] = round(joules, 3)
        point.facts["requests"] = [s.to_compact() for s in samples]
        point.facts["arrival"] = serve.arrival
        if serve.max_concurrency:
            point.facts["max_concurrency"] = serve.max_concurrency
        failed = [s for s in samples if not s.ok]
        if failed and len(failed) == len(samples):
            point.status, point.reason = "crash", f"every request failed: {failed[0].error or 'no output'}"
        elif failed:
            point.reason = f"{len(failed)} of {len(samples)} requests failed, e.g. {failed[0].error or 'no output'}"
        short = sorted({s.output_tokens for s in samples if s.ok and s.output_tokens != wl.new_tokens})
        if short:
            point.facts["short_outputs"] = (f"some requests ended before {wl.new_tokens} tokens (output lengths "
                                            f"{short[:5]}): this server cannot be told to ignore end-of-sequence")
        return point


def samples_of(point: Point) -> list[RequestSample]:
    """The raw per-request samples a serve point keeps (empty for other points)."""
    return [RequestSample.from_compact(row) for row in point.facts.get("requests") or []]


def is_all_at_once(point: Point) -> bool:
    return point.rate_per_s is not None and math.isinf(point.rate_per_s)


WORKLOAD = Serve()
