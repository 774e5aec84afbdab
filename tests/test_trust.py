"""A row never lies, part II: what a hostile but fair user tries, each case a test that failed before.

Results folders that cannot be turned against their user, records checked before they are believed,
every fault ending in a table and an honest exit code, inputs that used to slip through, failures that
say what failed, and a cache that checks every byte it serves.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends.contract import artefacts
from backends.contract.safefs import UnsafePath, write_text
from runners.launch.child import Exit
from runners.measure.failures import last_error_line, oom_kills
from runners.record.store import find_records

from .conftest import FAST, ROOT, TEST_CONF, bench, built_once, session_folder

ONE = [*FAST, "weights=synthetic", "workload.batch_sizes=[1]", "report.html=false"]


def _report(folder: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runners.report", str(folder), "--no-html", *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory, cache_dir) -> Path:
    """One finished two-cell sweep per session (parallel workers share it), copied by the tests that use it."""
    def build(sweep: Path) -> None:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("QUANTBENCH_CACHE", str(cache_dir))
            bench("-m", "backend=fp32,bf16", *ONE, f"hydra.sweep.dir={sweep}", check=True)

    return built_once(session_folder(tmp_path_factory, "trust-sweep") / "s", build)


def _copy(folder: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(folder, dest, symlinks=True)
    return dest


# -- 1. files quantbench writes cannot be turned against the user -----------------------------------
def test_a_table_that_links_outside_is_refused_and_the_outside_file_untouched(finished_sweep, tmp_path):
    sweep = _copy(finished_sweep, tmp_path / "s")
    outside = tmp_path / "precious.txt"
    outside.write_text("mine")
    (sweep / "table.md").unlink()
    (sweep / "table.md").symlink_to(outside)
    proc = _report(sweep)
    assert proc.returncode == 4, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "table.md is a symbolic link" in errors[0] and "Traceback" not in proc.stderr
    assert outside.read_text() == "mine"


def test_a_lock_file_that_links_outside_is_refused(finished_sweep, tmp_path):
    sweep = _copy(finished_sweep, tmp_path / "s")
    outside = tmp_path / "precious.txt"
    outside.write_text("mine")
    (sweep / ".quantbench.lock").symlink_to(outside)
    proc = bench("-m", "backend=fp32,bf16", *ONE, f"hydra.sweep.dir={sweep}", "resume=true")
    assert proc.returncode == 4 and "symbolic link" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert outside.read_text() == "mine"


def test_a_cell_folder_that_links_outside_is_never_written_through(tmp_path):
    sweep, outside = tmp_path / "s", tmp_path / "elsewhere"
    outside.mkdir()
    sweep.mkdir()
    # The folder Hydra names the cell after its overrides, planted as a link by an earlier (shared) sweep.
    from runners.bench import job_dir_name

    name = job_dir_name("backend=fp32,model=tiny,weights=synthetic,workload.batch_sizes=[1],workload.new_tokens=4,"
                        "workload.prompt_tokens=8,workload.repeats=2,workload.warmup=1")
    (sweep / name).symlink_to(outside)
    proc = bench("-m", "backend=fp32", *ONE, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 4 and "symbolic link" in proc.stderr, proc.stderr[-2000:]
    assert list(outside.iterdir()) == []


def test_safe_writes_are_atomic_and_refuse_links(tmp_path):
    target = tmp_path / "a.txt"
    write_text(target, "one")
    write_text(target, "two")
    assert target.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere.txt")
    with pytest.raises(UnsafePath, match="link is a symbolic link"):
        write_text(tmp_path / "link", "x")
    assert not (tmp_path / "elsewhere.txt").exists()
    (tmp_path / "sub").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real").mkdir()
    with pytest.raises(UnsafePath, match="sub is a symbolic link"):
        write_text(tmp_path / "sub" / "f.txt", "x", root=tmp_path)


def test_a_cache_entry_that_links_outside_is_refused_and_nothing_there_deleted(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "cache"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / artefacts.MANIFEST).write_text("someone else's")
    (outside / "data.bin").write_bytes(b"x")
    entry = artefacts.cache_path("converted", "m")
    entry.parent.mkdir(parents=True)
    entry.symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        artefacts.build_once(entry, lambda tmp: (tmp / "w").write_text("w"))
    with pytest.raises(UnsafePath):
        artefacts.invalidate(entry)
    assert (outside / artefacts.MANIFEST).read_text() == "someone else's" and (outside / "data.bin").exists()


# -- 6. the cache checks every byte it serves --------------------------------------------------------
def test_bytes_zeroed_inside_a_cached_file_are_found_and_the_entry_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "cache"))
    entry = artefacts.cache_path("converted", "zeroed")
    builds = []

    def build(tmp: Path) -> None:
        builds.append(1)
        (tmp / "model.safetensors").write_bytes(bytes(range(256)) * 4096 * 4)  # 4 MiB, not all zero

    assert artefacts.build_once(entry, build) is False
    data = bytearray((entry / "model.safetensors").read_bytes())
    data[1_500_000:1_600_000] = bytes(100_000)  # same size, damage away from the start, middle and end
    (entry / "model.safetensors").write_bytes(bytes(data))
    assert "changed since it was built" in artefacts.damage(entry)
    assert artefacts.build_once(entry, build) is False and len(builds) == 2
    assert artefacts.damage(entry) is None


def test_a_temp_folder_left_by_a_killed_build_is_removed_by_the_next(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "cache"))
    entry = artefacts.cache_path("onnx", "killed")
    stale = entry.with_name(entry.name + ".tmp4242")
    stale.mkdir(parents=True)
    (stale / "half.onnx").write_bytes(b"half")
    artefacts.build_once(entry, lambda tmp: (tmp / "model.onnx").write_bytes(b"whole"))
    assert not stale.exists() and (entry / "model.onnx").read_bytes() == b"whole"


# -- 2. records are checked before they are believed ---------------------------------------------------
def test_edited_records_are_named_shown_as_invalid_and_never_compared_or_plotted(finished_sweep, tmp_path):
    sweep = _copy(finished_sweep, tmp_path / "s")
    [path] = [p for p in sweep.rglob("record.json") if json.loads(p.read_text())["backend"] == "bf16"]
    rec = json.loads(path.read_text())
    point = rec["points"][0]["metrics"]
    point["output_tokens_per_s"]["median"] *= -1000
    point["output_tokens_per_s"]["samples"] = [-v for v in point["output_tokens_per_s"]["samples"]]
    point["ttft_ms"]["median"] = -5
    rec["backend"] = "awq"  # its config still says bf16, its census says 16-bit float layers
    path.write_text(json.dumps(rec))
    proc = subprocess.run([sys.executable, "-m", "runners.report", str(sweep)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "warning: the record of awq fails its own checks" in proc.stderr and "Traceback" not in proc.stderr
    table = (sweep / "table.md").read_text()
    assert "invalid_record" in table and "output_tokens_per_s is negative" in table and "(-" not in table.split(
        "## Invalid records")[0].split("| Output tokens/s |")[1].split("\n")[0]
    assert (sweep / "report.html").is_file()  # the plots never cost the rest of the report


# -- 3. every fault ends in a table and an honest exit code ---------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_sweep_stops_children_writes_the_table_and_exits_128_plus(tmp_path, sig):
    sweep = tmp_path / "s"
    cmd = [sys.executable, "-m", "runners.bench", "-m", f"hydra.searchpath=[file://{TEST_CONF}]",
           "backend=fault_none,fault_hang", "workload.new_tokens=4,5", *ONE[1:], "model=tiny",
           f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(sweep.glob("backend=fault_hang*/run.log")):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err[-3000:]
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"stopped by {signal.Signals(sig).name}" in errors[0] and "Traceback" not in err
    recs = {(r.backend, r.config["workload"]["new_tokens"]): r.status for r in find_records(sweep)}
    assert recs[("fault_none", 4)] == "ok" and recs[("fault_hang", 4)] == "incomplete"
    assert "| | fault_none" in (sweep / "table.md").read_text() and "| | fault_none" in out
    assert not (sweep / ".quantbench.lock").exists()
    alive = subprocess.run(["pgrep", "-f", f"runners.launch.worker {sweep}"], capture_output=True, text=True)
    assert alive.stdout.strip() == ""


def test_a_failure_in_the_sweeps_closing_step_exits_non_zero(tmp_path):
    code = ("import sys, runners.sweep as s\n"
            "def broken(*a, **k):\n    raise RuntimeError('plot library exploded')\n"
            "s.write_outputs = broken\n"
            "import runners.bench as b\nsys.argv = ['quantbench', *sys.argv[1:]]\nb.main()\n")
    proc = subprocess.run([sys.executable, "-c", code, "-m", "backend=fp32", *ONE, f"hydra.sweep.dir={tmp_path / 's'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "the sweep's closing step failed (RuntimeError: plot library exploded)" in proc.stderr
    assert "UserWarning" not in proc.stderr


def test_an_output_folder_that_is_a_file_or_read_only_gives_one_line_and_exit_4(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    proc = bench("-m", "backend=fp32", *ONE, f"hydra.sweep.dir={a_file}")
    assert proc.returncode == 4 and "it is a file, not a folder" in proc.stderr and "Traceback" not in proc.stderr
    if os.geteuid() != 0:  # root writes through read-only permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        proc = bench("-m", "backend=fp32", *ONE, f"hydra.sweep.dir={ro / 's'}")
        assert proc.returncode == 4 and "Traceback" not in proc.stderr, proc.stderr


def test_report_on_a_full_disk_leaves_every_output_whole(finished_sweep, small_disk):
    sweep = _copy(finished_sweep, small_disk / "s")
    before = {p.name: p.read_bytes() for p in sweep.iterdir() if p.is_file()}
    (small_disk / "filler").write_bytes(b"\0")
    with open(small_disk / "filler", "ab") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    proc = subprocess.run([sys.executable, "-m", "runners.report", str(sweep), "--columns", "bf16,fp32"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4 and "No space left on device" in proc.stderr and "Traceback" not in proc.stderr
    after = {p.name: p.read_bytes() for p in sweep.iterdir() if p.is_file()}
    assert after == before  # old outputs whole, no half-written temp file left


# -- 4. inputs that still slipped through ------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["backend=[fp32,bnb_int8]"], "a run has one backend; to compare backends, sweep them: -m backend=fp32,bnb_int8"),
    (["-m", "backend=[]"], "a run has one backend; to compare backends, sweep them"),
    (["report.baseline=int3"], "report.baseline: unknown backend 'int3'; valid backends:"),
    (["report.require=tpott<=5ms"], "report.require: unknown metric 'tpott'"),
    (["report.maximize=speediness"], "report.maximize: unknown metric 'speediness'"),
])
def test_bad_report_settings_and_list_syntax_stop_before_any_run(tmp_path, args, message):
    proc = bench(*args, *ONE, f"hydra.sweep.dir={tmp_path / 's'}", f"hydra.run.dir={tmp_path / 'r'}")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "s").exists() and not (tmp_path / "r").exists()


def test_natural_forms_of_require_and_a_non_ascii_folder_work_and_name_folders_cleanly(tmp_path):
    sweep = tmp_path / "ünï"
    proc = bench("-m", "backend=fp32", *ONE, "report.require=tpot<=5s", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "**Answer:**" in (sweep / "table.md").read_text()
    names = [p.name for p in sweep.iterdir() if p.is_dir()]
    assert names and not any("report" in n or '"' in n or "'" in n for n in names), names


def test_a_missing_or_empty_quality_text_is_a_row_and_the_other_cells_run(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    sweep = tmp_path / "s"
    proc = bench("-m", "backend=fp32", f"quality.text={tmp_path / 'missing.txt'},{empty}", "model=smollm2-135m",
                 "workload.warmup=1", "workload.repeats=2", "workload.prompt_tokens=8", "workload.new_tokens=4",
                 "workload.batch_sizes=[1]", "report.html=false", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 2, proc.stderr[-2000:]  # every cell refused: a bad command line
    reasons = sorted(r.reason for r in find_records(sweep))
    assert [r.split(":")[0] for r in reasons] == ["quality.text", "quality.text"]
    assert "is empty" in reasons[0] + reasons[1] and "is not a file" in reasons[0] + reasons[1]


def test_value_errors_exit_2_as_the_readme_says(tmp_path):
    for arg, message in (("workload.repeats=abc", "workload.repeats"), ("workload.new_tokens=-1",
                                                                        "workload.new_tokens: must be > 0")):
        proc = bench(*ONE, arg, f"hydra.run.dir={tmp_path / arg.split('=')[0]}")
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]


def test_the_quality_reference_is_named_and_a_self_reference_says_so():
    from runners.record.schema import Quality, RunRecord
    from runners.report.metrics import INFO

    [row] = [i for i in INFO if i.key == "quality_reference"]
    rec = RunRecord("r", "fp32", "transformers", "m", "generate", "pretrained", "cpu")
    rec.quality = Quality(metrics={"kl_mean_nats": 0.0}, reference="fp32", facts={"reference_source": "self (cached)"})
    assert row.get(rec) == "fp32 (this backend itself: KL 0 and 100% agreement by definition)"
    rec.quality.facts["reference_source"] = "cache"
    assert row.get(rec) == "fp32"


def test_a_pickle_only_folder_is_refused_alike_by_every_engine(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "pytorch_model.bin").write_bytes(b"not really")
    sweep = tmp_path / "s"
    bench("-m", "backend=fp32,ort_fp32", *ONE[:-2], "weights=pretrained", f"model.path={folder}",
          "workload.batch_sizes=[1]", "report.html=false", f"hydra.sweep.dir={sweep}")
    recs = {r.backend: r for r in find_records(sweep)}
    for name in ("fp32", "ort_fp32"):
        assert recs[name].status == "invalid_config", (name, recs[name].reason)
        assert "holds only pickle checkpoints (pytorch_model.bin)" in recs[name].reason
        assert "model.allow_pickle=true" in recs[name].reason


# -- 5. failures say what failed ------------------------------------------------------------------------
def test_a_native_library_that_exits_is_named_by_its_last_error_line(tmp_path):
    bench(f"hydra.searchpath=[file://{TEST_CONF}]", "backend=fault_native_exit_after_first", *FAST,
          "weights=synthetic", "workload.batch_sizes=[1,4]", "report.html=false", f"hydra.run.dir={tmp_path}")
    [rec] = find_records(tmp_path)
    assert rec.points[0].status == "ok"  # the batch size before the crash keeps its numbers
    assert rec.status == "partial" or rec.points[1].status == "crash"
    assert "worker exited with code 1: Error invalid argument at line 421 in file /src/csrc/ops.cu" in (
        rec.points[1].reason or "")


def test_a_kill_by_the_out_of_memory_killer_is_host_oom():
    how = Exit(-signal.SIGKILL, False, 3.0, oom_killed=True, peak_rss_mib=23_000.0).how(60)
    assert how[0] == "oom" and "host memory: the kernel's out-of-memory killer" in how[1] and "23,000 MiB" in how[1]
    how = Exit(-signal.SIGKILL, False, 3.0, oom_killed=False).how(60)
    assert how[0] == "crash" and "killed by SIGKILL (not by quantbench" in how[1]
    assert oom_kills() is None or oom_kills() >= 0


def test_last_error_line_skips_progress_bars():
    log = "loading\nfoo: 100%|###| 3/3 [00:01<00:00, 2.0it/s]\nError invalid argument at line 421\nbye\n"
    assert last_error_line(log) == "Error invalid argument at line 421"
    assert last_error_line("just this\n") == "just this"
