"""quantbench: one benchmark cell, or a sweep with `-m`.

    quantbench                                                # embedded default model, one backend
    quantbench backend=bnb_int8 model=qwen2.5-0.5b weights=synthetic
    quantbench -m backend=fp32,bnb_int8,ort_int8              # sweep -> one table

Checks the command line, composes with Hydra, plans each run, hands it to the launcher. It knows no
engine by name.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from backends.contract import ConfigError, content_key
from backends.contract.safefs import UnsafePath
from runners import cachecmd
from runners.launch.gpus import visible_gpus
from runners.launch.job import reject, run_job
from runners.measure.serving import Slo, SloError
from runners.plan.cli import CliError, check, split_argv
from runners.plan.planner import plan_run
from runners.plan.search import ConfigSearch, shipped_conf
from runners.record.store import find_records
from runners.plan.config import ReportSpec, SweepSettings
from runners.report import choose
from runners.sweep import (EXIT_USAGE, LOCK_FILE, JobOutcome, close_sweep, latest_same_command, read_sweep_file,
                           swept_backends)

# A job's folder is named after its own overrides, not its position in the sweep: adding a backend in
# front of a list must not move the other cells into each other's folders.
_MAX_DIR = 96


def job_dir_name(override_dirname: str) -> str:
    name = (override_dirname or "default").replace("/", "_").replace(os.sep, "_")
    if len(name) <= _MAX_DIR:
        return name
    return f"{name[:_MAX_DIR - 17]}-{content_key(name)}"


def gpu_count() -> int:
    """How many GPUs this host shows (for `hydra/launcher=gpus`: one job per GPU); at least 1."""
    return max(1, len(visible_gpus()))


OmegaConf.register_new_resolver("qb_job_dir", job_dir_name, replace=True)
OmegaConf.register_new_resolver("qb_gpu_count", gpu_count, replace=True)


def _hc_choice(group: str) -> str:
    return HydraConfig.get().runtime.choices.get(group, "?")


def _sweep_root(hc) -> Path:
    return Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else Path(hc.runtime.output_dir)


def _unwritable(exc: OSError, where: Path) -> str:
    """Why results could not be written; the sweep says it once (runners.sweep.Sweep.job_ended)."""
    return f"cannot write results under {where}: {exc.strerror or exc}"


_WRITE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EFBIG, errno.EPERM)


def execute_job(cfg: DictConfig) -> JobOutcome:
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    order = hc.job.num if hc.job.get("num") is not None else 0
    root = _sweep_root(hc)
    sweep_id = read_sweep_file(root).get("sweep_id")  # the sweep's own file: any launcher, any process
    search = ConfigSearch.from_hydra(hc.runtime.config_sources)
    try:
        plan = plan_run(OmegaConf.to_container(cfg, resolve=True), _hc_choice("backend"), search, order, sweep_id)
    except ConfigError as exc:
        # In a sweep, a bad cell becomes a row that says why; the other cells still run.
        print(f"error: {exc}", file=sys.stderr)
        try:
            rec = reject(out_dir, backend=_hc_choice("backend"), model=_hc_choice("model"),
                         workload=_hc_choice("workload"), weights=str(cfg.get("weights")), device=str(cfg.get("device")),
                         error=str(exc), order=order, sweep_id=sweep_id, root=root)
        except UnsafePath as err:
            return JobOutcome("invalid_config", str(err))
        except OSError as err:
            return JobOutcome("invalid_config", _unwritable(err, out_dir))
        return JobOutcome(rec.status)
    run = plan.run
    if plan.settings.resume:
        done = next((r for r in find_records(root) if r.run_id == plan.run_id and r.status == "ok"), None)
        if done is not None:
            print(f"[quantbench] resume: {run.backend.name} x {run.model.name} x {run.workload.kind} already done "
                  f"({plan.run_id}), skipped", file=sys.stderr)
            return JobOutcome(done.status)
    print(f"[quantbench] {run.backend.name} ({run.backend.engine}) x {run.model.name} ({run.weights} weights) x "
          f"{run.workload.kind} {run.workload.points_text} on {plan.device} -> {out_dir}", file=sys.stderr)
    try:
        rec = run_job(plan, out_dir, root=root)
    except UnsafePath as exc:
        return JobOutcome("crash", str(exc))
    except OSError as exc:
        if exc.errno not in _WRITE_ERRNOS:
            raise
        return JobOutcome("crash", _unwritable(exc, out_dir))
    print(f"[quantbench] {run.backend.name}: {rec.status}{' - ' + rec.reason.splitlines()[0][:300] if rec.reason else ''}",
          file=sys.stderr)
    return JobOutcome(rec.status)


class Stopped(BaseException):
    """A signal (Ctrl-C's SIGINT, SIGTERM) stopped the sweep; a BaseException so that nothing on the way
    (Hydra included) takes it for a failed cell and goes on with the next one."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.root: Path | None = None  # the sweep's folder, once a cell knows it
        self.report: dict = {}


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signum)


@hydra.main(version_base="1.3", config_path=str(shipped_conf()), config_name="config")
def _hydra_main(cfg: DictConfig) -> JobOutcome:
    try:
        return execute_job(cfg)  # the sweep (runners.sweep.SweepCallback) reads each cell's outcome from it
    except Stopped as stop:
        stop.root = _sweep_root(HydraConfig.get())
        stop.report = OmegaConf.to_container(cfg.report, resolve=True) if cfg.get("report") is not None else {}
        raise


def _stopped(stop: Stopped) -> int:
    """After a signal: one line, the table of the cells that finished, exit 128 + the signal's number."""
    name = signal.Signals(stop.signum).name
    print(f"error: stopped by {name}: the running cell was stopped with its processes (its record says "
          f"incomplete){'; the table below holds the cells that finished' if stop.root else ''}", file=sys.stderr)
    if stop.root is not None and stop.root.is_dir():
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the table in half
        try:
            close_sweep(stop.root, stop.report.get("baseline"), bool(stop.report.get("html", True)), [])
        except Exception as exc:  # noqa: BLE001 — the exit code below still says what happened
            print(f"error: the table could not be written ({type(exc).__name__}: {exc})", file=sys.stderr)
        finally:
            (stop.root / LOCK_FILE).unlink(missing_ok=True)
    return 128 + stop.signum


_INFO_FLAGS = {"-h", "--help", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc",
               "--version"}


def _where_to_write(overrides: list[str], multirun: bool) -> list[str]:
    """`resume=true` continues the newest earlier folder of the same command, unless one is given."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = {o.lstrip("+").split("=", 1)[0] for o in overrides}
    resume = any(o.lstrip("+") in ("resume=true", "resume=True") for o in overrides)
    if not resume or key in given:
        return []
    root = Path("multirun" if multirun else "outputs")
    found = latest_same_command(root, overrides) if root.is_dir() else None
    if found is None:
        print(f"[quantbench] resume: no earlier {'sweep' if multirun else 'run'} of this command under {root}/; "
              f"starting a new one (to continue another folder, give {key}=FOLDER)", file=sys.stderr)
        return []
    print(f"[quantbench] resume: continuing {found} (the newest folder of this command)", file=sys.stderr)
    return [f"{key}={found}"]


def _value(overrides: list[str], key: str) -> str | None:
    for o in overrides:
        k, sep, v = o.lstrip("+").partition("=")
        if sep and k == key:
            return v.strip().strip("'\"") or None
    return None


def check_report_settings(overrides: list[str], search: ConfigSearch) -> None:
    """report.require / maximize / minimize / slo / baseline, checked before any cell runs (a bad term found
    after an hour of measuring is an hour lost). Raises CliError; warns about a baseline this command
    does not run."""
    try:
        choose.parse_constraints(_value(overrides, "report.require"))
        choose.parse_objective(_value(overrides, "report.maximize"), _value(overrides, "report.minimize"))
    except choose.ConstraintError as exc:
        raise CliError(str(exc).replace("--require", "report.require").replace("--maximize", "report.maximize")
                       .replace("--minimize", "report.minimize")) from None
    try:
        Slo.parse(_value(overrides, "report.slo"))  # its message names report.slo and the valid forms
    except SloError as exc:
        raise CliError(str(exc)) from None
    baseline = _value(overrides, "report.baseline")
    if baseline is None:
        return
    valid = search.choices("backend")
    if baseline not in valid:
        raise CliError(f"report.baseline: unknown backend {baseline!r}; valid backends: {', '.join(sorted(valid))}")
    swept = swept_backends(overrides) or [search.default_choices().get("backend")]
    if baseline not in swept:
        print(f"warning: report.baseline={baseline} is not a backend of this command ({', '.join(map(str, swept))}): "
              "the table compares against it only where its record is in the folder", file=sys.stderr)


def _folder_name_exclusions() -> str:
    """Sweep settings never name a cell's folder: they change how a sweep runs, not what a cell measures."""
    keys = [f.name for f in dataclasses.fields(SweepSettings) if f.name != "report"]
    keys += [f"report.{f.name}" for f in dataclasses.fields(ReportSpec)]
    return f"hydra.job.config.override_dirname.exclude_keys=[{','.join(keys)}]"


def main() -> None:
    """Check the overrides (one clear line for a bad one), then let Hydra compose and run."""
    if sys.argv[1:2] == ["cache"]:
        sys.exit(cachecmd.main(sys.argv[2:]))
    flags, overrides = split_argv(sys.argv[1:])
    if not _INFO_FLAGS & set(flags):
        try:
            overrides = check(overrides)
            check_report_settings(overrides, ConfigSearch.from_args(overrides))
        except (CliError, ConfigError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        overrides += _where_to_write(overrides, "-m" in flags or "--multirun" in flags)
        overrides.append(_folder_name_exclusions())
    sys.argv = [sys.argv[0], *flags, *overrides]
    # Ctrl-C and SIGTERM (a scheduler, `kill`) end a sweep the same way: children stopped, a table of
    # what finished, exit 130 or 143.
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        _hydra_main()
    except Stopped as stop:
        sys.exit(_stopped(stop))


if __name__ == "__main__":
    main()
