"""Inputs are checked before any model loads, with one readable line naming the valid choices."""
from __future__ import annotations


import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from backends import engine_names
from runners.plan.config import RunConfig
from backends.contract import ConfigError

from .conftest import ROOT, bench

CONF = ROOT / "conf"


def compose_run(*overrides: str) -> RunConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
        choice = cfg.hydra.runtime.choices["backend"]
        data = OmegaConf.to_container(cfg, resolve=False)
        data.pop("hydra")
        return RunConfig.from_dict(data, choice)


@pytest.mark.parametrize("backend", sorted(p.stem for p in (CONF / "backend").glob("*.yaml")))
def test_every_backend_yaml_builds(backend):
    run = compose_run(f"backend={backend}", "model=tiny")
    assert run.backend.name == backend
    assert run.backend.engine in engine_names()


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_every_model_yaml_builds(model):
    run = compose_run(f"model={model}")
    assert run.model.architecture["model_type"]
    assert run.weights in ("pretrained", "synthetic")


def test_qwen32b_is_an_alias_of_qwen25_32b():
    assert compose_run("model=qwen32b").model == compose_run("model=qwen2.5-32b").model
    assert compose_run("model=qwen32b").model.name == "qwen2.5-32b"


def test_weights_auto_uses_real_weights_only_where_local():
    assert compose_run("model=smollm2-135m").weights == "pretrained"
    assert compose_run("model=qwen2.5-0.5b").weights == "synthetic"
    assert compose_run("model=qwen2.5-0.5b", "weights=pretrained").weights == "pretrained"


@pytest.mark.parametrize("override, message", [
    ("+backend.options.dtpye=float16", "unknown key backend.options.dtpye; valid keys: attn_implementation"),
    ("backend.options.dtype=float8", "'float8' is not valid; choose one of 'float32', 'float16', 'bfloat16'"),
    ("workload.batch_sizes=[1,0]", "workload.batch_sizes[1]: must be > 0, got 0"),
    ("workload.batch_sizes=[]", "workload.batch_sizes: give at least one batch size"),
    ("workload.new_tokens=-3", "workload.new_tokens: must be > 0, got -3"),
    ("workload.repeats=0", "workload.repeats: must be > 0"),
    ("weights=random", "weights: 'random' is not valid; choose one of 'auto', 'pretrained', 'synthetic'"),
    ("device=tpu", "'tpu' is not valid; choose one of 'auto', 'cpu', 'cuda'"),
    ("+colour=blue", "unknown key(s) colour; valid top-level keys"),
    ("backend.engine=tensorrt", "unknown engine 'tensorrt'; valid engines: "),
    ("backend.options.llm_int8_threshold=-1", "must be >= 0"),
    ("timeout_s=0", "timeout_s: must be a positive number of seconds, got 0"),
        ("timeout_s=nan", "timeout_s: must be a positive number of seconds, got nan"),
])
def test_bad_values_give_one_clear_line(override, message):
    base = ["backend=bnb_int8"] if "llm_int8" in override else []
    with pytest.raises(ConfigError) as err:
        compose_run(*base, override)
    assert message in str(err.value)


def test_safe_defaults():
    run = compose_run()
    assert run.model.trust_remote_code is False
    assert run.model.allow_pickle is False


def test_bad_value_on_the_command_line_is_one_line_no_traceback(tmp_path):
    proc = bench("model=tiny", "workload.batch_sizes=[0]", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert "error: workload.batch_sizes[0]: must be > 0, got 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_is_fast():
    import subprocess
    import sys
    import time

    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "runners.bench", "--help"], cwd=ROOT, check=True, capture_output=True)
    # 1.6 s on an idle 2-core VM; the bound leaves room for the other pytest worker on the same cores.
    assert time.perf_counter() - t < 3.0


def test_backend_yamls_name_only_known_keys():
    for path in (CONF / "backend").glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        assert set(data) <= {"engine", "description", "options", "expect"}, path


# -- the command line, checked before Hydra composes ----------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["backend=int3"], "unknown backend 'int3'; valid backends: "),
    (["-m", "backend=fp32,int3"], "unknown backend 'int3'"),
    (["model=gpt5"], "unknown model 'gpt5'; valid models: "),
    (["workload=chat"], "unknown workload 'chat'; valid workloads: classify, generate"),
    (["backend.options.dtyp=float16"], "unknown key backend.options.dtyp; valid keys: "),
    (["workload.batchsize=4"], "unknown key workload.batchsize; valid keys: batch_sizes"),
    (["foo=1"], "unknown key 'foo'; valid top-level keys: "),
])
def test_bad_command_line_gets_one_line_naming_valid_choices(args, message):
    from .conftest import bench

    proc = bench(*args, timeout=60)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_real_field_missing_from_yaml_is_added_not_rejected():
    from runners.plan.cli import check

    # smollm2's YAML has no `path` and classify.yaml no `prompt_tokens`: both are real fields.
    assert check(["model.path=/x"]) == ["++model.path=/x"]
    assert check(["workload=classify", "workload.prompt_tokens=8"])[1] == "++workload.prompt_tokens=8"
    assert check(["workload.repeats=3"]) == ["workload.repeats=3"]  # already in generate.yaml
    assert check(["backend=bnb_int8", "backend.options.llm_int8_threshold=5.0"])[1].lstrip("+") == \
        "backend.options.llm_int8_threshold=5.0"


def test_engine_options_checked_against_each_swept_backend():
    from runners.plan.cli import CliError, check

    with pytest.raises(CliError, match="gpu_memory_utilization"):
        check(["backend=fp32", "backend.options.gpu_memory_utilization=0.5"])  # a vLLM option on transformers
    assert check(["backend=vllm_fp16,awq", "backend.options.gpu_memory_utilization=0.5"])[1].endswith("=0.5")


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "qwen2.5-7b", "qwen2.5-32b", "qwen2.5-72b"])
def test_qwen_architectures_add_up_to_their_parameter_count(name):
    """Synthetic weights are built from these numbers: a wrong width would measure another model."""
    import yaml

    data = yaml.safe_load((ROOT / "conf" / "model" / f"{name}.yaml").read_text())
    a = data["architecture"]
    h, inter, layers, kv = a["hidden_size"], a["intermediate_size"], a["num_hidden_layers"], a["num_key_value_heads"]
    head = h // a["num_attention_heads"]
    attn = h * h * 2 + 2 * h * kv * head + h + 2 * kv * head  # q, o; k, v; q/k/v biases
    per_layer = attn + 3 * h * inter + 2 * h
    embed = a["vocab_size"] * h * (1 if a["tie_word_embeddings"] else 2)
    total_b = (embed + layers * per_layer + h) / 1e9
    assert abs(total_b - data["params_b"]) / data["params_b"] < 0.02, total_b
