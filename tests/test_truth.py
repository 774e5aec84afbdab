"""A row never lies: quantization is proven, a sweep folder belongs to one sweep, resume goes by
identity, damaged files and full disks lose nothing that finished, bad inputs stop before any model
loads, and the exit status tells a pipeline the truth. Fault-injection style, on CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends.contract import ConfigError, build_once, cache_dir
from backends.contract.artefacts import damage
from runners.plan.config import Expectation
from runners.record.store import RECORD_NAME, find_records, read_record, scan

from .conftest import FAST, FAST_BASE, ROOT, TEST_CONF, bench

SKIP_ALL = "backend.options.llm_int8_skip_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head]"


def _record(folder: Path, backend: str):
    return next(r for r in find_records(folder, warn=False) if r.backend == backend)


# -- 1. a quantized row proves its quantization ----------------------------------------------------
def test_int8_that_skips_every_layer_is_not_applied_never_ok(tmp_path):
    proc = bench("backend=bnb_int8", *FAST, "weights=synthetic", "workload.batch_sizes=[1,2]", SKIP_ALL,
                 f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 1
    [rec] = find_records(tmp_path)
    assert rec.status == "not_applied"
    assert "0 of 15 are (Linear x15)" in rec.reason and "unquantized" in rec.reason
    assert [(p.batch_size, p.status) for p in rec.points] == [(1, "not_applied"), (2, "not_applied")]
    assert all(not p.metrics for p in rec.points)  # a mislabelled run gets no numbers
    assert rec.engine_info["census"]["quantized_layers"] == 0
    assert "| Status | not_applied: bnb_int8 expects quantized linear layers" in (tmp_path / "table.md").read_text()


def test_real_int8_and_nf4_prove_their_bits(tmp_path):
    bench("-m", "backend=bnb_int8,bnb_nf4,fp32", *FAST, "weights=synthetic", "workload.batch_sizes=[1]",
          "report.html=false", f"hydra.sweep.dir={tmp_path}", check=True)
    census = {r.backend: r.engine_info["census"] for r in find_records(tmp_path)}
    assert census["bnb_int8"]["layers"] == {"Linear8bitLt": 14, "Linear": 1}
    assert 8 <= census["bnb_int8"]["quantized_bits"] <= 9
    assert census["bnb_nf4"]["layers"] == {"Linear4bit": 14, "Linear": 1}
    assert 4 <= census["bnb_nf4"]["quantized_bits"] <= 5
    assert census["fp32"]["quantized_layers"] == 0 and census["fp32"]["linear_bits"] == 32


def test_verdict_checks_bits_and_counts():
    from backends.contract import WeightCensus
    from runners.open.verify import verdict

    gptq_as_fp16 = WeightCensus()
    for i in range(256):
        gptq_as_fp16.add("UnquantizedLinearMethod", False, f"layer{i}", 5120 * 5120, 5120 * 5120 * 2)
    why = verdict(Expectation(quantized=True, weight_bits=4), gptq_as_fp16, "gptq")
    assert "0 of 256 are (UnquantizedLinearMethod x256)" in why
    half_bits = WeightCensus()
    half_bits.add("GPTQMarlinLinearMethod", True, "q", 1000, 1000)  # 8 bits stored per weight: not 4-bit
    assert "hold 8.0 bits per weight" in verdict(Expectation(quantized=True, weight_bits=4), half_bits, "gptq")
    good = WeightCensus()
    good.add("GPTQMarlinLinearMethod", True, "q", 4096 * 4096, 4096 * 4096 // 2 + 4096 * 32 * 2)
    assert verdict(Expectation(quantized=True, weight_bits=4), good, "gptq") is None
    assert "no linear-layer census" in verdict(Expectation(quantized=True), None, "gptq")
    assert verdict(Expectation(), None, "anything") is None


# -- 3. a sweep directory belongs to one sweep -----------------------------------------------------
def test_second_sweep_into_a_busy_folder_stops_with_one_line(tmp_path):
    first = subprocess.Popen([sys.executable, "-m", "runners.bench", "-m", f"hydra.searchpath=[file://{TEST_CONF}]",
                              "backend=fault_hang", *FAST, "workload.batch_sizes=[1]", "timeout_s=60",
                              f"hydra.sweep.dir={tmp_path}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (tmp_path / "sweep.json").exists():
            time.sleep(0.2)
        second = bench("-m", "backend=fp32", *FAST, f"hydra.sweep.dir={tmp_path}", timeout=120)
        assert second.returncode == 3
        errors = [ln for ln in second.stderr.splitlines() if ln.strip()]
        assert len(errors) == 1 and str(tmp_path) in errors[0] and "in use by another quantbench sweep" in errors[0]
        assert "Traceback" not in second.stderr
    finally:
        os.killpg(first.pid, 9)
        first.wait()
    assert not [r for r in find_records(tmp_path, warn=False) if r.backend == "fp32"]


def test_a_worker_refuses_a_plan_that_is_not_its_own(tmp_path):
    from runners.plan.config import RunConfig  # noqa: F401 — the plan module's own dependency
    from runners.plan.planner import Plan

    (tmp_path / "run-plan.json").write_text(json.dumps({"plan_id": "someone-elses", "kind": "run"}))
    with pytest.raises(ConfigError, match="another sweep wrote into this directory"):
        Plan.read(tmp_path / "run-plan.json", "mine")
    proc = subprocess.run([sys.executable, "-m", "runners.launch.worker", str(tmp_path / "run-plan.json"), "mine"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and "refusing to measure someone else's plan" in proc.stderr
    assert not (tmp_path / RECORD_NAME).exists()


def test_resume_after_adding_a_backend_in_front_keeps_finished_records(tmp_path):
    common = [*FAST, "workload.batch_sizes=[1]", "report.html=false", f"hydra.sweep.dir={tmp_path}"]
    bench("-m", "backend=fault_none,fp32", *common, check=True)
    before = {r.backend: r for r in find_records(tmp_path)}
    paths = {read_record(p).backend: p for p in tmp_path.rglob(RECORD_NAME)}
    mtimes = {b: p.stat().st_mtime_ns for b, p in paths.items()}
    proc = bench("-m", "backend=bnb_int8,fault_none,fp32", *common, "resume=true", check=True)
    assert proc.stderr.count("already done") == 2
    after = {r.backend: r for r in find_records(tmp_path)}
    assert set(after) == {"bnb_int8", "fault_none", "fp32"} and all(r.status == "ok" for r in after.values())
    for b in ("fault_none", "fp32"):
        assert after[b].started_at == before[b].started_at
        assert paths[b].stat().st_mtime_ns == mtimes[b]  # never rewritten, never deleted


def test_resume_without_a_folder_continues_the_newest_sweep_of_the_same_command(tmp_path):
    args = [sys.executable, "-m", "runners.bench", "-m", f"hydra.searchpath=[file://{TEST_CONF}]",
            "backend=fault_none,fault_segfault", *FAST, "workload.batch_sizes=[1]", "report.html=false"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    first = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 1  # one cell crashed
    [folder] = [p.parent for p in (tmp_path / "multirun").glob("*/*/sweep.json")]
    again = subprocess.run([*args, "resume=true"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert f"resume: continuing {folder.relative_to(tmp_path)}" in again.stderr
    assert "fault_none x tiny x generate already done" in again.stderr
    assert len(list((tmp_path / "multirun").glob("*/*/sweep.json"))) == 1  # no new folder
    other = subprocess.run([*args[:-1], "report.html=true", "resume=true"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert "resume: no earlier sweep of this command" in other.stderr


# -- 4. damaged files and full disks ---------------------------------------------------------------
def test_damaged_record_is_named_and_rerun_by_resume(tmp_path):
    common = [*FAST, "workload.batch_sizes=[1]", "report.html=false", f"hydra.sweep.dir={tmp_path}"]
    bench("-m", "backend=fault_none,fp32", *common, check=True)
    victim = next(p for p in tmp_path.rglob(RECORD_NAME) if read_record(p).backend == "fault_none")
    victim.write_bytes(os.urandom(300))
    found = scan(tmp_path)
    assert [p for p, _ in found.damaged] == [victim] and {r.backend for r in found.records} == {"fp32"}
    report = subprocess.run([sys.executable, "-m", "runners.report", str(tmp_path), "--no-html"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0 and f"warning: {victim} is not a readable record" in report.stderr
    proc = bench("-m", "backend=fault_none,fp32", *common, "resume=true", check=True)
    assert proc.stderr.count("already done") == 1  # fp32 only: the damaged one is run again
    assert _record(tmp_path, "fault_none").status == "ok"


def test_damaged_cache_entry_is_rebuilt_once(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "cache"))  # the session cache holds other entries
    run = [*FAST, "backend=fp32", "weights=synthetic", "workload.batch_sizes=[1]", "report.html=false"]
    bench(*run, f"hydra.run.dir={tmp_path / 'a'}", check=True)
    [weights] = [p for p in (cache_dir() / "synthetic").rglob("model.safetensors")]
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)  # the completion marker stays in place
    assert "bytes, was" in damage(weights.parent)
    proc = bench(*run, f"hydra.run.dir={tmp_path / 'b'}", check=True)
    assert find_records(tmp_path / "b")[0].status == "ok"
    assert "is damaged" in (tmp_path / "b" / "run.log").read_text()
    assert damage(weights.parent) is None and proc.returncode == 0


def test_build_once_names_an_entry_that_stays_damaged(tmp_path, monkeypatch):
    from backends.contract import DamagedArtefact
    from backends.contract import artefacts

    entry = tmp_path / "entry"
    assert build_once(entry, lambda d: (d / "x.bin").write_bytes(b"1234")) is False
    assert build_once(entry, lambda d: pytest.fail("sound entry rebuilt")) is True
    (entry / "x.bin").write_bytes(b"12")
    monkeypatch.setattr(artefacts, "write_manifest", lambda d: (d / artefacts.MANIFEST).write_text(
        json.dumps({"format": 1, "files": {"x.bin": [999, "0"]}})))
    with pytest.raises(DamagedArtefact, match=str(entry)):
        build_once(entry, lambda d: (d / "x.bin").write_bytes(b"1234"))



def _slow_build(entry: str, log: str) -> None:
    import time

    def build(d):
        with open(log, "a") as f:  # one line per build that actually ran
            f.write("built\n")
        time.sleep(1.0)
        (d / "x.bin").write_bytes(b"1234")
    build_once(Path(entry), build)
    assert (Path(entry) / "x.bin").read_bytes() == b"1234"  # never a folder a rename pulled away


def test_processes_asking_for_one_entry_at_once_build_it_once(tmp_path):
    import multiprocessing

    entry, log = tmp_path / "cache" / "kind" / "key", tmp_path / "builds.log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_slow_build, args=(str(entry), str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log.read_text().count("built") == 1

def test_full_disk_keeps_finished_records_and_prints_the_table(small_disk):
    sweep = small_disk / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "runners.bench", "-m", f"hydra.searchpath=[file://{TEST_CONF}]",
         "backend=fault_none,fault_fill_disk,fault_oom_above_batch", *FAST, "workload.batch_sizes=[1]",
         f"hydra.sweep.dir={sweep}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, QB_TEST_FILL_PATH=str(small_disk / "filler")))
    assert proc.returncode == 4, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    (small_disk / "filler").unlink()
    [rec] = [r for r in find_records(sweep) if r.status == "ok"]
    assert rec.backend == "fault_none"  # what finished before the disk filled is intact
    assert "| | fault_none" in proc.stdout  # and the table was printed for it


# -- 5. inputs that used to slip through -----------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["device=cuda"], "device: cuda was asked for, but no CUDA GPU is visible here"),
    (["quality.reference=no_such"], "quality.reference: unknown backend 'no_such'; choose auto or one of"),
    (["timeout_s=nan"], "timeout_s: must be a positive number of seconds, got nan"),
    (["workload.prompt_tokens=600"], "workload.prompt_tokens + workload.new_tokens = 604 exceeds model tiny's "
                                     "max_position_embeddings (512)"),
])
def test_bad_inputs_stop_before_any_model_loads(tmp_path, args, message):
    if args == ["device=cuda"]:
        from runners.plan.planner import cuda_available

        if cuda_available():
            pytest.skip("this machine has a GPU")
    base = [*FAST_BASE, "workload.new_tokens=4"] + ([] if "prompt" in args[0] else ["workload.prompt_tokens=8"])
    proc = bench(*base, *args, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2  # every cell of the command refused: a bad command line
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "loading" not in proc.stderr
    [rec] = find_records(tmp_path)
    assert rec.status == "invalid_config" and message in rec.reason


def test_model_path_to_a_file_is_refused(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    proc = bench(*FAST, f"model.path={f}", "weights=pretrained", f"hydra.run.dir={tmp_path / 'out'}")
    assert proc.returncode == 2 and f"model.path {f} is a file, not a folder" in proc.stderr


@pytest.mark.parametrize("arg, message", [
    ("backend=", "backend= needs a name; valid backends: awq"),
    ("+backend.options.load_in_8bit =true", "no spaces in a key or around '='"),
    ("+backend.options.load_in_8bit=true", "unknown key backend.options.load_in_8bit; valid keys: attn_implementation"),
])
def test_command_line_slips_get_one_line(arg, message):
    proc = bench(arg, timeout=60)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr


# -- 6. exit status --------------------------------------------------------------------------------
def test_sweep_exit_status_is_zero_only_when_every_run_is_ok(tmp_path):
    common = [*FAST, "workload.batch_sizes=[1,2]", "report.html=false"]
    ok = bench("-m", "backend=fault_none,fp32", *common, f"hydra.sweep.dir={tmp_path / 'ok'}")
    assert ok.returncode == 0
    bad = bench("-m", "backend=fault_none,fault_oom_above_batch", *common, f"hydra.sweep.dir={tmp_path / 'bad'}")
    assert bad.returncode == 1 and (tmp_path / "bad" / "table.md").exists()  # after the table is written
    assert "oom" in (tmp_path / "bad" / "table.md").read_text()

