"""Open an engine: its files and context, its checks, one-off preparation, the timed load, the proof.

Used the same way by a measured run and by a quality reference, so neither needs the other.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from backends import engine_class
from backends.contract import Engine, EngineContext, Metric, RunFailure, cache_dir
from backends.contract.weights import refuse_pickle
from runners.evaldata import BbcTexts
from runners.measure.failures import classify_exception
from runners.measure.memory import MemoryWatcher, free_memory
from runners.open.files import ModelFiles
from runners.open.verify import verdict
from runners.plan.config import BackendSpec, ModelSpec
from backends.contract import EngineRun

log = logging.getLogger("quantbench")

# What opening an engine measures, by the order tables show them: preparation (with the engine's own
# one-off costs after it), load, then the memory peaks during load (the engine's memory facts between).
PREPARE_METRICS = (Metric("prepare_s", "Preparation (weights, export, quantization), s", "lower", "prepare", "run",
                          "not timed by this run", compared=False),)
LOAD_METRICS = (Metric("load_s", "Load time, s", "lower", "load", "run", "the run ended before the model loaded"),)
LOAD_PEAK_METRICS = (
    Metric("load_peak_allocated_mib", "Peak VRAM during load (torch allocator), MiB", "lower", "load", "run",
           "no torch allocator reading during load"),
    Metric("load_peak_reserved_mib", "Peak VRAM during load (torch reserved), MiB", "lower", "load", "run",
           "no torch allocator reading during load"),
    Metric("load_peak_process_vram_mib", "Peak VRAM during load (NVML, process tree), MiB", "lower", "load",
           "run", "no NVML process reading during load"),
    Metric("load_peak_device_vram_mib", "Peak VRAM during load (NVML, whole device), MiB", "lower", "load",
           "run", "no NVML device reading during load"),
    Metric("load_peak_rss_mib", "Peak host RSS during load, MiB", "lower", "load", "run", "not sampled during load"),
)


def make_engine(backend: BackendSpec, model: ModelSpec, view: EngineRun, extra: dict[str, Any] | None = None) -> Engine:
    """The engine object for a run, given what it may know of it; nothing is loaded yet."""
    files = ModelFiles(model, view.weights, view.task, model.num_labels, view.device)
    ctx = EngineContext(run=view, files=files, texts=BbcTexts(), cache_dir=cache_dir(), extra=dict(extra or {}))
    return engine_class(backend.engine)(backend.options, ctx)


def prepare_engine(engine: Engine, facts: dict[str, Any]) -> None:
    """check -> prepare: the files exist and may be read, nothing is loaded (a server loads them itself)."""
    problem = engine.check()
    if problem is not None:
        raise problem
    run = engine.ctx.run
    if run.weights == "pretrained" and not run.model.allow_pickle:
        # Every engine refuses the same way, before any loader could unpickle a checkpoint.
        refuse_pickle(engine.ctx.files.folder())
    _prepare(engine, facts)


def open_engine(engine: Engine, backend: BackendSpec, facts: dict[str, Any], prepared: bool = False) -> None:
    """check -> prepare -> load -> prove. Adds load facts (seconds, peaks) to `facts`; raises RunFailure.
    `prepared`: prepare_engine already ran.

    A load that fails on files this run took from the cache is tried once more on rebuilt files: a
    damaged cache entry must not make every later run crash.
    """
    if not prepared:
        prepare_engine(engine, facts)
    try:
        _load(engine, facts)
    except Exception as exc:  # noqa: BLE001 — classified; a damaged cached input gets one rebuild
        failure = classify_exception(exc)
        rebuilt = engine.ctx.files.forget_built() if failure.status == "crash" else []
        if not rebuilt:
            raise
        log.warning("load failed on cached files (%s); rebuilding %s once", failure.reason.splitlines()[0][:200],
                    ", ".join(map(str, rebuilt)))
        engine.close()
        free_memory()
        _prepare(engine, facts)
        try:
            _load(engine, facts)
        except Exception as again:  # noqa: BLE001
            why = classify_exception(again)
            raise RunFailure(why.status, f"{why.reason} (also after rebuilding the cache entries "
                                         f"{', '.join(map(str, rebuilt))})") from again
    reason = verdict(backend.expect, engine.census(), backend.name, engine.describe)
    if reason:
        raise RunFailure("not_applied", reason)


def _prepare(engine: Engine, facts: dict[str, Any]) -> None:
    # Materialising weights (conversion, synthetic init, an ONNX export) is one-off preparation,
    # not load time.
    t = time.perf_counter()
    engine.prepare()
    facts["prepare_s"] = round(time.perf_counter() - t, 3)
    facts.update(engine.artefact_stats())


def _load(engine: Engine, facts: dict[str, Any]) -> None:
    run = engine.ctx.run
    # Said before the riskiest step so a crash's log tail shows what it was doing.
    log.info("loading %s (%s engine, %s weights) of %s on %s", run.backend, engine.name, run.weights,
             run.model.name, run.device)
    with MemoryWatcher(run.device) as watch:
        t = time.perf_counter()
        engine.load()
        engine.synchronize()
        facts["load_s"] = round(time.perf_counter() - t, 3)
    for m in LOAD_PEAK_METRICS:
        value = watch.peaks.values_mib.get(m.key.removeprefix("load_"))
        if value is not None:
            facts[m.key] = round(value, 1)


def vocab_size(engine: Engine) -> int:
    cfg = engine.ctx.files.hf_config()
    vocab = getattr(cfg, "vocab_size", None) or getattr(getattr(cfg, "text_config", None), "vocab_size", None)
    if not vocab:
        raise RunFailure("invalid_config", "model config has no vocab_size")
    return int(vocab)
