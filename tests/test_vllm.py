"""vLLM engine: option mapping, synthetic quantization configs, validation, log parsing, timing and
log-prob plumbing. Everything but the last test runs without vllm, torch or a GPU; the last one loads
a tiny dummy-weight model on a CUDA GPU when vllm is installed (skipped otherwise)."""
from __future__ import annotations

import ast
import importlib.util
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from backends import engine_class
from backends.vllm import args as A
from backends.vllm import cli as CLI
from backends.vllm import engine as E
from backends.vllm import hardware as H
from backends.vllm import introspect as I
from backends.vllm import logs as L
from backends.vllm import options as O
from backends.vllm import outputs as OUT
from backends.contract import EngineContext, RunFailure
from runners.evaldata import BbcTexts
from runners.plan.config import RunConfig, WorkloadSpec
from backends.contract import HostClock, StepTimer
from backends.contract import ConfigError
from runners.plan.strict import build

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
VLLM_YAMLS = sorted(p for p in (CONF / "backend").glob("*.yaml")
                    if yaml.safe_load(p.read_text()).get("engine") == "vllm")

TINY_ARCH = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 2048, "max_position_embeddings": 2048,
             "tie_word_embeddings": False}


def _yaml(name: str) -> dict:
    return yaml.safe_load((CONF / "backend" / f"{name}.yaml").read_text())


def _model(name: str) -> dict:
    return yaml.safe_load((CONF / "model" / f"{name}.yaml").read_text())


def _run(backend: dict | str, model: dict | str = "llama-3.1-8b", weights: str = "synthetic",
         workload: dict | None = None, backend_name: str | None = None) -> RunConfig:
    if isinstance(backend, str):
        backend_name = backend_name or backend
        backend = _yaml(backend)
    model = _model(model) if isinstance(model, str) else model
    workload = workload or {"kind": "generate", "batch_sizes": [8], "prompt_tokens": 128, "new_tokens": 64}
    return RunConfig.from_dict({"backend": backend, "model": model, "workload": workload, "weights": weights,
                                "device": "cuda"}, backend_name or "test")


class FakeFiles:
    """ModelFiles stand-in: records what the engine asked to materialise."""

    def __init__(self, tokenizer: str | None = None):
        self.extras: list = []
        self.folders = 0
        self.tokenizer = tokenizer

    def config_folder(self, extra=None):
        self.extras.append(extra)
        return Path("/cache/configs/abc")

    def folder(self):
        self.folders += 1
        return "/cache/synthetic/def"

    def tokenizer_source(self):
        return self.tokenizer


def _ctx(run: RunConfig, files: FakeFiles | None = None, device: str = "cuda") -> EngineContext:
    """What the runner hands the engine: the run's view, as the planner builds it."""
    return EngineContext(run=run.engine_view(device), files=files or FakeFiles(), texts=BbcTexts(),
                         cache_dir=Path("/cache"))


# -- registry and YAMLs ---------------------------------------------------------------------------
PACKAGE = ROOT / "backends" / "vllm"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def test_engine_is_registered_and_light():
    assert engine_class("vllm") is E.VllmEngine and E.ENGINE is E.VllmEngine
    assert E.VllmEngine.devices == ("cuda",) and E.VllmEngine.requires == ("vllm",) and E.VllmEngine.extra == "vllm"
    assert {"vllm", "torch", "transformers", "compressed-tensors", "bitsandbytes"} <= set(E.VllmEngine.packages)
    # Importing every module of the package (as the runner and vLLM's worker do) pulls in no heavy package.
    code = ("import sys, importlib, backends.vllm; "
            f"[importlib.import_module('backends.vllm.' + m) for m in {MODULES!r}]; "
            "print(sorted(m for m in ('vllm', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_package_split_by_job_uses_no_private_names_across_modules():
    assert {"options", "args", "cli", "logs", "outputs", "introspect", "hardware", "engine"} <= set(MODULES)
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("backends"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports private {private} from {node.module}"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.startswith("_") \
                    and node.value.id in MODULES:
                raise AssertionError(f"{path.name} uses {node.value.id}.{node.attr}")
        assert len(path.read_text().splitlines()) < 400, f"{path.name} is growing past one job"


def test_inspect_model_pickles_by_reference():
    # apply_model ships the function to vLLM's worker by reference: it must be a module-level name.
    assert pickle.loads(pickle.dumps(I.inspect_model)) is I.inspect_model
    assert I.inspect_model.__qualname__ == "inspect_model" and I.inspect_model.__module__ == "backends.vllm.introspect"


def test_log_capture_restores_environment(monkeypatch):
    monkeypatch.delenv("VLLM_LOGGING_CONFIG_PATH", raising=False)
    monkeypatch.delenv("VLLM_ALLOW_INSECURE_SERIALIZATION", raising=False)
    cap = L.LogCapture()
    cap.install()
    cap.set_env("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    cfg = Path(os.environ["VLLM_LOGGING_CONFIG_PATH"])
    config = __import__("json").loads(cfg.read_text())
    assert config["handlers"]["capture"]["filename"] == str(cap.path)
    cap.attach()  # vLLM not imported here: this process's "vllm" logger gets the file handler
    logging.getLogger("vllm.test").info("Available KV cache memory: 1.5 GiB")
    assert L.parse_vllm_log(cap.text())["kv_cache_gib"] == 1.5
    cap.close()
    assert "VLLM_LOGGING_CONFIG_PATH" not in os.environ and "VLLM_ALLOW_INSECURE_SERIALIZATION" not in os.environ
    assert not cap.dir.exists()
    assert not [h for h in logging.getLogger("vllm").handlers if isinstance(h, logging.FileHandler)]


def test_expected_yamls_exist():
    names = {p.stem for p in VLLM_YAMLS}
    assert {"vllm_fp16", "vllm_bf16", "awq", "awq_marlin", "awq_gemm", "gptq", "fp8", "vllm_bnb"} <= names


@pytest.mark.parametrize("path", VLLM_YAMLS, ids=lambda p: p.stem)
def test_every_yaml_builds_and_maps(path):
    data = yaml.safe_load(path.read_text())
    assert set(data) <= {"engine", "description", "options", "expect"} and data["description"]
    opts = build(O.Options, data.get("options"), "backend.options")
    run = _run(data, "llama-3.1-8b", backend_name=path.stem)
    files = FakeFiles()
    kw = A.llm_kwargs(opts, _ctx(run, files))
    assert kw["quantization"] == (None if opts.quantization == "none" else opts.quantization)
    assert kw["dtype"] == opts.dtype and kw["gpu_memory_utilization"] == opts.gpu_memory_utilization
    assert kw["max_model_len"] == max(128 + 64, run.quality.eval_tokens + 8)
    assert kw["skip_tokenizer_init"] is True and kw["disable_log_stats"] is False
    assert kw["enable_prefix_caching"] is False and kw["tensor_parallel_size"] == 1
    if opts.quantization == "bitsandbytes":
        assert "load_format" not in kw and kw["model"] == "/cache/synthetic/def" and files.folders == 1
    else:
        assert kw["load_format"] == "dummy" and kw["model"] == "/cache/configs/abc"
    if opts.linear_backend != "auto":
        assert kw["linear_backend"] == opts.linear_backend
    else:
        assert "linear_backend" not in kw


def test_yaml_specifics():
    assert build(O.Options, _yaml("fp8")["options"]).min_capability == 89
    assert build(O.Options, _yaml("awq")["options"]).quantization == "awq_marlin"
    assert build(O.Options, _yaml("awq_gemm")["options"]).linear_backend == "triton"
    assert build(O.Options, _yaml("gptq")["options"]).quantization == "gptq_marlin"
    assert build(O.Options, _yaml("vllm_bnb")["options"]).quantization == "bitsandbytes"
    assert build(O.Options, _yaml("vllm_bf16")["options"]).dtype == "bfloat16"


def test_throughput_workload_yaml():
    wl = build(WorkloadSpec, yaml.safe_load((CONF / "workload" / "throughput.yaml").read_text()), "workload")
    assert wl.kind == "generate" and wl.batch_sizes == [256] and wl.repeats >= 3 and wl.warmup >= 1


# -- synthetic quantization configs ---------------------------------------------------------------
def test_awq_synthetic_config_injected():
    files = FakeFiles()
    run = _run("awq", "llama-3.1-8b")
    kw = A.llm_kwargs(run.backend.options, _ctx(run, files))
    assert kw["load_format"] == "dummy"
    assert files.extras == [{"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128,
                                                     "zero_point": True, "version": "gemm",
                                                     "modules_to_not_convert": ["lm_head"]}}]


def test_gptq_synthetic_config_injected():
    files = FakeFiles()
    run = _run("gptq", "llama-3.1-8b")
    A.llm_kwargs(run.backend.options, _ctx(run, files))
    q = files.extras[0]["quantization_config"]
    assert q == {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True, "desc_act": False,
                 "lm_head": False, "checkpoint_format": "gptq",
                 "modules_in_block_to_quantize": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                  "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                                  "mlp.down_proj"]}


def test_gptq_synthetic_on_unknown_architecture_is_invalid():
    model = {**_model("tiny"), "architecture": {**_model("tiny")["architecture"], "model_type": "gpt2"}}
    with pytest.raises(ConfigError, match="modules_in_block_to_quantize"):
        _run("gptq", model)
    # A verbatim quantization_config is the way out, and awq needs no module names.
    _run({"engine": "vllm", "options": {"quantization": "gptq", "quantization_config": {"quant_method": "gptq"}}},
         model)
    _run("awq", model)


def test_group_size_falls_back_when_128_does_not_divide():
    # SmolLM2-135M: hidden 576 = 4.5 x 128.
    arch = _model("smollm2-135m")["architecture"]
    assert A.linear_input_sizes(arch) == [576, 576, 1536]
    q = A.synthetic_quantization_config(O.Options(quantization="awq"), arch)
    assert q["group_size"] == 64
    # Tensor parallelism splits o_proj/down_proj inputs: 14336 / 4 still divides 128.
    llama = _model("llama-3.1-8b")["architecture"]
    assert A.linear_input_sizes(llama, 4) == [4096, 1024, 3584]
    assert A.pick_group_size(A.linear_input_sizes(llama, 4)) == 128
    assert A.pick_group_size([100]) == -1
    assert A.synthetic_quantization_config(O.Options(quantization="gptq", group_size=32), llama)["group_size"] == 32


def test_no_injected_config_for_online_methods():
    for q in ("none", "fp8"):
        files = FakeFiles()
        run = _run({"engine": "vllm", "options": {"quantization": q}})
        A.llm_kwargs(run.backend.options, _ctx(run, files))
        assert files.extras == [None]


def test_explicit_quantization_config_is_used_verbatim():
    ct = {"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {}}
    files = FakeFiles()
    run = _run({"engine": "vllm", "options": {"quantization": "compressed-tensors", "quantization_config": ct}})
    A.llm_kwargs(run.backend.options, _ctx(run, files))
    assert files.extras == [{"quantization_config": ct}]


def test_pretrained_uses_listed_checkpoint_or_plain_weights():
    run = _run("awq", "llama-3.1-8b", weights="pretrained")
    kw = A.llm_kwargs(run.backend.options, _ctx(run))
    assert kw["model"] == "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4" and "load_format" not in kw
    run = _run("gptq", "qwen2.5-7b", weights="pretrained")
    assert A.llm_kwargs(run.backend.options, _ctx(run))["model"] == "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4"
    files = FakeFiles()
    run = _run("fp8", "llama-3.1-8b", weights="pretrained")  # online FP8 from the 16-bit weights
    kw = A.llm_kwargs(run.backend.options, _ctx(run, files))
    assert kw["model"] == "/cache/synthetic/def" and files.folders == 1 and kw["quantization"] == "fp8"


def test_other_options_reach_kwargs():
    opts = O.Options(dtype="bfloat16", max_model_len=4096, tensor_parallel_size=2, enforce_eager=True,
                     kv_cache_dtype="fp8", max_num_seqs=128, max_num_batched_tokens=8192, attention_backend="FLASHINFER",
                     score_top_k=50, detokenize=True, engine_args={"block_size": 32})
    run = _run({"engine": "vllm", "options": {}})
    kw = A.llm_kwargs(opts, _ctx(run))
    assert kw["max_model_len"] == 4096 and kw["tensor_parallel_size"] == 2 and kw["enforce_eager"] is True
    assert kw["kv_cache_dtype"] == "fp8" and kw["max_num_seqs"] == 128 and kw["max_num_batched_tokens"] == 8192
    assert kw["attention_backend"] == "FLASHINFER" and kw["max_logprobs"] == 50 and kw["block_size"] == 32
    assert kw["skip_tokenizer_init"] is False


def test_kwargs_to_cli():
    args = CLI.kwargs_to_cli({"model": "/m", "quantization": None, "enforce_eager": False, "enable_prefix_caching": False,
                            "disable_log_stats": False, "load_format": "dummy", "gpu_memory_utilization": 0.9,
                            "hf_overrides": {"a": 1}})
    assert args == ["--model", "/m", "--no-enforce-eager", "--no-enable-prefix-caching", "--load-format", "dummy",
                    "--gpu-memory-utilization", "0.9", "--hf-overrides", '{"a": 1}']
    assert CLI.kwargs_to_cli({"disable_log_stats": True, "trust_remote_code": True}) == [
        "--disable-log-stats", "--trust-remote-code"]


# -- validation -----------------------------------------------------------------------------------
def test_bad_quantization_names_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        build(O.Options, {"quantization": "awq_gemm"}, "backend.options")
    msg = str(e.value)
    assert "backend.options.quantization" in msg and "'awq_gemm'" in msg
    for q in O.QUANTIZATIONS:
        assert repr(q) in msg


@pytest.mark.parametrize("options, needle", [
    ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
    ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
    ({"quantization": "awq", "bits": 8}, "4-bit"),
    ({"bits": 3}, "bits"),
    ({"group_size": 100}, "group_size"),
    ({"engine_args": {"model": "x"}}, "engine_args"),
    ({"linear_backend": "cublas"}, "linear_backend"),
    ({"dtype": "float32"}, "dtype"),
    ({"typo_option": 1}, "typo_option"),
])
def test_option_errors(options, needle):
    with pytest.raises(ConfigError, match=needle):
        build(O.Options, options, "backend.options")


def test_pretrained_quantized_without_checkpoint_is_invalid():
    with pytest.raises(ConfigError, match="lists no 'awq' checkpoint"):
        _run("awq", {**_model("tiny"), "path": "/somewhere"}, weights="pretrained")
    with pytest.raises(ConfigError, match="compressed-tensors"):
        _run({"engine": "vllm", "options": {"quantization": "compressed-tensors"}})


def test_classify_workload_is_invalid():
    with pytest.raises(ConfigError, match="vllm engine\\) cannot classify: it implements generate, score"):
        _run("vllm_fp16", "modernbert-base", workload={"kind": "classify", "batch_sizes": [1]})


def test_max_model_len_too_short_is_invalid():
    with pytest.raises(ConfigError, match="max_model_len"):
        _run({"engine": "vllm", "options": {"max_model_len": 100}})


# -- checks before loading ------------------------------------------------------------------------
def test_fp8_on_a100_is_unsupported_hardware():
    opts = build(O.Options, _yaml("fp8")["options"])
    failure = H.capability_failure(opts, (8, 0), "A100")
    assert failure.status == "unsupported_hardware"
    assert failure.reason == "fp8 needs compute capability >= 8.9, this GPU is 8.0 (A100)"
    assert H.capability_failure(opts, (9, 0), "H100") is None
    assert H.capability_failure(opts, (8, 9), "L4") is None
    assert H.capability_failure(O.Options(), (7, 0)) is None
    assert H.capability_failure(opts, None) is None


def test_check_without_vllm_is_missing_dependency(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    run = _run("vllm_fp16")
    failure = E.VllmEngine(run.backend.options, _ctx(run)).check()
    assert failure.status == "missing_dependency" and "quantbench[vllm]" in failure.reason


def test_check_bitsandbytes_needs_bitsandbytes(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if name == "vllm" else None if name == "bitsandbytes"
                                          else real(name, *a)))
    run = _run("vllm_bnb")
    failure = E.VllmEngine(run.backend.options, _ctx(run)).check()
    assert failure.status == "missing_dependency" and "bitsandbytes" in failure.reason


def test_check_cpu_and_capability(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    run = _run("fp8")
    failure = E.VllmEngine(run.backend.options, _ctx(run, device="cpu")).check()
    assert failure.status == "unsupported_hardware" and "cuda" in failure.reason
    ctx = _ctx(run)
    ctx.extra.update(compute_capability=(8, 0), gpu_name="NVIDIA A100-SXM4-80GB")
    failure = E.VllmEngine(run.backend.options, ctx).check()
    assert failure.status == "unsupported_hardware" and "this GPU is 8.0" in failure.reason
    ctx.extra.update(compute_capability=(9, 0), gpu_name="NVIDIA H100")
    assert E.VllmEngine(run.backend.options, ctx).check() is None


# -- vLLM log lines (formats from vLLM 0.26.0's logger calls) ------------------------------------
SAMPLE_LOG = """\
INFO 11-23 14:30:00 [cuda.py:483] Using FLASH_ATTN attention backend out of potential backends: ['FLASH_ATTN', 'FLASHINFER', 'TRITON_ATTN', 'FLEX_ATTENTION'].
(EngineCore_DP0 pid=4242) INFO 11-23 14:30:01 [auto_awq.py:473] Using MacheteLinearKernel for AutoAWQMarlinLinearMethod
(EngineCore_DP0 pid=4242) INFO 11-23 14:30:01 [auto_awq.py:473] Using MarlinLinearKernel for AutoAWQMarlinLinearMethod
4242 INFO vllm.model_executor.kernels.linear: Selected CutlassFP8ScaledMMLinearKernel for Fp8PerTensorOnlineLinearMethod
INFO 11-23 14:30:09 [gpu_model_runner.py:5348] Model loading took 5.37 GiB memory and 8.251340 seconds
INFO 11-23 14:30:21 [gpu_worker.py:561] Available KV cache memory: 62.31 GiB
INFO 11-23 14:30:21 [kv_cache_utils.py:2177] GPU KV cache size: 1,166,720 tokens
INFO 11-23 14:30:21 [kv_cache_utils.py:2179] Maximum concurrency for 1,280 tokens per request: 911.50x
INFO 11-23 14:30:30 [llm.py:400] Supported tasks: ['generate']
"""


def test_parse_vllm_log():
    f = L.parse_vllm_log(SAMPLE_LOG)
    assert f["attention_backend"] == "FLASH_ATTN"
    assert f["linear_kernels"] == {"AutoAWQMarlinLinearMethod": ["MacheteLinearKernel", "MarlinLinearKernel"],
                                   "Fp8PerTensorOnlineLinearMethod": ["CutlassFP8ScaledMMLinearKernel"]}
    assert f["model_load_gib"] == 5.37 and f["model_load_s"] == pytest.approx(8.25134)
    assert f["kv_cache_gib"] == 62.31 and f["kv_cache_tokens"] == 1_166_720 and f["max_concurrency"] == 911.5
    assert "fp8_weight_only_marlin" not in f and len(f["lines"]) == 8


def test_parse_vllm_log_variants():
    f = L.parse_vllm_log(
        "INFO [model_runner.py:306] Model loading took 0.12 GiB and 1.5 seconds\n"
        "INFO [cuda.py:422] Using AttentionBackendEnum.FLASHINFER backend.\n"
        "INFO Using MarlinFP8ScaledMMLinearKernel for something else\n"
        "WARNING [marlin_utils_fp8.py:112] Your GPU does not have native support for FP8 computation but FP8 "
        "quantization is being used. Weight-only FP8 compression will be used leveraging the Marlin kernel. This "
        "may degrade performance for compute-heavy workloads.\n"
        "INFO Using max model len 1280\n")
    assert f["model_load_gib"] == 0.12 and f["attention_backend"] == "FLASHINFER"
    assert f["fp8_weight_only_marlin"] is True
    assert f["linear_kernels"] == {"something else": ["MarlinFP8ScaledMMLinearKernel"]}
    assert L.parse_vllm_log("") == {"linear_kernels": {}, "lines": []}


def test_memory_facts_and_describe_from_log_without_vllm():
    run = _run("fp8")
    eng = E.VllmEngine(run.backend.options, _ctx(run))
    eng.log_facts = L.parse_vllm_log(SAMPLE_LOG + "Weight-only FP8 compression will be used leveraging the Marlin kernel")
    assert eng.memory_facts() == {"weights_mib": 5498.9, "model_load_mib": 5498.9, "kv_cache_mib": 63805.4}
    eng.inspection = {"weights_bytes": 5 * 2**30, "linear_kernel_layers": {"MarlinFP8ScaledMMLinearKernel": 224}}
    assert eng.memory_facts()["weights_mib"] == 5120.0
    info = eng.describe()
    assert info["engine"] == "vllm" and info["attention_backend"] == "FLASH_ATTN"
    assert info["linear_kernels"] == ["MarlinFP8ScaledMMLinearKernel x224"] and info["kv_cache_tokens"] == 1_166_720
    assert info["weights_mib"] == 5120.0 and info["kv_cache_mib"] == 63805.4
    assert info["fp8_mode"].startswith("weight-only FP8 via Marlin")
    assert all(k.endswith("_mib") for k in eng.memory_facts())


@pytest.mark.parametrize("texts, status", [
    (("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",), "oom"),
    (("RuntimeError: Engine core initialization failed. See root cause above.",
      "ERROR ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization`"), "oom"),
    (("ValueError: To serve at least one request with the model's max seq len (131072), (16.0 GiB KV cache is "
      "needed, which is larger than the available KV cache memory (9.5 GiB).",), "oom"),
    (("ValueError: The quantization method auto_awq is not supported for the current GPU. Minimum capability: 75. "
      "Current capability: 70.",), "unsupported_hardware"),
    (("ValueError: Quantization method specified in the model config (gptq) does not match the quantization method "
      "specified in the `quantization` argument (fp8).",), "invalid_config"),
])
def test_classify_error(texts, status):
    assert L.classify_error(*texts)[0] == status


def test_classify_error_unknown():
    assert L.classify_error("RuntimeError: something else", "INFO fine") is None


# -- timing and log-probs, with a stand-in LLM ----------------------------------------------------
class _Logprob:
    def __init__(self, logprob, rank=None):
        self.logprob, self.rank = logprob, rank


def test_topk_logprobs_rows_and_order():
    k = 3
    # position dict: top-k plus the actual token ranked below k
    pos = lambda base: {10 + base: _Logprob(-0.1, 1), 11 + base: _Logprob(-1.0, 2), 12 + base: _Logprob(-2.0, 3),
                        99: _Logprob(-9.0, 57)}
    values, indices = OUT.topk_logprobs([None, pos(0), pos(1)], pos(2), k)
    assert values.shape == indices.shape == (3, 3) and values.dtype == np.float32 and indices.dtype == np.int64
    assert indices.tolist() == [[10, 11, 12], [11, 12, 13], [12, 13, 14]]
    assert values[0].tolist() == pytest.approx([-0.1, -1.0, -2.0])
    short, ids = OUT.topk_logprobs([None], {5: _Logprob(-0.5, 1)}, 2)
    assert ids.tolist() == [[5, -1]] and short[0, 1] == -np.inf
    with pytest.raises(RunFailure):
        OUT.topk_logprobs([None, None], pos(0), k)


def test_batch_ttft_ms():
    m = [SimpleNamespace(arrival_time=100.0, first_token_latency=0.5),
         SimpleNamespace(arrival_time=100.01, first_token_latency=0.8)]
    ms, summary = OUT.batch_ttft_ms(99.99, m)
    assert ms == pytest.approx(820.0) and summary["ttft_per_request_ms_max"] == pytest.approx(800.0)
    assert OUT.batch_ttft_ms(99.0, [None])[0] is None
    assert OUT.batch_ttft_ms(99.0, [SimpleNamespace(arrival_time=0.0, first_token_latency=0.0)])[0] is None


class FakeLLM:
    """Stands in for vllm.LLM: records calls, returns RequestOutput-like objects."""

    def __init__(self, metrics: bool = True):
        self.calls = []
        self.metrics = metrics

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((prompts, params))
        n = params["max_tokens"]
        outs = []
        for i, p in enumerate(prompts):
            now = __import__("time").time()
            metrics = SimpleNamespace(arrival_time=now, first_token_latency=0.001 * (i + 1)) if self.metrics else None
            top = {7: _Logprob(-0.2, 1), 8: _Logprob(-1.2, 2)}
            outs.append(SimpleNamespace(
                outputs=[SimpleNamespace(token_ids=list(range(n)), logprobs=[top] if params.get("logprobs") else None)],
                metrics=metrics,
                prompt_logprobs=[None] + [top] * (len(p["prompt_token_ids"]) - 1) if params.get("prompt_logprobs") else None))
        return outs


@pytest.mark.parametrize("metrics", [True, False])
def test_generate_one_call_greedy_exact_tokens(fake_vllm, metrics):
    run = _run("vllm_fp16")
    eng = E.VllmEngine(run.backend.options, _ctx(run))
    eng.llm = FakeLLM(metrics)
    eng.kwargs = {"max_model_len": 1000}
    timer = StepTimer(HostClock())
    timer.begin()
    out = eng.generate([[1, 2, 3], [4, 5, 6]], 5, timer)
    timer.end()
    assert out == [[0, 1, 2, 3, 4]] * 2
    prompts, params = eng.llm.calls[0]
    assert prompts == [{"prompt_token_ids": [1, 2, 3]}, {"prompt_token_ids": [4, 5, 6]}]
    assert params == {"temperature": 0.0, "detokenize": False, "max_tokens": 5, "ignore_eos": True}
    s = timer.sample()
    assert s.new_tokens == 5 and 0 <= s.ttft_ms <= s.e2e_ms
    if metrics:
        assert len(eng.llm.calls) == 1 and "request metrics" in eng.timing["ttft_method"]
    else:
        assert len(eng.llm.calls) == 2 and eng.llm.calls[1][1]["max_tokens"] == 1
        assert "max_tokens=1" in eng.timing["ttft_method"]
    with pytest.raises(RunFailure, match="max_model_len"):
        eng.generate([[1] * 998], 5, timer)


def test_score_topk(fake_vllm):
    run = _run({"engine": "vllm", "options": {"score_top_k": 2}})
    eng = E.VllmEngine(run.backend.options, _ctx(run))
    eng.llm = FakeLLM()
    eng.kwargs = {"max_model_len": 100}
    lp = eng.score([3, 4, 5, 6])
    assert lp.values.shape == (4, 2) and lp.indices.tolist() == [[7, 8]] * 4
    _, params = eng.llm.calls[0]
    assert params["prompt_logprobs"] == 2 and params["logprobs"] == 2 and params["max_tokens"] == 1


# -- which layers vLLM quantizes: a faithful fake of vLLM 0.26.0's decision -----------------------
# safetensors dtype names of the float types vLLM treats as unquantized ([torch.float16,
# torch.bfloat16, torch.float32] in both maybe_update_config functions).
_FLOAT_DTYPES = {"F16", "BF16", "F32"}
# vllm/model_executor/models/{llama,qwen2,qwen3}.py (mistral.py subclasses llama): packed_modules_mapping.
_FUSED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}


def _vllm_linear_prefixes(layers: int) -> list[str]:
    """The LinearBase prefixes vLLM builds for these models: Qwen2/LlamaDecoderLayer give
    f"{prefix}.self_attn" / f"{prefix}.mlp", whose layers are qkv_proj, o_proj, gate_up_proj, down_proj
    (qwen2.py lines 95-170, llama.py lines 98-177), under model.layers.{i}."""
    return [f"model.layers.{i}.{m}" for i in range(layers)
            for m in ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")]


def _gptq_method(qcfg: dict, metadata: dict, prefix: str) -> str:
    """vLLM 0.26.0's GPTQ layer decision, step by step:
    AutoGPTQConfig.from_config + __init__ (`modules_in_block_to_quantize or []`), then
    AutoGPTQConfig.maybe_update_config (auto_gptq.py: flatten a list of lists, or, when empty, take the
    modules of the non-float safetensors tensors), then apply_vllm_mapper with the model's unstacked
    mapper (Qwen2/Llama map only stacked names, so it is the identity, but `_map_name` runs string
    methods on each entry), then gptq_utils.get_linear_quant_method -> is_layer_gptq_quantized
    (substring match, fused layers shard by shard) -> AutoGPTQLinearMethod or UnquantizedLinearMethod."""
    modules = qcfg.get("modules_in_block_to_quantize") or []
    if modules:
        if isinstance(modules[0], list):  # is_list_of(..., list), check="first"
            modules = [m for sub in modules for m in sub]
    else:
        modules = list({name.rsplit(".", 1)[0] for name, info in metadata.items()
                        if info.get("dtype") and info["dtype"] not in _FLOAT_DTYPES})
    # apply_vllm_mapper: WeightsMapper._map_name calls str methods on each entry (a nested list would raise).
    assert all(isinstance(m, str) for m in modules)
    assert not qcfg.get("dynamic"), "the fake does not model GPTQModel's dynamic rules"
    proj = prefix.split(".")[-1]
    if proj in _FUSED:
        shards = {any(m in prefix.replace(proj, shard) for m in modules) for shard in _FUSED[proj]}
        if len(shards) > 1:
            raise ValueError(f"Detected some but not all shards of {prefix} are quantized")
        quantized = shards.pop()
    else:
        quantized = any(m in prefix for m in modules)
    return "AutoGPTQLinearMethod" if quantized else "UnquantizedLinearMethod"


def _awq_method(qcfg: dict, metadata: dict, prefix: str) -> str:
    """vLLM 0.26.0's AWQ layer decision: AutoAWQConfig.from_config (`modules_to_not_convert or []`),
    maybe_update_config (auto_awq.py: when empty, every safetensors module minus the non-float ones),
    then get_quant_method -> quant_utils.is_layer_skipped(skip_with_substr=True)."""
    skip = qcfg.get("modules_to_not_convert") or []
    if not skip:
        layers = {name.rsplit(".", 1)[0] for name in metadata}
        quant = {name.rsplit(".", 1)[0] for name, info in metadata.items()
                 if info.get("dtype") and info["dtype"] not in _FLOAT_DTYPES}
        skip = list(layers - quant)
    proj = prefix.split(".")[-1]
    match = lambda p: any(m in p for m in skip)  # noqa: E731 — substr_match
    if proj in _FUSED and match(prefix):
        skipped = True
    elif proj in _FUSED:
        shards = {match(prefix.replace(proj, shard)) for shard in _FUSED[proj]}
        assert len(shards) == 1
        skipped = shards.pop()
    else:
        skipped = match(prefix)
    return "UnquantizedLinearMethod" if skipped else "AutoAWQMarlinLinearMethod"


def _float_folder_metadata(layers: int) -> dict:
    """What a folder of plain fp16 safetensors holds (e.g. the materialised synthetic weights)."""
    names = [f"model.layers.{i}.{m}.weight" for i in range(layers)
             for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                       "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    return {n: {"dtype": "F16"} for n in names + ["model.embed_tokens.weight", "lm_head.weight"]}


def _gptq_checkpoint_metadata(layers: int) -> dict:
    """A real GPTQ checkpoint: qweight/qzeros/g_idx int32, scales fp16, embeddings and norms fp16."""
    meta = {}
    for name in _float_folder_metadata(layers):
        base = name.rsplit(".", 1)[0]
        if "layers" in base:
            meta.update({f"{base}.qweight": {"dtype": "I32"}, f"{base}.qzeros": {"dtype": "I32"},
                         f"{base}.g_idx": {"dtype": "I32"}, f"{base}.scales": {"dtype": "F16"}})
        else:
            meta[name] = {"dtype": "F16"}
    return meta


CAUSAL_MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml")
                       if yaml.safe_load(p.read_text()).get("task") == "causal_lm")


def test_fake_reproduces_the_h200_gptq_fallback_and_real_checkpoints():
    # The fake must show the bug the H200 record showed (Qwen2.5-32B: UnquantizedLinearMethod x256) ...
    old = {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True, "desc_act": False, "lm_head": False}
    prefixes = _vllm_linear_prefixes(64)
    assert {_gptq_method(old, {}, p) for p in prefixes} == {"UnquantizedLinearMethod"} and len(prefixes) == 256
    # ... and what vLLM does for a real GPTQ checkpoint (metadata names the int32 modules).
    assert {_gptq_method(old, _gptq_checkpoint_metadata(2), p) for p in _vllm_linear_prefixes(2)} == {
        "AutoGPTQLinearMethod"}
    # A per-block list of lists (transformers' format) is flattened by maybe_update_config.
    nested = {**old, "modules_in_block_to_quantize": [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
                                                      ["self_attn.o_proj"], ["mlp.gate_proj", "mlp.up_proj"],
                                                      ["mlp.down_proj"]]}
    assert {_gptq_method(nested, {}, p) for p in _vllm_linear_prefixes(2)} == {"AutoGPTQLinearMethod"}
    with pytest.raises(ValueError, match="some but not all shards"):
        _gptq_method({**old, "modules_in_block_to_quantize": ["self_attn.q_proj"]}, {}, "model.layers.0.self_attn.qkv_proj")


@pytest.mark.parametrize("model", CAUSAL_MODELS)
def test_synthetic_gptq_config_quantizes_every_linear_layer(model):
    arch = _model(model)["architecture"]
    qcfg = A.synthetic_quantization_config(O.Options(quantization="gptq_marlin"), arch)
    layers = 3
    for metadata in ({}, _float_folder_metadata(layers)):  # a config-only folder; one with float weights
        methods = [_gptq_method(qcfg, metadata, p) for p in _vllm_linear_prefixes(layers)]
        assert methods == ["AutoGPTQLinearMethod"] * (4 * layers)


@pytest.mark.parametrize("model", CAUSAL_MODELS)
def test_synthetic_awq_config_quantizes_every_linear_layer(model):
    arch = _model(model)["architecture"]
    qcfg = A.synthetic_quantization_config(O.Options(quantization="awq_marlin"), arch)
    for metadata in ({}, _float_folder_metadata(3)):
        assert {_awq_method(qcfg, metadata, p) for p in _vllm_linear_prefixes(3)} == {"AutoAWQMarlinLinearMethod"}
    # The trap the config avoids: without modules_to_not_convert, float weights in the folder skip all.
    old = {**qcfg, "modules_to_not_convert": None}
    assert {_awq_method(old, _float_folder_metadata(3), p) for p in _vllm_linear_prefixes(3)} == {
        "UnquantizedLinearMethod"}


def _hf_block_linears(arch: dict) -> set[str]:
    """Linear module names of one decoder block of the real (transformers) model, built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = {k: v for k, v in arch.items() if k != "model_type"}
    cfg.update(num_hidden_layers=1)
    config = AutoConfig.for_model(arch["model_type"], **cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    block = model.model.layers[0]
    return {name for name, m in block.named_modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("model", CAUSAL_MODELS)
def test_gptq_module_names_exist_in_each_architecture(model):
    """Every name the synthetic config lists is a linear layer of the model's block, and every linear
    layer of the block is listed (Qwen2 and Llama families in conf/model)."""
    arch = _model(model)["architecture"]
    names = A.gptq_block_modules(arch)
    assert set(names) == _hf_block_linears(arch)


@pytest.mark.parametrize("model_type", ["mistral", "qwen3"])
def test_gptq_module_names_for_the_other_known_types(model_type):
    arch = {**TINY_ARCH, "model_type": model_type, "head_dim": 64}
    assert set(A.gptq_block_modules(arch)) == _hf_block_linears(arch)


# -- weight census from the loaded layers (fake vLLM modules) -------------------------------------
def _fake_vllm_model(method: str, layers: int = 2, tp_size: int = 1):
    """A model shaped like vLLM's Qwen2 after loading: LinearBase subclasses (named so introspect's
    class-name fallback finds them without vLLM) holding a quant_method and its tensors."""
    import torch

    class LinearBase(torch.nn.Module):
        pass

    class QKVParallelLinear(LinearBase):
        pass

    class RowParallelLinear(LinearBase):
        pass

    class MacheteLinearKernel:
        pass

    class AutoGPTQLinearMethod:
        def __init__(self):
            self.kernel = MacheteLinearKernel()

        def apply(self, layer, x, bias=None):
            return x

    class UnquantizedLinearMethod:
        def apply(self, layer, x, bias=None):
            return x

    class UnquantizedEmbeddingMethod:
        def apply(self, layer, x, bias=None):
            return x

    def linear(cls, k: int, n: int):
        m = cls()
        m.input_size_per_partition, m.output_size_per_partition = k // tp_size if cls is RowParallelLinear else k, \
            n // tp_size if cls is QKVParallelLinear else n
        m.tp_rank, m.tp_size = 0, tp_size
        k, n = m.input_size_per_partition, m.output_size_per_partition
        p = lambda *shape, dtype: torch.nn.Parameter(torch.zeros(*shape, dtype=dtype), requires_grad=False)  # noqa: E731
        if method == "gptq":
            m.quant_method = AutoGPTQLinearMethod()
            m.register_parameter("qweight", p(k // 8, n, dtype=torch.int32))
            m.register_parameter("scales", p(k // 128, n, dtype=torch.float16))
            m.register_parameter("qzeros", p(k // 128, n // 8, dtype=torch.int32))
            m.register_parameter("g_idx", p(k, dtype=torch.int32))
        else:
            m.quant_method = UnquantizedLinearMethod()
            m.register_parameter("weight", p(n, k, dtype=torch.float16))
        m.register_parameter("bias", p(n, dtype=torch.float16))
        return m

    model = torch.nn.Module()
    model.embed = torch.nn.Embedding(64, 256, dtype=torch.float16)
    model.embed.quant_method = UnquantizedEmbeddingMethod()
    model.layers = torch.nn.ModuleList()
    for _ in range(layers):
        block = torch.nn.Module()
        block.qkv_proj = linear(QKVParallelLinear, 256, 512)
        block.o_proj = linear(RowParallelLinear, 256, 256)
        model.layers.append(block)
    return model


def _expect(backend: str):
    from runners.plan.config import Expectation

    return Expectation(**_yaml(backend)["expect"])


def test_census_all_gptq_layers_is_about_4_bits():
    from runners.open.verify import verdict

    insp = I.inspect_model(_fake_vllm_model("gptq"))
    census = I.census_from_inspection(insp)
    assert census.linear_layers == census.quantized_layers == 4
    assert census.layers == {"AutoGPTQLinearMethod+MacheteLinearKernel": 4}
    # qkv 256x512: qweight 256/8*512*4 + scales 2*512*2 + qzeros 2*64*4 + g_idx 256*4 bytes; bias excluded
    qkv = 256 * 512 // 2 + 2 * 512 * 2 + 2 * 64 * 4 + 256 * 4
    o = 256 * 256 // 2 + 2 * 256 * 2 + 2 * 32 * 4 + 256 * 4
    assert census.quantized_bytes == 2 * (qkv + o) and census.quantized_params == 2 * (256 * 512 + 256 * 256)
    assert 4.0 < census.quantized_bits < 4.5
    assert verdict(_expect("gptq"), census, "gptq") is None
    assert insp["quant_methods"] == {"AutoGPTQLinearMethod": 4} and insp["linear_kernel_layers"] == {
        "MacheteLinearKernel": 4}
    assert insp["other_quant_methods"] == {"UnquantizedEmbeddingMethod": 1}
    assert insp["weights_bytes"] > census.linear_bytes  # embeddings and biases too
    assert "rank 0 of 1" in census.notes[0] and "whole model" in census.notes[0]


def test_census_unquantized_layers_under_gptq_is_not_applied_evidence():
    """The H200 case: a gptq run whose layers all ran UnquantizedLinearMethod fails the backend's check."""
    from runners.open.verify import verdict

    run = _run("gptq", "qwen2.5-32b")
    eng = E.VllmEngine(run.backend.options, _ctx(run))
    eng.inspection = I.inspect_model(_fake_vllm_model("fp16"))
    census = eng.census()
    assert census.quantized_layers == 0 and census.unquantized_total == 4
    reason = verdict(run.backend.expect, census, "gptq")
    assert reason and "0 of 4" in reason and "UnquantizedLinearMethod x4" in reason
    info = eng.describe()
    assert info["quantized_linear_layers"] == "0/4" and info["linear_kernels"] == ["UnquantizedLinearMethod x4"]
    assert info["unquantized_modules"] == ["layers.0.qkv_proj", "layers.0.o_proj", "layers.1.qkv_proj",
                                           "layers.1.o_proj"]


def test_census_fp16_is_16_bits_and_unquantized():
    from runners.open.verify import verdict

    census = I.census_from_inspection(I.inspect_model(_fake_vllm_model("fp16")))
    assert census.linear_bits == 16.0 and census.quantized_layers == 0
    assert verdict(_expect("vllm_fp16"), census, "vllm_fp16") is None
    assert verdict(_expect("gptq"), census, "gptq") is not None


def test_census_under_tensor_parallelism_is_rank_0s_shard():
    census = I.census_from_inspection(I.inspect_model(_fake_vllm_model("fp16", tp_size=2)))
    assert census.linear_params == 2 * (256 * 256 + 128 * 256)  # qkv split along N, o_proj along K
    assert "rank 0 of 2" in census.notes[0] and "shard" in census.notes[0]


def test_census_counts_bitsandbytes_quant_states():
    import torch

    layer = _fake_vllm_model("fp16", layers=1).layers[0].o_proj
    layer.weight.bnb_quant_state = {0: SimpleNamespace(absmax=torch.zeros(1024, dtype=torch.float32), state2=None)}
    nbytes, dtypes = I.layer_weight_bytes(layer)
    assert nbytes == 256 * 256 * 2 + 1024 * 4 and dtypes == ["float16"]


def test_no_inspection_means_no_census():
    run = _run("gptq")
    eng = E.VllmEngine(run.backend.options, _ctx(run))
    assert eng.census() is None
    eng.inspection = I.inspection_from_text("(qkv_proj): QKVParallelLinear(quant=AutoGPTQLinearMethod, in=1)")
    assert eng.census() is None and eng.describe()["quant_methods_seen"] == ["AutoGPTQLinearMethod"]


# -- GPU ------------------------------------------------------------------------------------------
def _gpu_ready() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


@pytest.mark.gpu
@pytest.mark.parametrize("quantization", ["none", "awq_marlin", "gptq_marlin"])
def test_gpu_tiny_dummy_model_generates(tmp_path, monkeypatch, quantization):
    reason = _gpu_ready()
    if reason:
        pytest.skip(reason)
    from runners.open.files import ModelFiles

    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path))
    model = {"name": "tiny-vllm", "task": "causal_lm", "architecture": TINY_ARCH}
    run = _run({"engine": "vllm", "options": {"dtype": "float16", "quantization": quantization,
                                              "gpu_memory_utilization": 0.3, "enforce_eager": True}},
               model, workload={"kind": "generate", "batch_sizes": [4], "prompt_tokens": 32, "new_tokens": 8})
    files = ModelFiles(run.model, "synthetic", "causal_lm", 2, "cuda")
    eng = E.VllmEngine(run.backend.options, EngineContext(run.engine_view("cuda"), files, BbcTexts(), tmp_path))
    assert eng.check() is None
    eng.load()
    try:
        timer = StepTimer(HostClock())
        prompts = np.random.default_rng(0).integers(16, 2048, size=(4, 32)).tolist()
        timer.begin()
        out = eng.generate(prompts, 8, timer)
        timer.end()
        assert [len(o) for o in out] == [8] * 4
        s = timer.sample()
        assert 0 < s.ttft_ms <= s.e2e_ms
        lp = eng.score(prompts[0][:16])
        assert lp.values.shape == (16, 20) and np.all(lp.values[:, 0] >= lp.values[:, 1])
        info, mem = eng.describe(), eng.memory_facts()
        assert info["vllm"] and info["max_model_len"] == 256 + 8
        census = eng.census()
        assert census.linear_layers == 4 * TINY_ARCH["num_hidden_layers"]
        if quantization == "none":
            assert census.quantized_layers == 0 and census.linear_bits == 16.0
        else:
            assert info["quantization_method"] == {"awq_marlin": "auto_awq", "gptq_marlin": "auto_gptq"}[quantization]
            assert census.quantized_layers == census.linear_layers and 4.0 < census.quantized_bits < 4.5
            assert info.get("linear_kernels")
        assert mem.get("kv_cache_mib", 0) > 0 and mem.get("weights_mib", 0) > 0
    finally:
        eng.close()


# -- scripts/vllm_fidelity.py ---------------------------------------------------------------------
def _fidelity():
    spec = importlib.util.spec_from_file_location("vllm_fidelity", ROOT / "scripts" / "vllm_fidelity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fidelity_parses_vllm_bench_output():
    f = _fidelity()
    text = ("Processed prompts: 100%|...\nThroughput: 11.52 requests/s, 14745.60 total tokens/s, "
            "2949.12 output tokens/s\nTotal num prompt tokens:  262144\nTotal num output tokens:  65536\n")
    assert f.parse_throughput(text) == {"requests_per_s": 11.52, "total_tokens_per_s": 14745.6,
                                        "output_tokens_per_s": 2949.12}
    assert f.parse_throughput("nothing") is None


def test_fidelity_reads_quantbench_record():
    f = _fidelity()
    record = {"status": "ok", "points": [
        {"batch_size": 8, "metrics": {"output_tokens_per_s": {"median": 1.0}}},
        {"batch_size": 256, "status": "ok", "metrics": {"output_tokens_per_s": {"median": 2900.5, "cv_pct": 1.2},
                                                        "ttft_ms": {"median": 800.0}, "peak_rss_mib": 10.0}}],
        "engine_info": {"vllm": "0.26.0", "linear_kernels": ["MarlinLinearKernel"]}}
    got = f.quantbench_throughput(record, 256)
    assert got["output_tokens_per_s_median"] == 2900.5 and got["ttft_ms_median"] == 800.0
    assert got["output_tokens_per_s_cv_pct"] == 1.2 and got["linear_kernels"] == ["MarlinLinearKernel"]


def test_fidelity_commands_share_the_engine_settings():
    f = _fidelity()
    run = _run("awq")
    kw = A.llm_kwargs(run.backend.options, _ctx(run))
    cmd = f.bench_command(kw, "/tok", 1024, 256, 256, 256, "/o.json", detokenize=False, python="py")
    # vLLM's benchmark module itself, not its CLI entry (which imports the OpenAI server's packages).
    assert cmd[0] == "py" and cmd[1].endswith("scripts/vllm_bench_throughput.py") and cmd[2] == "--model"
    joined = " ".join(cmd)
    # The random dataset prefers --random-input-len / --random-output-len (defaults 1024 / 128).
    for part in ("--load-format dummy", "--quantization awq_marlin", "--dtype float16", "--no-enable-prefix-caching",
                 "--input-len 1024", "--output-len 256", "--random-input-len 1024", "--random-output-len 256",
                 "--random-range-ratio 0.0", "--num-prompts 256", "--num-warmups 256",
                 "--tokenizer /tok", "--dataset-name random", "--disable-detokenize", "--gpu-memory-utilization 0.9"):
        assert part in joined
    assert "skip-tokenizer-init" not in joined and "max-logprobs" not in joined and "--disable-log-stats" not in joined
    qb = f.quantbench_command("awq", "llama-3.1-8b", 1024, 256, 256, 1344, "/d", python="py")
    assert "workload.batch_sizes=[256]" in qb and "++backend.options.max_model_len=1344" in qb
    assert "weights=synthetic" in qb and "hydra.run.dir=/d" in qb and "workload=throughput" in qb


def test_fidelity_synthetic_tokenizer_round_trips_exactly(tmp_path):
    """vLLM's RandomDataset decodes random ids to text and re-encodes; with this tokenizer the prompt
    keeps exactly input_len tokens and vLLM adds none when it tokenizes the text."""
    from transformers import AutoTokenizer

    f = _fidelity()
    tok = AutoTokenizer.from_pretrained(f.synthetic_tokenizer(tmp_path / "tok", 5000))
    ids = np.random.default_rng(0).integers(1, 5000, 512).tolist()
    text = tok.decode(ids)
    assert tok.encode(text, add_special_tokens=False) == ids and len(tok.encode(text)) == 512
    assert tok.vocab_size == 5000 and tok.num_special_tokens_to_add() == 0


def _fidelity_record(run, kwargs, batch=64):
    return {"run_id": "r1", "engine": "vllm", "status": "ok", "config": run.to_dict(),
            "points": [{"batch_size": batch, "status": "ok",
                        "metrics": {"output_tokens_per_s": {"median": 1000.0, "cv_pct": 0.5}}}],
            "engine_info": {"llm_kwargs": {k: v for k, v in kwargs.items() if k != "model"}}}


def test_fidelity_from_a_record_uses_its_exact_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "cache"))
    f = _fidelity()
    workload = {"kind": "generate", "batch_sizes": [1, 64], "prompt_tokens": 512, "new_tokens": 256, "warmup": 1,
                "repeats": 2}
    run = _run("awq", "qwen2.5-32b", workload=workload, backend_name="awq")
    planned, _, kwargs = f.plan_from_record(_fidelity_record(run, {}))
    assert planned == run and kwargs["load_format"] == "dummy" and kwargs["max_model_len"] == 768
    record = _fidelity_record(run, kwargs)
    assert f.record_mismatches(record, kwargs, 64) == []
    assert "no point at batch size 16" in f.record_mismatches(record, kwargs, 16)[0]
    failed = {**record, "status": "not_applied", "reason": "0 of 256 quantized"}
    assert "not_applied, not ok" in f.record_mismatches(failed, kwargs, 64)[0]
    drift = _fidelity_record(run, {**kwargs, "max_model_len": 832})
    assert "max_model_len: 832 vs 768" in f.record_mismatches(drift, kwargs, 64)[0]
    # The quantbench side straight from the record (vLLM's side needs a GPU: skipped here).
    path = tmp_path / "record.json"
    path.write_text(__import__("json").dumps(record))
    out = tmp_path / "fid.json"
    assert f.main(["--record", str(path), "--num-prompts", "64", "--skip-vllm", "--out", str(out)]) == 0
    got = __import__("json").loads(out.read_text())
    assert got["quantbench"]["output_tokens_per_s_median"] == 1000.0 and got["input_len"] == 512
    assert got["backend"] == "awq" and got["llm_kwargs"]["max_model_len"] == 768 and "ratio_quantbench_over_vllm" not in got
    path.write_text(__import__("json").dumps(drift))
    assert f.main(["--record", str(path), "--num-prompts", "64", "--skip-vllm", "--out", str(out)]) == 2


@pytest.mark.parametrize("backend", ["vllm_bf16_kv_fp8", "awq_kv_fp8"])
def test_fp8_kv_cache_backends_ask_for_it_and_prove_it(backend):
    """An FP8 KV cache changes how many requests fit: the row must show vLLM really configured it."""
    from runners.open.verify import verdict

    run = _run(backend, "qwen2.5-32b")
    assert A.llm_kwargs(run.backend.options, _ctx(run, FakeFiles()))["kv_cache_dtype"] == "fp8"
    eng = E.VllmEngine(run.backend.options, _ctx(run))
    eng.inspection = I.inspect_model(_fake_vllm_model("gptq" if backend.startswith("awq") else "fp16"))  # 4-bit layers
    census = eng.census()
    assert verdict(run.backend.expect, census, backend, lambda: {"kv_cache_dtype": "fp8_e4m3"}) is None
    reason = verdict(run.backend.expect, census, backend, lambda: {"kv_cache_dtype": "auto"})
    assert reason == f"{backend} expects a fp8 KV cache, but the engine reports 'auto'"
    assert "no KV-cache dtype" in verdict(run.backend.expect, census, backend, lambda: {})


def test_the_vllm_server_takes_the_offline_engine_arguments(tmp_path):
    """`vllm serve` gets every EngineArgs of the offline path as its flags (no vLLM needed to check), the
    tokenizer on, and requests that decode exactly max_tokens; its log facts drop the raw lines."""
    from backends.vllm.serve import served_log_facts, server_process
    from runners.workload.client import Request

    run = _run("awq_kv_fp8", "qwen2.5-7b")
    files = FakeFiles("/models/qwen-tokenizer")
    ctx = _ctx(run, files)
    kw = A.llm_kwargs(run.backend.options, ctx)
    server = server_process(run.backend.options, ctx, None, tmp_path / "server.log")
    cmd = server.cmd
    assert cmd[1:5] == ["-m", "vllm.entrypoints.cli.main", "serve", kw["model"]] and "{port}" in cmd
    flags = CLI.kwargs_to_cli({k: v for k, v in kw.items() if k not in ("model", "seed", "skip_tokenizer_init")})
    assert flags
    joined = " ".join(cmd)
    assert all(f in cmd for f in flags) and "--kv-cache-dtype fp8" in joined and "--quantization awq" in joined
    assert "--skip-tokenizer-init" not in cmd  # the model has a tokenizer: text prompts stream text back
    untokenized = server_process(run.backend.options, _ctx(run, FakeFiles()), None, tmp_path / "s2.log")
    assert "--skip-tokenizer-init" in untokenized.cmd  # none (synthetic weights): token-id prompts
    assert server.request_extra(Request("hi", 7)) == {"ignore_eos": True, "min_tokens": 7, "return_token_ids": True}
    facts = served_log_facts("INFO Using MachetaLinearKernel for AWQMarlinLinearMethod\n"
                             "Model loading took 5.27 GiB memory and 3.1 seconds\n")
    assert facts["model_load_gib"] == 5.27 and "lines" not in facts


def test_fidelity_warmup_batches_sets_vllm_benchs_warmup_requests(tmp_path, monkeypatch):
    """--warmup-batches N makes vllm bench warm up on N x num_prompts requests; by default it is the workload's."""
    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "cache"))
    f = _fidelity()
    seen = []
    monkeypatch.setattr(f, "_tee", lambda cmd, log, timeout, env: (seen.append(cmd), (0, "Throughput: 1.0 requests/s, "
                                                                  "3.0 total tokens/s, 2.0 output tokens/s"))[1])
    out = tmp_path / "fid.json"
    base = ["--backend", "vllm_fp16", "--model", "qwen2.5-0.5b", "--input-len", "16", "--output-len", "8",
            "--num-prompts", "4", "--tokenizer", str(tmp_path), "--skip-quantbench", "--out", str(out)]
    for extra, warmups in (([], 4), (["--warmup-batches", "3"], 12)):
        assert f.main(base + extra) == 0
        cmd = seen[-1]
        assert cmd[cmd.index("--num-warmups") + 1] == str(warmups)
        got = __import__("json").loads(out.read_text())
        assert got["vllm_bench"]["num_warmups"] == warmups and got["vllm_bench"]["output_tokens_per_s"] == 2.0
