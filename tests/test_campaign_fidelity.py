"""scripts/gpu_campaign.sh's fidelity phases (issue 33) without a GPU: `factors` and `fidelity-cli` call the
study scripts with the cell's exact arguments, refuse what is not a vLLM backend, and start nothing they
cannot finish inside the device call."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _campaign(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "site_vllm").mkdir(exist_ok=True)
    tok = tmp_path / "tok"
    tok.mkdir(exist_ok=True)
    # A stand-in interpreter: prints the command it was given, so the phase's arguments can be read back.
    fake = tmp_path / "py"
    fake.write_text('#!/bin/sh\necho "PY $*" >&2\n')
    fake.chmod(0o755)
    base = {"RESULTS": str(tmp_path / "results" / "h100"), "QUANTBENCH_CACHE": str(tmp_path / "cache"),
            "SITE_PREFIX": str(tmp_path / "site"), "PYTHON": str(fake), "SERVE_TOKENIZER": str(tok)}
    return subprocess.run(["bash", "scripts/gpu_campaign.sh", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **base, **env})


def _calls(proc: subprocess.CompletedProcess) -> list[list[str]]:
    return [line.split()[1:] for line in proc.stderr.splitlines() if line.startswith("PY ")]


def _arg(call: list[str], flag: str) -> str:
    return call[call.index(flag) + 1]


def test_factors_runs_one_study_per_backend_with_the_cells_arguments(tmp_path):
    proc = _campaign(tmp_path, "factors", "qwen2.5-7b:vllm_fp16,fp8", FACTOR_VARIANTS="bare,quantbench",
                     FACTOR_ROUNDS="6")
    assert proc.returncode == 0, proc.stderr
    calls = _calls(proc)
    assert [c[0] for c in calls] == ["scripts/vllm_factors.py"] * 2
    assert [_arg(c, "--backend") for c in calls] == ["vllm_fp16", "fp8"]
    first = calls[0]
    assert _arg(first, "--model") == "qwen2.5-7b" and _arg(first, "--rounds") == "6"
    assert _arg(first, "--variants") == "bare,quantbench" and _arg(first, "--num-prompts") == "64"
    assert (_arg(first, "--input-len"), _arg(first, "--output-len")) == ("512", "256")
    assert _arg(first, "--tokenizer") == str(tmp_path / "tok")
    assert _arg(first, "--out").endswith("results/h100/fidelity/factors_vllm_fp16_qwen2.5-7b.json")
    # The study's own budget ends before the call's: room for the stats-off passes and the engine's shutdown.
    assert 0 < int(_arg(first, "--budget-s")) < 580


def test_factors_without_variants_runs_all_and_fidelity_cli_matches_the_study_engine(tmp_path):
    proc = _campaign(tmp_path, "factors", "qwen2.5-0.5b:vllm_fp16", "fidelity-cli", "qwen2.5-7b:vllm_fp16")
    assert proc.returncode == 0, proc.stderr
    study, cli = _calls(proc)
    assert "--variants" not in study
    assert cli[0] == "scripts/vllm_fidelity.py" and _arg(cli, "--max-model-len") == "800"
    assert _arg(cli, "--out").endswith("fidelity/cli_vllm_fp16_qwen2.5-7b.json")


def test_fidelity_phases_refuse_what_they_cannot_study(tmp_path):
    proc = _campaign(tmp_path, "factors", "qwen2.5-7b:fp16")
    assert proc.returncode == 2 and "'fp16' is not a vLLM backend" in proc.stderr and not _calls(proc)
    proc = _campaign(tmp_path, "factors", "nosuchmodel:vllm_fp16")
    assert proc.returncode == 2 and "no model 'nosuchmodel'" in proc.stderr and not _calls(proc)
    proc = _campaign(tmp_path, "fidelity-cli", "qwen2.5-7b:awq", FIDELITY_CLI_NEEDS_S="100000")
    assert proc.returncode == 3 and "run fidelity-cli qwen2.5-7b:awq again" in proc.stderr and not _calls(proc)
    proc = _campaign(tmp_path, "factors", "qwen2.5-7b:awq", FACTORS_NEEDS_S="100000")
    assert proc.returncode == 3 and "run factors qwen2.5-7b:awq again" in proc.stderr and not _calls(proc)
