"""Pure pieces: statistics, clocks, records, roofline, energy (the report's are in tests/test_report_*.py)."""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

from backends import engine_class
from runners.catalogue import for_run
from runners.workload import workload
from runners.record.schema import Point, RunRecord
from runners.record.store import find_records, read_record, write_record
from backends.contract import HostClock, StepTimer
from runners.measure.stats import Stat, percentile


def test_stat_matches_numpy():
    xs = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    s = Stat.of(xs)
    assert s.median == pytest.approx(np.median(xs))
    assert s.p90 == pytest.approx(np.percentile(xs, 90))
    assert s.p99 == pytest.approx(np.percentile(xs, 99))
    assert (s.min, s.max, s.n) == (1.0, 10.0, 6)
    assert s.cv_pct == pytest.approx(100 * np.std(xs, ddof=1) / np.mean(xs))
    assert s.samples == xs  # kept in measurement order


def test_percentile_edges():
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_step_timer_with_fake_clock():
    ticks = iter([0.0, 0.010, 0.012, 0.014, 0.016, 0.020])
    clock = HostClock()
    clock.mark = lambda: next(ticks)  # type: ignore[method-assign]
    t = StepTimer(clock)
    t.begin(); t.token(); t.token(); t.token(); t.token(); t.end()
    s = t.sample()
    assert s.ttft_ms == pytest.approx(10.0)
    assert s.decode_ms_per_token == pytest.approx(2.0)
    assert s.e2e_ms == pytest.approx(20.0)
    assert s.new_tokens == 4


def test_step_timer_external():
    t = StepTimer(HostClock())
    t.begin()
    t.external(ttft_ms=30.0, e2e_ms=130.0, new_tokens=11)
    assert t.sample().decode_ms_per_token == pytest.approx(10.0)


def _record(backend, order, value, status="ok", bs=1):
    stat = Stat.of([value, value * 1.1, value * 0.9])
    p = Point(batch_size=bs, status=status, metrics={"per_example_ms": stat, "peak_allocated_mib": value * 100}
              if status == "ok" else {}, reason=None if status == "ok" else "CUDA out of memory")
    declared = for_run(workload("classify"), engine_class("transformers"), "sequence_classification").to_list()
    return RunRecord(run_id=f"{backend}-{bs}", backend=backend, engine="transformers", model="m", workload="classify",
                     weights="synthetic", device="cuda", order=order, points=[p], declared=declared)


def test_record_roundtrip_and_atomic_write(tmp_path):
    rec = _record("fp16", 0, 2.0)
    path = tmp_path / "a" / "record.json"
    write_record(path, rec)
    assert read_record(path) == rec
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]  # no temp file left behind


def test_find_records_newest_wins_and_skips_garbage(tmp_path):
    old, new = _record("fp16", 0, 2.0), _record("fp16", 0, 3.0)
    write_record(tmp_path / "0" / "record.json", old)
    os.utime(tmp_path / "0" / "record.json", (time.time() - 100, time.time() - 100))
    write_record(tmp_path / "1" / "record.json", new)
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "record.json").write_text("{half a json")
    found = find_records(tmp_path)
    assert len(found) == 1
    assert found[0].points[0].metrics["per_example_ms"].median == pytest.approx(3.0)


def test_summarize_status():
    rec = _record("fp16", 0, 2.0)
    rec.points.append(Point(batch_size=16, status="oom", reason="CUDA out of memory"))
    rec.summarize_status()
    assert rec.status == "partial" and "batch 16: oom" in rec.reason


def test_peak_bandwidth_table_matches_specific_names_first():
    from runners.measure.roofline import peak_bandwidth_gb_per_s

    assert peak_bandwidth_gb_per_s("NVIDIA H100 80GB HBM3") == 3350.0
    assert peak_bandwidth_gb_per_s("NVIDIA H100 PCIe") == 2000.0
    assert peak_bandwidth_gb_per_s("NVIDIA H200") == 4800.0
    assert peak_bandwidth_gb_per_s("Tesla T4") == 320.0
    assert peak_bandwidth_gb_per_s("NVIDIA L40S") == 864.0
    assert peak_bandwidth_gb_per_s("Some Future GPU") is None
    assert peak_bandwidth_gb_per_s(None) is None


def test_decode_roofline_math_and_absence():
    from runners.measure.roofline import decode_roofline

    # 1000 MiB of weights read once per 1 ms step = 1048.6 GB/s; on an H100 SXM (3350 GB/s) that is 31.3%.
    metrics, absent = decode_roofline(1000.0, 1.0, "NVIDIA H100 80GB HBM3")
    assert metrics["decode_weight_bandwidth_gb_per_s"] == pytest.approx(1048.6, abs=0.1)
    assert metrics["decode_weight_bandwidth_of_peak_pct"] == pytest.approx(31.3, abs=0.1)
    assert not absent
    metrics, absent = decode_roofline(None, 1.0, "NVIDIA H100 80GB HBM3")
    assert not metrics and "weight size" in absent["decode_weight_bandwidth_gb_per_s"]
    metrics, absent = decode_roofline(1000.0, 1.0, "Unknown GPU")
    assert "decode_weight_bandwidth_gb_per_s" in metrics and "not in quantbench's table" in absent[
        "decode_weight_bandwidth_of_peak_pct"]


def test_energy_meter_is_absent_on_cpu():
    from runners.measure.energy import EnergyMeter

    meter = EnergyMeter("cpu")
    meter.start()
    assert meter.stop() is None and "GPU-only" in meter.reason


def test_memory_watcher_does_not_slow_the_run_it_watches(monkeypatch):
    """Listing the process tree scans all of /proc; on every 10 ms tick it held the GIL for ~30% of a
    CPU decode loop. The tree is listed about once a second; each tick only reads known processes."""
    import subprocess
    import sys
    import time

    import psutil

    from runners.measure.memory import MemoryWatcher

    listed = []
    real_children = psutil.Process.children
    monkeypatch.setattr(psutil.Process, "children", lambda self, **kw: listed.append(1) or real_children(self, **kw))
    child = subprocess.Popen([sys.executable, "-c", "b = bytearray(300 * 2**20); import time; time.sleep(3)"])
    try:
        time.sleep(1.0)  # the child has allocated its 300 MiB
        with MemoryWatcher("cpu") as watch:
            time.sleep(1.5)
    finally:
        child.kill()
    assert 1 <= len(listed) <= 4, len(listed)  # was one per 10 ms tick: ~150
    me = psutil.Process().memory_info().rss / 2**20
    assert watch.peaks.values_mib["peak_rss_mib"] > me + 250  # the child is still counted


def test_source_trees_equal_git_tree_ids(tmp_path):
    """The record's tree ids are what git itself computes for the same files, so a commit can be found
    from them even when the host's .git is stale; a changed byte or exec bit changes them."""
    import shutil
    import subprocess

    from runners.measure.env import source_trees

    if shutil.which("git") is None:
        pytest.skip("git not installed")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "runners" / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "runners" / "a.py").write_text("x = 1\n")
    (tmp_path / "runners" / "sub" / "b.yaml").write_text("k: v\n")
    (tmp_path / "runners" / "sub" / "deeper" / "c.txt").write_bytes(b"\x00\x01")
    (tmp_path / "runners" / "sub-x.py").write_text("")  # sorts between "sub/" and "sub.py" the git way
    (tmp_path / "runners" / "sub.py").write_text("")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "scripts" / "run.sh").chmod(0o755)
    (tmp_path / "backends" / "__pycache__").mkdir(parents=True)  # ignored bytes only: no tree
    (tmp_path / "backends" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"junk")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "pyproject.toml", "runners", "scripts"], check=True)
    subprocess.run([*git, "commit", "-qm", "t"], check=True)

    trees = source_trees(tmp_path)
    assert set(trees) == {"runners", "scripts"}
    for name, tree in trees.items():
        want = subprocess.run([*git, "rev-parse", f"HEAD:{name}"], capture_output=True, text=True, check=True)
        assert tree == want.stdout.strip(), name

    before = trees["scripts"]
    (tmp_path / "scripts" / "run.sh").chmod(0o644)
    assert source_trees(tmp_path)["scripts"] != before
    (tmp_path / "runners" / "a.py").write_text("x = 2\n")
    assert source_trees(tmp_path)["runners"] != trees["runners"]
    assert source_trees(tmp_path / "runners") == {}  # not a checkout root


def test_one_nvml_door_maps_cuda_visible_devices_for_runner_and_engines(monkeypatch):
    """NVML numbers GPUs physically: GPU 2 leased as CUDA_VISIBLE_DEVICES=2 must be read as NVML's 2,
    by the measurements, the launcher and the vLLM capability check alike."""
    import types

    from backends.vllm.hardware import gpu_capability
    from runners.launch.gpus import visible_gpus

    gpus = {0: ("A", (8, 0)), 1: ("B", (8, 6)), 2: ("C", (9, 0))}
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: 3,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetHandleByUUID=lambda u: {"GPU-c": 2}[u],
        nvmlDeviceGetName=lambda h: gpus[h][0].encode(),
        nvmlDeviceGetCudaComputeCapability=lambda h: gpus[h][1])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert gpu_capability() == ((9, 0), "C")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-c,0")
    assert gpu_capability() == ((9, 0), "C") and visible_gpus() == ["GPU-c", "0"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu_capability() == ((8, 0), "A") and visible_gpus() == ["0", "1", "2"]
