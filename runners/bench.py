"""quantbench: one benchmark cell, or a sweep with `-m`.

    python -m runners.bench                                   # embedded default model, one backend
    python -m runners.bench backend=bnb_int8 model=qwen2.5-0.5b weights=synthetic
    python -m runners.bench -m backend=fp32,bnb_int8 model=tiny   # sweep -> one table

Plans the run, executes it in its own process, writes its record. It knows no engine by name.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from runners.cache import content_key
from runners.config import RunConfig
from runners.records import RECORD_NAME, RunRecord, find_records, write_record
from runners.typed import ConfigError

log = logging.getLogger("quantbench")


def plan_run(cfg: DictConfig) -> tuple[RunConfig, str]:
    """Validate the composed config; raises ConfigError with one readable line."""
    choices = HydraConfig.get().runtime.choices
    data = OmegaConf.to_container(cfg, resolve=True)
    run = RunConfig.from_dict(data, choices["backend"])
    return run, content_key(run.identity())


def _done_before(root: Path, run_id: str) -> RunRecord | None:
    for rec in find_records(root):
        if rec.run_id == run_id and rec.status == "ok":
            return rec
    return None


def _sweep_root(hc) -> Path:
    from hydra.types import RunMode

    return Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else Path(hc.runtime.output_dir)


def execute_job(cfg: DictConfig) -> RunRecord:
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    record_path = out_dir / RECORD_NAME
    backend_name = hc.runtime.choices.get("backend", "?")
    try:
        run, run_id = plan_run(cfg)
    except ConfigError as exc:
        # In a sweep, a bad cell becomes a row that says why; the other cells still run.
        rec = RunRecord(run_id=content_key(backend_name, str(exc)), backend=backend_name, engine="?",
                        model=hc.runtime.choices.get("model", "?"), workload=hc.runtime.choices.get("workload", "?"),
                        weights=str(cfg.get("weights")), device=str(cfg.get("device")), status="invalid_config",
                        reason=str(exc))
        write_record(record_path, rec)
        print(f"error: {exc}", file=sys.stderr)
        return rec
    root = _sweep_root(hc)
    if run.resume:
        done = _done_before(root, run_id)
        if done is not None:
            print(f"[quantbench] resume: {backend_name} x {run.model.name} x {run.workload.kind} already done "
                  f"({run_id}), skipped", file=sys.stderr)
            return done
    print(f"[quantbench] {backend_name} ({run.backend.engine}) x {run.model.name} ({run.weights} weights) x "
          f"{run.workload.kind} batch sizes {run.workload.batch_sizes} -> {out_dir}", file=sys.stderr)
    from runners.worker import new_record

    order = hc.job.num if hc.job.get("num") is not None else 0
    fallback = new_record(run, run_id, run.device, order)
    if not run.isolate:
        from runners.worker import execute

        return execute(run, run_id, record_path, order)
    from runners.isolate import run_isolated

    plan = {"config": OmegaConf.to_container(cfg, resolve=True), "backend_name": backend_name, "run_id": run_id,
            "record_path": str(record_path), "order": order}
    rec = run_isolated(plan, out_dir, run.timeout_s, fallback)
    print(f"[quantbench] {backend_name}: {rec.status}{' - ' + rec.reason if rec.reason else ''}", file=sys.stderr)
    return rec


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    rec = execute_job(cfg)
    hc = HydraConfig.get()
    from hydra.types import RunMode

    if hc.mode == RunMode.RUN:
        from runners.report import write_outputs

        out = Path(hc.runtime.output_dir)
        print(write_outputs(out, html=bool(cfg.report.html)))
        print(f"record: {out / RECORD_NAME}\ntables: {out / 'table.md'}, {out / 'table.csv'}")
        if rec.status not in ("ok", "partial"):
            sys.exit(1)


def main() -> None:
    """Check the overrides (one clear line for a bad one), then let Hydra compose and run."""
    from runners.cli_check import CliError, check

    flags = [a for a in sys.argv[1:] if a.startswith("-")]
    if not {"-h", "--help", "--hydra-help", "--info", "-i"} & set(flags):
        try:
            rest = check([a for a in sys.argv[1:] if not a.startswith("-")])
        except CliError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        sys.argv = [sys.argv[0], *flags, *rest]
    _hydra_main()


if __name__ == "__main__":
    main()
