"""scripts/gpu_campaign.sh without a GPU: its phase list, and its budget guard (a cell that cannot
finish inside the device call is not started, so no device time is spent on a run cut half-way)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _campaign(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    # Installed wheel-set folders, as the setup phases leave them on the device (empty: nothing runs here).
    for site in ("site_vllm", "site_tf", "site_ort", "site_core"):
        (tmp_path / site).mkdir(exist_ok=True)
    base = {"RESULTS": str(tmp_path / "results" / "h200"), "QUANTBENCH_CACHE": str(tmp_path / "cache"),
            "SITE_PREFIX": str(tmp_path / "site"), "PYTHON": sys.executable}
    return subprocess.run(["bash", "scripts/gpu_campaign.sh", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **base, **env})


def test_unknown_phase_names_every_phase(tmp_path):
    proc = _campaign(tmp_path, "nosuch")
    assert proc.returncode == 2
    assert "unknown phase 'nosuch'" in proc.stderr
    for phase in ("probe", "chunk", "carry", "unpack", "vllm-setup", "h200", "tf-setup", "ort-setup", "ort", "ct-vllm",
                  "claim1", "claim3", "claim4", "headline", "serve", "serve-xcheck"):
        assert phase in proc.stderr.split("phases:")[1]


def test_cells_that_cannot_finish_in_the_call_are_not_started(tmp_path):
    proc = _campaign(tmp_path, "claim4", "headline", "tiny", CLAIM4_MODELS="tiny smollm2-135m",
                     CLAIM4_NEEDS_S="100000", HEADLINE_NEEDS_S="100000", HEADLINE_TF_NEEDS_S="100000",
                     HEADLINE_BACKENDS="fp16 vllm_fp16")
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("not started") == 4
    assert "run claim4 again" in proc.stderr and "run headline tiny again" in proc.stderr
    assert not list((tmp_path / "results").rglob("record.json"))


def test_fidelity_that_cannot_finish_in_the_call_is_not_started(tmp_path):
    proc = _campaign(tmp_path, "fidelity", "awq", FIDELITY_NEEDS_S="100000")
    assert proc.returncode == 3, proc.stderr
    assert "fidelity awq: not started" in proc.stderr and "run fidelity awq again" in proc.stderr
    assert not (tmp_path / "results" / "h200" / "fidelity_awq_qwen2.5-32b.json").exists()


def test_headline_skips_ok_records_and_gives_each_engine_its_own_time_need(tmp_path):
    done = tmp_path / "results" / "h200" / "headline" / "tiny" / "backend=fp16,model=tiny,x"
    done.mkdir(parents=True)
    (done / "record.json").write_text('{"backend": "fp16", "status": "ok"}')
    failed = done.parent / "backend=bnb_int8,model=tiny,x"
    failed.mkdir()
    (failed / "record.json").write_text('{"backend": "bnb_int8", "status": "crash"}')
    proc = _campaign(tmp_path, "headline", "tiny", HEADLINE_BACKENDS="fp16 vllm_fp16 bnb_int8",
                     HEADLINE_NEEDS_S="100000", HEADLINE_TF_NEEDS_S="99999")
    assert proc.returncode == 3, proc.stderr
    assert "headline tiny fp16: already ok, skipped" in proc.stderr
    # vLLM's start is the longer need; a record that is not ok is run again, not skipped.
    assert "headline tiny vllm_fp16: not started" in proc.stderr and "(needs 100000s)" in proc.stderr
    assert "headline tiny bnb_int8: not started" in proc.stderr and "(needs 99999s)" in proc.stderr
    assert proc.stderr.count("not started") == 2


def test_headline_names_a_backend_that_does_not_exist(tmp_path):
    proc = _campaign(tmp_path, "headline", "tiny", HEADLINE_BACKENDS="nosuch")
    assert proc.returncode == 2
    assert "headline: no backend 'nosuch' in conf/backend" in proc.stderr


def test_headline_model_can_name_its_own_backends(tmp_path):
    proc = _campaign(tmp_path, "headline", "tiny:fp16,bnb_nf4", "headline", "smollm2-135m",
                     HEADLINE_BACKENDS="vllm_fp16", HEADLINE_NEEDS_S="100000", HEADLINE_TF_NEEDS_S="100000")
    assert proc.returncode == 3, proc.stderr
    started = [line.split(": not started")[0].split("] ")[-1] for line in proc.stderr.splitlines()
               if "not started" in line]
    assert started == ["headline tiny fp16", "headline tiny bnb_nf4", "headline smollm2-135m vllm_fp16"]


def test_headline_skips_what_is_committed_unless_told_not_to(tmp_path):
    committed = tmp_path / "committed"
    rec = committed / "headline" / "tiny" / "backend=awq,model=tiny,x" / "record.json"
    rec.parent.mkdir(parents=True)
    rec.write_text('{"backend": "awq", "status": "ok"}')
    proc = _campaign(tmp_path, "headline", "tiny:awq", COMMITTED=str(committed), HEADLINE_NEEDS_S="100000")
    assert proc.returncode == 0 and "headline tiny awq: already ok, skipped" in proc.stderr, proc.stderr
    again = _campaign(tmp_path, "headline", "tiny:awq", COMMITTED=str(tmp_path / "none"), HEADLINE_NEEDS_S="100000")
    assert again.returncode == 3 and "headline tiny awq: not started" in again.stderr


def test_a_bare_machine_is_named_once_not_met_by_every_run_failing(tmp_path):
    # A machine lost between calls comes back without the wheel sets: the phase says so and runs nothing.
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here: the phase may run without the wheel set")
    proc = _campaign(tmp_path, "headline", "tiny:fp16,vllm_fp16", SITE_PREFIX=str(tmp_path / "gone"),
                     HEADLINE_NEEDS_S="0", HEADLINE_TF_NEEDS_S="0")
    assert proc.returncode == 2, proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if "no " in x and "importable" in x]
    assert "gone_vllm" in line and "run the setup phase first" in line
    assert "sweep" not in proc.stderr and not list((tmp_path / "results").rglob("record.json"))


def test_ort_phase_runs_only_the_sweep_it_is_given(tmp_path):
    # A later call re-runs one table (issue 22 re-measured generate after a fix) without the other.
    proc = _campaign(tmp_path, "ort", "generate", ORT_BACKENDS="nosuch_backend")
    assert "sweep ort_generate" in proc.stderr and "sweep ort_classify" not in proc.stderr
    assert "backend=nosuch_backend" in proc.stderr


def test_ct_vllm_points_each_carried_checkpoint_at_its_backend_key(tmp_path):
    (tmp_path / "site_realdata").mkdir()
    carried = tmp_path / "carried"
    proc = _campaign(tmp_path, "ct-vllm", CARRY_DEST=str(carried))
    assert proc.returncode == 2 and "no checkpoint folder under" in proc.stderr
    (carried / "ct_gptq_w4a16").mkdir(parents=True)
    (carried / "ct_gptq_w4a16" / "config.json").write_text("{}")
    (carried / "notes").mkdir()  # not a checkpoint (no config.json): not passed on
    proc = _campaign(tmp_path, "ct-vllm", CARRY_DEST=str(carried), CT_BACKENDS="nosuch_backend")
    assert f"+model.checkpoints.ct_gptq_w4a16={carried / 'ct_gptq_w4a16'}" in proc.stderr
    assert "model.checkpoints.notes" not in proc.stderr and "backend=nosuch_backend" in proc.stderr


@pytest.mark.parametrize("sets, targets", [("[vllm]=x", "vllm"), ("[vllm]=x [realdata]=y", "vllm realdata")])
def test_vllm_setup_installs_realdata_when_the_wheel_set_has_it(tmp_path, sets, targets):
    wh = tmp_path / "wh" / "01"
    wh.mkdir(parents=True)
    (wh / "install.sh").write_text(f'# declare -A TARGET_SETS=({sets})\necho "install targets: ${{*:2}}"\n')
    proc = _campaign(tmp_path, "vllm-setup", WH=str(tmp_path / "wh"))
    assert f"install targets: {targets}\n" in proc.stdout


def test_serve_skips_ok_records_by_their_backend_and_gates_each_engine_by_its_time(tmp_path):
    tok = tmp_path / "tok"
    tok.mkdir()
    # Sweep folders named by hydra start with whatever override sorts first, not always the backend.
    done = tmp_path / "results" / "h200" / "serve_tiny" / "++model.tokenizer=_t,backend=vllm_fp16,x"
    done.mkdir(parents=True)
    (done / "record.json").write_text('{"backend": "vllm_fp16", "status": "ok"}')
    proc = _campaign(tmp_path, "serve", "vllm_fp16,fp8,bnb_int8", "serve-xcheck", "fp8", "16", SERVE_MODEL="tiny",
                     SERVE_TOKENIZER=str(tok), SERVE_NEEDS_S="100000", SERVE_TF_NEEDS_S="99999")
    assert proc.returncode == 2, proc.stderr  # the last phase's: the cross-check has no record to check
    assert "serve vllm_fp16: already ok, skipped" in proc.stderr
    assert "serve fp8: not started" in proc.stderr and "(needs 100000s)" in proc.stderr
    assert "serve bnb_int8: not started" in proc.stderr and "(needs 99999s)" in proc.stderr
    assert "serve-xcheck: no fp8 record under" in proc.stderr
    assert not list((tmp_path / "results").rglob("record.json"))[1:]


def test_serve_without_a_tokenizer_says_what_to_carry(tmp_path):
    proc = _campaign(tmp_path, "serve", "vllm", SERVE_TOKENIZER=str(tmp_path / "none"))
    if (ROOT / ".wheelhouse" / "tok" / "qwen2" / "tokenizer.json").exists():
        pytest.skip("this checkout carries the tokenizer")
    assert proc.returncode == 2 and "no tokenizer at" in proc.stderr and ".wheelhouse/tok/qwen2" in proc.stderr
