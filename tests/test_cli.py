"""The command line behaves: the console script from any folder, every Hydra flag form, a real --help,
and a console that carries progress and results, not library chatter."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from runners.plan.cli import split_argv

from .conftest import FAST, ROOT, bench

QUANTBENCH = shutil.which("quantbench")
needs_script = pytest.mark.skipif(QUANTBENCH is None, reason="the quantbench console script is not installed "
                                                              "(pip install -e .)")


@pytest.mark.parametrize("argv, flags, overrides", [
    (["--cfg", "job", "--resolve", "backend=fp16"], ["--cfg", "job", "--resolve"], ["backend=fp16"]),
    (["-c", "job", "-p", "workload"], ["-c", "job", "-p", "workload"], []),
    (["--info"], ["--info"], []),
    (["--info", "searchpath", "model=tiny"], ["--info", "searchpath"], ["model=tiny"]),
    (["-m", "backend=fp32,fp16", "--cfg=job"], ["-m", "--cfg=job"], ["backend=fp32,fp16"]),
    (["+backend.options.x=1", "~report.html"], [], ["+backend.options.x=1", "~report.html"]),
])
def test_flags_keep_their_values(argv, flags, overrides):
    assert split_argv(argv) == (flags, overrides)


@needs_script
@pytest.mark.parametrize("args, expect", [
    (["--cfg", "job", "--resolve"], "engine: transformers"),
    (["--cfg", "job", "--package", "workload"], "# @package workload"),
    (["-c", "job", "-p", "workload"], "prompt_tokens: 128"),
    (["--info"], "Installed Hydra Plugins"),
    (["--info", "searchpath"], "Config search path"),
])
def test_console_script_from_another_folder_takes_every_flag_form(tmp_path, args, expect):
    proc = subprocess.run([QUANTBENCH, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert expect in proc.stdout


@needs_script
def test_help_opens_with_a_description_and_examples(tmp_path):
    proc = subprocess.run([QUANTBENCH, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    head = proc.stdout.splitlines()
    assert head[0].startswith("quantbench: which quantization backend should I deploy this model on")
    examples = [ln for ln in head if ln.strip().startswith(("quantbench ", "python -m runners.report"))]
    assert len(examples) >= 3 and any(" -m " in ln for ln in examples)
    assert "backend: awq" in proc.stdout and "Exit codes" in proc.stdout


@needs_script
def test_console_script_runs_a_cell_from_another_folder(tmp_path):
    proc = subprocess.run([QUANTBENCH, *FAST, "weights=synthetic", "workload.batch_sizes=[1]", "report.html=false",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run" / "record.json").exists()


def test_console_shows_progress_and_results_but_not_library_chatter(tmp_path):
    proc = bench("backend=bnb_int8", *FAST, "weights=synthetic", "workload.batch_sizes=[1]",
                 f"hydra.run.dir={tmp_path}", check=True)
    log = (tmp_path / "run.log").read_text()
    # bitsandbytes on CPU warns about its optional `kernels` package at every run: run.log keeps it.
    chatter = [ln for ln in log.splitlines() if " WARNING " in ln and "[quantbench]" not in ln]
    assert chatter, "expected some library chatter in run.log on this machine"
    for line in chatter:
        assert line.split(" WARNING ", 1)[1][:60] not in proc.stderr
    assert "bnb_int8 batch 1: ok" in proc.stderr and "[quantbench] bnb_int8: ok" in proc.stderr
    assert f"report: {tmp_path / 'report.html'}" in proc.stdout


def test_python_m_and_console_script_entry_are_the_same_function():
    out = subprocess.run([sys.executable, "-c", "import importlib.metadata as md; "
                          "print([e.value for e in md.entry_points(group='console_scripts') if e.name=='quantbench'])"],
                         cwd=ROOT, capture_output=True, text=True)
    assert "runners.bench:main" in out.stdout
