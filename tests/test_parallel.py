"""Parallel sweeps: cells never share a GPU, a parallel sweep still ends in one table with every row."""
from __future__ import annotations

import importlib.util
import multiprocessing as mp
import time

import pytest

from runners.launch import gpus
from runners.record.store import find_records

from .conftest import FAST, bench


def _hold(gpu_list, needed, hold_s, out, lease_dir):
    import os

    os.environ["QUANTBENCH_GPU_LEASES"] = lease_dir
    with gpus.acquire(needed, gpu_list, timeout_s=60, label="cell") as lease:
        start = time.monotonic()
        time.sleep(hold_s)
        out.put((tuple(lease.gpus), start, time.monotonic()))


def test_cells_never_share_a_gpu(tmp_path):
    out = mp.get_context("spawn").Queue()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_hold, args=(["0", "1", "2"], n, 0.8, out, str(tmp_path)))
             for n in (1, 1, 2, 1, 3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    spans = [out.get(timeout=5) for _ in procs]
    assert sorted(len(g) for g, _, _ in spans) == [1, 1, 1, 2, 3]
    for i, (ga, sa, ea) in enumerate(spans):
        for gb, sb, eb in spans[i + 1:]:
            if set(ga) & set(gb):
                assert ea <= sb or eb <= sa, (ga, gb)  # overlapping in time: never on the same GPU


def test_a_cell_needing_more_gpus_than_the_host_has_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTBENCH_GPU_LEASES", str(tmp_path))
    with pytest.raises(RuntimeError, match="needs 4 GPU\\(s\\); this host shows 2 \\(0, 1\\)"):
        gpus.acquire(4, ["0", "1"])
    with gpus.acquire(2, ["0", "1"]):
        with pytest.raises(TimeoutError, match="no 1 free GPU"):
            gpus.acquire(1, ["0", "1"], timeout_s=0.1)
    with gpus.acquire(1, ["0", "1"]) as lease:  # released: free again
        assert lease.env() == {"CUDA_VISIBLE_DEVICES": "0"}


def _has_joblib_launcher() -> bool:
    try:  # find_spec of a submodule raises when the hydra_plugins namespace itself is absent
        return importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.skipif(not _has_joblib_launcher(),
                    reason="hydra-joblib-launcher is not installed (pip install 'quantbench[parallel]')")
def test_parallel_sweep_merges_into_one_table_with_the_failed_row(tmp_path):
    proc = bench("-m", "hydra/launcher=gpus", "hydra.launcher.n_jobs=2", "backend=fault_none,fault_segfault,fp32",
                 *FAST, "workload.batch_sizes=[1]", "report.html=false", f"hydra.sweep.dir={tmp_path}", timeout=600)
    assert proc.returncode == 1  # one cell crashed, so the sweep is not ok
    assert "runs cells at the same time on this machine's device" in proc.stderr
    recs = {r.backend: r for r in find_records(tmp_path)}
    assert set(recs) == {"fault_none", "fault_segfault", "fp32"}
    assert recs["fault_segfault"].status == "crash" and recs["fp32"].status == "ok"
    table = (tmp_path / "table.md").read_text()
    assert "| | fault_none | fault_segfault | fp32 |" in table and "crash: worker killed by SIGSEGV" in table
