"""Options + weights mode -> the arguments of `vllm.LLM`, and the model folder vLLM reads.

Synthetic weights use `load_format="dummy"` on a config-only folder whose config.json carries a
quantization_config, so packed AWQ/GPTQ weights get their real shapes. That config must decide by
itself which layers are quantized, because vLLM 0.26 otherwise decides it from the safetensors
files of the folder, and a config-only folder has none:
- GPTQ (vllm/model_executor/layers/quantization/auto_gptq.py, `AutoGPTQConfig.maybe_update_config`):
  with no `modules_in_block_to_quantize`, the quantized modules are those whose safetensors tensors
  are not float; no tensors -> an empty list -> `utils/gptq_utils.py::get_linear_quant_method` gives
  every layer `UnquantizedLinearMethod` (the H200 "gptq ok" row that ran fp16). So the config names
  the modules: `is_layer_gptq_quantized` matches each entry as a substring of the layer's prefix
  (`model.layers.0.self_attn.q_proj`) and checks fused layers (`qkv_proj`, `gate_up_proj`) shard by
  shard through the model's `packed_modules_mapping`. The list is flat: `maybe_update_config` would
  flatten a per-block list of lists, but `apply_vllm_mapper` maps plain strings only.
- AWQ (auto_awq.py, `AutoAWQConfig.maybe_update_config`): with no `modules_to_not_convert`, the
  skipped layers are all safetensors tensors minus the non-float ones. An empty folder skips
  nothing (so the dummy folder happened to work), but a folder holding float tensors would skip
  every layer. Naming `lm_head` (never a vLLM LinearBase here, and what real AWQ checkpoints leave
  unquantized) makes the decision the config's, not the folder's.
bitsandbytes always uses its own loader (vLLM overrides load_format) and quantizes real safetensors
in flight to NF4, so synthetic bitsandbytes runs load the materialised synthetic weights folder.
"""
from __future__ import annotations

import importlib.util
from typing import Any

from backends.contract import ConfigError
from backends.vllm.options import AWQ, GPTQ, GROUP_SIZES, Options, checkpoint_key

# The linear modules of one decoder block, by their checkpoint (unfused) names, per HF model_type
# whose vLLM model fuses q/k/v into `qkv_proj` and gate/up into `gate_up_proj` with
# packed_modules_mapping {"qkv_proj": [q_proj, k_proj, v_proj], "gate_up_proj": [gate_proj, up_proj]}
# (vllm/model_executor/models/llama.py, mistral.py (a LlamaForCausalLM), qwen2.py, qwen3.py).
BLOCK_LINEARS: dict[str, tuple[str, ...]] = dict.fromkeys(
    ("llama", "mistral", "qwen2", "qwen3"),
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"))


def _arch_get(arch: dict, *names: str) -> Any:
    for n in names:
        if arch.get(n) is not None:
            return arch[n]
    return None


def linear_input_sizes(arch: dict, tp: int = 1) -> list[int]:
    """Input (K) sizes per tensor-parallel rank of a decoder's linear layers, from HF config keys."""
    hidden = _arch_get(arch, "hidden_size", "n_embd", "d_model")
    if not hidden:
        return []
    heads = _arch_get(arch, "num_attention_heads", "n_head") or 1
    head_dim = _arch_get(arch, "head_dim") or hidden // heads
    inter = _arch_get(arch, "intermediate_size", "n_inner", "ffn_dim") or 4 * hidden
    # q/k/v and gate/up read the full hidden state; o_proj and down_proj are split along K by TP.
    return [int(hidden), int(heads * head_dim) // tp, int(inter) // tp]


def pick_group_size(sizes: list[int]) -> int:
    """128 (the usual AWQ/GPTQ group) unless a layer's input size forbids it (e.g. hidden 576)."""
    for g in GROUP_SIZES:
        if all(s % g == 0 for s in sizes):
            return g
    return -1  # per-channel: the only grouping every size admits


def gptq_block_modules(arch: dict) -> list[str]:
    """`modules_in_block_to_quantize` for a synthetic GPTQ checkpoint of this architecture."""
    model_type = arch.get("model_type")
    if model_type not in BLOCK_LINEARS:
        raise ConfigError(
            f"synthetic GPTQ weights: the quantized module names of model_type {model_type!r} are not known "
            f"(known: {', '.join(sorted(BLOCK_LINEARS))}); without them vLLM quantizes no layer of a config-only "
            "folder. Give backend.options.quantization_config with modules_in_block_to_quantize")
    return list(BLOCK_LINEARS[model_type])


def synthetic_quantization_config(options: Options, arch: dict) -> dict | None:
    """The quantization_config that makes dummy weights take a pre-quantized checkpoint's shapes."""
    if options.quantization_config is not None:
        return dict(options.quantization_config)
    q = options.quantization
    if q not in AWQ + GPTQ:
        return None
    group = options.group_size if options.group_size is not None else pick_group_size(
        linear_input_sizes(arch, options.tensor_parallel_size))
    if q in AWQ:
        # AutoAWQ GEMM checkpoints: 4-bit, zero point, packed along the output dim.
        return {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True, "version": "gemm",
                "modules_to_not_convert": ["lm_head"]}
    # AutoGPTQ / GPTQModel checkpoints: symmetric, no act-order.
    return {"quant_method": "gptq", "bits": options.bits, "group_size": group, "sym": True, "desc_act": False,
            "lm_head": False, "checkpoint_format": "gptq", "modules_in_block_to_quantize": gptq_block_modules(arch)}


def auto_max_model_len(run: Any) -> int:
    """The context vLLM reserves: the longest sequence the run's calls hold (the planner computes it for
    the workload and quality alike; backends.contract.EngineRun.max_sequence_tokens)."""
    return int(run.max_sequence_tokens)


def needs_build(options: Options, run: Any) -> bool:
    """Whether the engine's prepare() must make a compressed-tensors checkpoint: a recipe on pretrained
    weights with no ready checkpoint named in the model YAML (synthetic weights load dummy instead)."""
    return (options.compress is not None and run.weights == "pretrained"
            and checkpoint_key(options) not in (run.model.checkpoints or {}))


def model_source(options: Options, ctx: Any, built: Any = None) -> tuple[str, str | None, dict | None, str]:
    """(model path or id, load_format or None, injected quantization_config, what it is).

    `built`: the compressed-tensors checkpoint prepare() made (backends.compress.CheckpointBuild)."""
    run = ctx.run
    q = options.quantization
    key = checkpoint_key(options)
    checkpoints = run.model.checkpoints or {}
    if options.compress is not None and key not in checkpoints and run.weights == "synthetic":
        # Like synthetic AWQ/GPTQ: dummy weights shaped by the config the recipe's checkpoint would carry
        # (quantizing random weights of a 32B model on the way to a speed number buys nothing).
        qcfg = options.compress.quantization_config()
        return str(ctx.files.config_folder(extra={"quantization_config": qcfg})), "dummy", qcfg, \
            "dummy weights on a config-only folder (compressed-tensors config of the recipe)"
    if needs_build(options, run):
        if built is None:
            raise RuntimeError("compress: the checkpoint is built by the engine's prepare(); call it first")
        return str(built.folder), None, None, (f"compressed-tensors checkpoint made by llm-compressor "
                                               f"({options.compress.method}, {run.weights} weights)")
    if run.weights == "pretrained":
        if key and key in checkpoints:
            return checkpoints[key], None, None, f"pretrained checkpoint model.checkpoints.{key}"
        return str(ctx.files.folder()), None, None, "pretrained weights"
    if q == "bitsandbytes":
        # vLLM forces its bitsandbytes loader, which quantizes real tensors in flight: no dummy load.
        return str(ctx.files.folder()), None, None, "synthetic weights folder (bitsandbytes quantizes in flight)"
    qcfg = synthetic_quantization_config(options, run.model.architecture)
    extra = {"quantization_config": qcfg} if qcfg else None
    folder = ctx.files.config_folder(extra=extra)
    return str(folder), "dummy", qcfg, "dummy weights on a config-only folder"


def llm_kwargs(options: Options, ctx: Any, source: tuple | None = None) -> dict[str, Any]:
    """Options + weights mode -> `vllm.LLM(**kwargs)`. `source`: model_source()'s result, if known."""
    model, load_format, _, _ = source or model_source(options, ctx)
    o = options
    kw: dict[str, Any] = {
        "model": model,
        "dtype": o.dtype,
        "quantization": None if o.quantization == "none" else o.quantization,
        "gpu_memory_utilization": o.gpu_memory_utilization,
        "max_model_len": o.max_model_len or auto_max_model_len(ctx.run),
        "tensor_parallel_size": o.tensor_parallel_size,
        "enforce_eager": o.enforce_eager,
        "kv_cache_dtype": o.kv_cache_dtype,
        "enable_prefix_caching": o.enable_prefix_caching,
        "trust_remote_code": bool(ctx.run.model.trust_remote_code),
        # Per-request metrics (TTFT) need stats on; `vllm bench throughput` runs with them on too
        # (EngineArgs.disable_log_stats defaults to False; only a bare vllm.LLM() turns them off).
        "disable_log_stats": False,
        "max_logprobs": max(20, o.score_top_k),
        "seed": o.seed,
    }
    if load_format:
        kw["load_format"] = load_format
    # Off: prompts are token ids (TokensPrompt) and outputs are token ids, no tokenizer needed.
    kw["skip_tokenizer_init"] = not o.detokenize
    if o.max_num_seqs is not None:
        kw["max_num_seqs"] = o.max_num_seqs
    if o.max_num_batched_tokens is not None:
        kw["max_num_batched_tokens"] = o.max_num_batched_tokens
    if o.linear_backend != "auto":
        kw["linear_backend"] = o.linear_backend
    if o.attention_backend:
        kw["attention_backend"] = o.attention_backend
    kw.update(o.engine_args)
    return kw


def vllm_environment() -> dict[str, str]:
    """Variables every vLLM process of a run needs here (the engine's and `vllm bench`'s alike).

    vLLM 0.26's sampler imports FlashInfer at start-up unless told not to, and dies without it (seen
    on an H100 with the minimal wheel set); the PyTorch sampler is what runs then anyway.
    """
    if importlib.util.find_spec("flashinfer") is None:
        return {"VLLM_USE_FLASHINFER_SAMPLER": "0"}
    return {}
