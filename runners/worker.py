"""Execute one run: check -> load -> every batch size -> quality -> record.

Runs in its own process (`python -m runners.worker PLAN.json`) so GPU memory is fully released
between runs and a crash cannot take a sweep down. The record is rewritten after every batch size,
so a run killed half-way still keeps the batch sizes it finished.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import sys
import time
from pathlib import Path

from backends import engine_class
from backends.base import EngineContext, RunFailure
from runners import envinfo
from runners.cache import cache_dir
from runners.config import RunConfig
from runners.records import RunRecord, write_record
from runners.typed import ConfigError
from runners.workloads import RUNNERS, classify_oom, free_memory

log = logging.getLogger("quantbench")


def resolve_device(requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def new_record(run: RunConfig, run_id: str, device: str, order: int = 0) -> RunRecord:
    return RunRecord(
        run_id=run_id, order=order, backend=run.backend.name, engine=run.backend.engine, model=run.model.name,
        workload=run.workload.kind, weights=run.weights, device=device, config=run.to_dict(),
        started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )


def _progress_bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="call", file=sys.stderr, dynamic_ncols=True, leave=False)


def execute(run: RunConfig, run_id: str, record_path: Path, order: int = 0) -> RunRecord:
    """Measure one run and write its record; failures become classified records, not exceptions."""
    t0 = time.perf_counter()
    device = resolve_device(run.device)
    record = new_record(run, run_id, device, order)
    engine = None

    def save(final: bool = False) -> None:
        record.wall_s = round(time.perf_counter() - t0, 3)
        if final or record.status not in ("ok", "partial"):
            write_record(record_path, record)
            return
        # Until the run ends, the file on disk says so: a sweep killed from outside (Ctrl-C, a job
        # scheduler) must not leave a record that reads as a finished run with a batch size missing.
        write_record(record_path, dataclasses.replace(
            record, status="incomplete", reason="run stopped before it finished (interrupted or killed)"))

    try:
        engine = _prepare(run, device, record, save)
        wl = run.workload
        vocab = _vocab_size(engine)
        for bs in wl.batch_sizes:
            with _progress_bar(wl.warmup + wl.repeats, f"{run.backend.name} {wl.kind} bs={bs}") as bar:
                point = RUNNERS[wl.kind](engine, wl, bs, vocab, device, bar.update)
            record.points.append(point)
            record.summarize_status()
            log.info("batch %d: %s%s", bs, point.status, f" ({point.reason})" if point.reason else "")
            save()
        from runners.quality import measure_quality

        record.engine_info = engine.describe()  # before quality's calls, so it describes the measured ones
        record.quality = measure_quality(engine, run, device)
        record.load.update(engine.memory_facts())
        _add_roofline(record, device)
    except RunFailure as failure:
        record.status, record.reason = failure.status, failure.reason
    except ConfigError as exc:
        record.status, record.reason = "invalid_config", str(exc)
    except Exception as exc:  # noqa: BLE001 — classified and kept in the record
        failure = classify_oom(exc)
        record.status, record.reason = failure.status, failure.reason
        log.exception("run failed")
    finally:
        if engine is not None:
            if not record.engine_info:
                try:
                    record.engine_info = engine.describe()
                except Exception:  # noqa: BLE001 — describing is best effort after a failure
                    pass
            engine.close()
        free_memory()
    record.env = record.env or envinfo.capture(device)
    save(final=True)
    return record


def _prepare(run: RunConfig, device: str, record: RunRecord, save) -> object:
    from runners.memory import MemoryWatcher
    from runners.models import ModelFiles

    task = "causal_lm" if run.workload.kind == "generate" else "sequence_classification"
    files = ModelFiles(run.model, run.weights, task, run.model.num_labels, device)
    ctx = EngineContext(run=run, device=device, files=files, cache_dir=cache_dir(), num_labels=run.model.num_labels)
    engine = engine_class(run.backend.engine)(run.backend.options, ctx)
    problem = engine.check()
    if problem is not None:
        raise problem
    if run.weights == "synthetic":
        record.notes.append("synthetic weights: speed and memory are real, quality is not measured")
    # Materialising weights (conversion, synthetic init) is one-off preparation, not load time.
    t = time.perf_counter()
    engine.prepare()
    record.load["prepare_s"] = round(time.perf_counter() - t, 3)
    from runners.quality import prepare_reference

    prepare_reference(run, device)  # quality's reference: cached, or computed in its own process before load
    # Said before the riskiest step so a crash's log tail shows what it was doing.
    log.info("loading %s (%s engine, %s weights) of %s on %s", run.backend.name, run.backend.engine, run.weights,
             run.model.name, device)
    with MemoryWatcher(device) as watch:
        t = time.perf_counter()
        engine.load()
        engine.synchronize()
        record.load["load_s"] = round(time.perf_counter() - t, 3)
    record.load.update({f"load_{k}": round(v, 1) for k, v in watch.peaks.values_mib.items()})
    record.env = envinfo.capture(device)
    save()
    return engine


def _add_roofline(record: RunRecord, device: str) -> None:
    """Batch-1 decode weight bandwidth, once the engine has said how big its weights are."""
    from runners.energy import decode_roofline

    gpu = (record.env.get("gpu") or {}).get("gpu_name") if device == "cuda" else None
    for p in record.points:
        if record.workload != "generate" or p.batch_size != 1 or p.status != "ok":
            continue
        tpot = (p.metrics.get("tpot_ms") or {}).get("median")
        metrics, absent = decode_roofline(record.load.get("weights_mib"), tpot, gpu)
        if device != "cuda":
            absent["decode_weight_bandwidth_of_peak_pct"] = "CPU run: the roofline is against GPU memory bandwidth"
        p.metrics.update(metrics)
        p.absent.update(absent)


def _vocab_size(engine) -> int:
    cfg = engine.ctx.files.hf_config()
    vocab = getattr(cfg, "vocab_size", None) or getattr(getattr(cfg, "text_config", None), "vocab_size", None)
    if not vocab:
        raise RunFailure("invalid_config", "model config has no vocab_size")
    return int(vocab)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m runners.worker PLAN.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    plan = json.loads(Path(argv[0]).read_text())
    record_path = Path(plan["record_path"])
    try:
        run = RunConfig.from_dict(plan["config"], plan["backend_name"])
    except ConfigError as exc:
        rec = RunRecord(run_id=plan["run_id"], backend=plan["backend_name"], engine="?", model="?", workload="?",
                        weights="?", device="?", status="invalid_config", reason=str(exc), order=plan.get("order", 0))
        write_record(record_path, rec)
        return 0
    execute(run, plan["run_id"], record_path, plan.get("order", 0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
