from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from backends.contract import builder_lock

from .readme_use import shared_use_runs

ROOT = Path(__file__).resolve().parents[1]
TEST_CONF = ROOT / "tests" / "conf"
# Small enough that a CPU run of the tiny model takes seconds.
FAST_BASE = ["model=tiny", "workload.warmup=1", "workload.repeats=2"]
FAST = [*FAST_BASE, "workload.prompt_tokens=8", "workload.new_tokens=4"]

# Parallel workers (pytest-xdist `-n N`) share the cores: each worker's runs get their share as torch's
# intra-op threads (inherited by every quantbench process a test starts). Two workers each running
# 2-thread torch on 2 cores oversubscribe them, and OpenMP's spinning threads then burn the other
# worker's time: the MiniLM test beside one busy process took 166 s with 2 threads, 74 s with 1. A
# thread count the caller set is kept.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    _share = max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))


# Measured seconds of the longest tests on a 2-core runner (tests/durations.py rewrites the file).
DURATIONS: dict[str, float] = json.loads((ROOT / "tests" / "durations.json").read_text())


def pytest_collection_modifyitems(items):
    # Longest first: the end-to-end runs on real models, then the other tests by their measured time (a
    # stable sort keeps every other order). Under `-n 2 --dist loadgroup` each worker takes the next test
    # (or xdist group) when it is free, so the long ones start early and no worker ends the session alone
    # with one. The tests of an xdist group keep their file order: they run in it, on one worker.
    def known(item) -> float:
        if item.get_closest_marker("xdist_group"):
            return 0.0
        return DURATIONS.get(item.nodeid.split("@")[0], 0.0)

    items.sort(key=lambda item: (item.get_closest_marker("slow") is None, -known(item)))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache per test session (or the caller's QUANTBENCH_CACHE, so CI can keep conversions).

    Parallel workers (pytest-xdist `-n`) share it: each entry is built once under its builder lock,
    so the SmolLM2 export or the MiniLM head is never paid twice in one session."""
    given = os.environ.get("QUANTBENCH_CACHE")
    if given:
        return Path(given)
    base = tmp_path_factory.getbasetemp()
    path = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "qb-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(cache_dir, monkeypatch):
    monkeypatch.setenv("QUANTBENCH_CACHE", str(cache_dir))


def session_folder(tmp_path_factory, name: str) -> Path:
    """`name` in the folder that every parallel worker (pytest-xdist) of this session shares."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name


def built_once(folder: Path, build: Callable[[Path], object]) -> Path:
    """`folder`, made by `build(folder)` once per session by whichever worker asks first (under a file
    lock: the others wait, then take it). Tests that change what they get copy it first."""
    done = folder.with_name(folder.name + ".done")
    with builder_lock(folder):
        if not done.exists():
            if folder.exists():  # a build that failed half-way
                shutil.rmtree(folder)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def readme_use(tmp_path_factory, cache_dir) -> dict:
    """The README's `Use` commands, run once per session in a fresh clone (tests/readme_use.py); the
    workers share the run the way they share `cache_dir`."""
    return shared_use_runs(session_folder(tmp_path_factory, "readme-use"), cache_dir)


def bench(*args: str, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m runners.bench ARGS` as a user would, with the test configs on the search path."""
    flags = [a for a in args if a.startswith("-")]  # argparse wants -m before the overrides
    overrides = [a for a in args if not a.startswith("-")]
    cmd = [sys.executable, "-m", "runners.bench", *flags, f"hydra.searchpath=[file://{TEST_CONF}]", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, HYDRA_FULL_ERROR="0"))
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nSTDOUT\n{proc.stdout[-4000:]}\nSTDERR\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture
def fake_vllm(monkeypatch):
    """A stand-in `vllm` module whose SamplingParams is the dict of what it was given (no vLLM on CPU CI)."""
    import types

    mod = types.ModuleType("vllm")
    mod.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", mod)
    return mod


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({out.stderr.strip()}): needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)
