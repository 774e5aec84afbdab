"""Open an engine: its files and context, its checks, one-off preparation, the timed load, the proof.

Used the same way by a measured run and by a quality reference, so neither needs the other.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from backends import engine_class
from backends.contract import Engine, EngineContext, RunFailure, cache_dir
from runners.measure.failures import classify_exception
from runners.measure.memory import MemoryWatcher, free_memory
from runners.open.files import ModelFiles
from runners.open.verify import verdict
from runners.plan.config import RunConfig

log = logging.getLogger("quantbench")


def make_engine(run: RunConfig, device: str) -> Engine:
    """The engine object for `run` on `device`; nothing is loaded yet."""
    files = ModelFiles(run.model, run.weights, run.task, run.model.num_labels, device)
    ctx = EngineContext(run=run, device=device, files=files, cache_dir=cache_dir(), num_labels=run.model.num_labels)
    return engine_class(run.backend.engine)(run.backend.options, ctx)


def open_engine(engine: Engine, facts: dict[str, Any]) -> None:
    """check -> prepare -> load -> prove. Adds load facts (seconds, peaks) to `facts`; raises RunFailure.

    A load that fails on files this run took from the cache is tried once more on rebuilt files: a
    damaged cache entry must not make every later run crash.
    """
    run = engine.ctx.run
    problem = engine.check()
    if problem is not None:
        raise problem
    _prepare(engine, facts)
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
    reason = verdict(run.backend.expect, engine.census(), run.backend.name, engine.describe)
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
    run, device = engine.ctx.run, engine.ctx.device
    # Said before the riskiest step so a crash's log tail shows what it was doing.
    log.info("loading %s (%s engine, %s weights) of %s on %s", run.backend.name, run.backend.engine, run.weights,
             run.model.name, device)
    with MemoryWatcher(device) as watch:
        t = time.perf_counter()
        engine.load()
        engine.synchronize()
        facts["load_s"] = round(time.perf_counter() - t, 3)
    facts.update({f"load_{k}": round(v, 1) for k, v in watch.peaks.values_mib.items()})


def vocab_size(engine: Engine) -> int:
    cfg = engine.ctx.files.hf_config()
    vocab = getattr(cfg, "vocab_size", None) or getattr(getattr(cfg, "text_config", None), "vocab_size", None)
    if not vocab:
        raise RunFailure("invalid_config", "model config has no vocab_size")
    return int(vocab)
