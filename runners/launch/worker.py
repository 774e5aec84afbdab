"""What a launched child does: measure one run, or compute one quality reference.

`python -m runners.launch.worker PLAN.json PLAN_ID` (started by runners.launch.child, not by users).
The child writes no record: it sends snapshots of its record to the launcher, after load and after
every batch size, so that a run killed half-way keeps what it finished, and the launcher alone
writes `record.json`. Its console (progress bars, results, our own warnings) and its chatter (what
libraries print) travel apart: the console reaches the user's terminal, the chatter only `run.log`.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import IO, Any, Callable

from tqdm import tqdm

from backends import engine_class
from backends.contract import ConfigError, MetricError, RunFailure
from runners import catalogue
from runners.measure import env as envinfo
from runners.measure.failures import classify_exception
from runners.measure.memory import free_memory
from runners.measure.roofline import add_roofline
from runners.open.engine import make_engine, open_engine, prepare_engine, vocab_size
from runners.open.verify import verdict
from runners.plan.planner import Plan
from runners.quality.measure import ReferenceStatus, describe_failure, measure_quality
from runners.quality.reference import ensure_reference
from runners.record.schema import RunRecord, start_record
from runners.workload import workload

log = logging.getLogger("quantbench")
Emit = Callable[[dict[str, Any]], None]


def new_record(plan: Plan) -> RunRecord:
    """The run's record before anything is measured, declaring every metric its producers may write."""
    run = plan.run
    declared = catalogue.for_run(workload(run.workload.kind), engine_class(run.backend.engine), run.task)
    return start_record(run_id=plan.run_id, backend=run.backend.name, engine=run.backend.engine,
                        model=run.model.name, workload=run.workload.kind, weights=run.weights, device=plan.device,
                        config=plan.config, order=plan.order, sweep_id=plan.sweep_id,
                        started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                        declared=declared.to_list())


def _progress_bar(total: int, desc: str, console: IO[str]):
    return tqdm(total=total, desc=desc, unit="call", file=console, dynamic_ncols=True, leave=False)


def measure(plan: Plan, emit: Emit, console: IO[str], trace_dir: Path | None = None) -> RunRecord:
    """Measure one run; failures become classified records, not exceptions. Emits record snapshots."""
    t0 = time.perf_counter()
    run, device = plan.run, plan.device
    record = new_record(plan)
    load_start = envinfo.load_average()

    def snapshot(final: bool = False) -> None:
        record.wall_s = round(time.perf_counter() - t0, 3)
        try:
            data = record.to_dict()
        except MetricError as exc:
            # A producer wrote a key it never declared: the run says so, loudly, rather than lose the key.
            record.status, record.reason = "crash", str(exc)
            record.points, record.load = [], {}
            record.quality.metrics = {}
            data = record.to_dict()
        emit({"record": data, "final": final})

    engine = None
    try:
        engine = make_engine(run.backend, run.model, plan.engine_run)
        if run.weights == "synthetic":
            record.notes.append("synthetic weights: speed and memory are real, quality is not measured")
        wl = run.workload
        kind = workload(wl.kind)
        if getattr(kind, "serves", False):
            _serve(engine, plan, record, kind, console, trace_dir, snapshot)
        else:
            open_engine(engine, run.backend, record.load)
            record.env = envinfo.capture(device, engine.packages)
            snapshot()
        vocab = vocab_size(engine) if wl.batch_sizes else 0  # a serving run has no batch sizes
        for bs in wl.batch_sizes:
            most = wl.max_repeats if wl.repeats == "auto" else wl.repeats
            with _progress_bar(wl.warmup + most, f"{run.backend.name} {wl.kind} bs={bs}", console) as bar:
                trace = trace_dir / f"trace-{wl.kind}-bs{bs}.json.gz" if run.profile and trace_dir else None
                point = kind.run(engine, wl, bs, vocab, device, bar.update, trace)
            record.points.append(point)
            record.summarize_status()
            log.info("%s batch %d: %s%s", run.backend.name, bs, point.status,
                     f" ({point.reason.splitlines()[0][:200]})" if point.reason else "")
            snapshot()
        served = record.engine_info.get("server")
        record.engine_info = engine.describe()  # before quality's calls, so it describes the measured ones
        if served is not None:
            record.engine_info["server"] = served
        ref = ReferenceStatus(**plan.reference_status) if plan.reference_status else None
        record.quality = measure_quality(engine, run, ref)
        record.load.update(engine.memory_facts())
        gpu = (record.env.get("gpu") or {}).get("gpu_name") if device == "cuda" else None
        add_roofline(record.points, record.load.get("weights_mib"), device, gpu)
    except (RunFailure, ConfigError, Exception) as exc:  # noqa: BLE001 — classified and kept in the record
        failure = (RunFailure("invalid_config", str(exc)) if isinstance(exc, ConfigError)
                   else classify_exception(exc))
        record.status, record.reason = failure.status, failure.reason
        if not isinstance(exc, (RunFailure, ConfigError)):
            log.exception("run failed")
    finally:
        if engine is not None:
            if not record.engine_info:
                try:
                    record.engine_info = engine.describe()
                except Exception:  # noqa: BLE001 — describing is best effort after a failure
                    pass
            census = _census(engine)
            if census:
                record.engine_info["census"] = census
            engine.close()
        free_memory()
    record.env = record.env or envinfo.capture(device, engine.packages if engine else ())
    record.env["load_average"] = {"start": load_start, "end": envinfo.load_average()}
    snapshot(final=True)
    return record


def _serve(engine, plan: Plan, record: RunRecord, kind, console: IO[str], folder: Path | None,
           snapshot: Callable[[], None]) -> None:
    """A serving run: the files prepared, the engine's own server under every load point (then stopped),
    then the same files and arguments loaded in-process for the census and quality. The server's own
    census, when its engine reports one, must satisfy the backend's expectation too."""
    run = plan.run
    prepare_engine(engine, record.load)
    record.env = envinfo.capture(plan.device, engine.packages)
    snapshot()
    here = folder or Path.cwd()

    def bar(total: int, desc: str):
        return tqdm(total=total, desc=desc, unit="req", file=console, dynamic_ncols=True, leave=False)

    def on_point(point) -> None:
        record.points.append(point)
        record.summarize_status()
        log.info("%s %s: %s%s", run.backend.name, point.where, point.status,
                 f" ({point.reason.splitlines()[0][:200]})" if point.reason else "")
        snapshot()

    served = kind.serve(engine, run.workload, plan.device, vocab_size(engine), bar, here, on_point)
    record.engine_info["server"] = served.facts
    if served.census is not None:
        record.engine_info["server"]["census"] = served.census.to_dict()
    snapshot()
    # The server has stopped: its memory is free for the in-process load that proves what the files hold.
    open_engine(engine, run.backend, record.load, prepared=True)
    if served.census is not None:
        reason = verdict(run.backend.expect, served.census, run.backend.name, engine.describe)
        if reason:
            raise RunFailure("not_applied", f"the server's own model: {reason}")
        record.notes.append("census: the model the server loaded (reported by the server process), and the "
                            "in-process load of the same files and arguments")
    else:
        record.notes.append("census: the in-process load of the same files and engine arguments as the server "
                            "(the server does not report its layers); the server's log facts are in engine_info.server")


def _census(engine) -> dict | None:
    try:
        census = engine.census()
    except Exception:  # noqa: BLE001 — evidence is best effort after a failure
        return None
    return census.to_dict() if census is not None else None


def reference(plan: Plan, emit: Emit) -> None:
    """Compute the quality reference's outputs and cache them; the outcome goes to the launcher."""
    path = Path(plan.reference_status["path"])
    engine = None
    try:
        engine = make_engine(plan.run.backend, plan.run.model, plan.engine_run)
        open_engine(engine, plan.run.backend, {})
        ensure_reference(path, engine, plan.run)
        emit({"reference": {"ok": True}, "final": True})
    except Exception as exc:  # noqa: BLE001 — the measured run records the reason
        log.exception("reference failed")
        emit({"reference": {"absent": f"reference {plan.run.backend.name}: {describe_failure(exc)}"}, "final": True})
    finally:
        if engine is not None:
            engine.close()


def _channels() -> tuple[IO[str], IO[str]]:
    """(console, results): the pipes the launcher gave this child, line-buffered text."""
    console = os.fdopen(int(os.environ["QUANTBENCH_CONSOLE_FD"]), "w", buffering=1, encoding="utf-8")
    results = os.fdopen(int(os.environ["QUANTBENCH_RESULT_FD"]), "w", buffering=1, encoding="utf-8")
    return console, results


def configure_logging(console: IO[str]) -> None:
    """Our messages to the console; everything (libraries' too) with timestamps to the log (stderr)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    chatter = logging.StreamHandler(sys.stderr)
    chatter.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.addHandler(chatter)
    ours = logging.StreamHandler(console)
    ours.setFormatter(logging.Formatter("[quantbench] %(message)s"))
    ours.setLevel(logging.INFO)
    ours.addFilter(lambda r: not r.exc_info)  # tracebacks are for run.log; the console gets the verdict
    log.addHandler(ours)
    log.propagate = True
    logging.captureWarnings(True)  # library warnings are chatter: run.log, not the console
    warnings.simplefilter("default")


def _unwind(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m runners.launch.worker PLAN.json PLAN_ID (started by quantbench's launcher)",
              file=sys.stderr)
        return 2
    try:
        plan = Plan.read(Path(argv[0]), argv[1])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    console, results = _channels()
    configure_logging(console)
    # The launcher stops a run with SIGTERM to its process group: unwinding (rather than dying at once)
    # lets a server the run started, in its own process group, be stopped on the way out.
    signal.signal(signal.SIGTERM, _unwind)

    def emit(message: dict[str, Any]) -> None:
        results.write(json.dumps(message, default=str) + "\n")

    try:
        if plan.kind == "reference":
            reference(plan, emit)
        else:
            measure(plan, emit, console, Path(argv[0]).parent)
    finally:
        results.close()
        console.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
