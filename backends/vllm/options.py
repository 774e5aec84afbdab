"""The vLLM engine's typed options (a backend YAML's `options:`) and their checks.

Names of the choices come from vLLM 0.26.0: `quantization="awq"` and `"awq_marlin"` both resolve to
`auto_awq`, `"gptq"`/`"gptq_marlin"` to `auto_gptq` (vllm/model_executor/layers/quantization/
__init__.py); `LinearBackend` is vllm/config/kernel.py's list.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from backends.compress import Recipe
from backends.contract import ConfigError

Quantization = Literal["none", "awq_marlin", "awq", "gptq_marlin", "gptq", "fp8", "bitsandbytes",
                       "compressed-tensors"]
# vLLM 0.26 `LinearBackend` (vllm/config/kernel.py).
LinearBackend = Literal["auto", "cutlass", "flashinfer_cutlass", "flashinfer_cutedsl", "flashinfer_trtllm",
                        "flashinfer_cudnn", "flashinfer_b12x", "marlin", "humming", "triton", "deep_gemm",
                        "torch", "aiter", "machete", "fbgemm", "conch", "exllama", "emulation", "xpu", "xpu_woq"]
KVCacheDType = Literal["auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2"]

QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)
AWQ = ("awq", "awq_marlin")
GPTQ = ("gptq", "gptq_marlin")
# Methods whose weights must come quantized (a checkpoint, or a synthetic quantization_config).
PREQUANTIZED = AWQ + GPTQ + ("compressed-tensors",)
# model.checkpoints key used for weights=pretrained, per quantization (None: the plain weights).
CHECKPOINT_KEYS = {"awq": "awq", "awq_marlin": "awq", "gptq": "gptq", "gptq_marlin": "gptq",
                   "compressed-tensors": "compressed-tensors", "fp8": "fp8", "bitsandbytes": "bnb"}
GROUP_SIZES = (128, 64, 32)

# `vllm.LLM` kwargs that args.llm_kwargs() owns; engine_args may not override them.
MANAGED_KWARGS = ("model", "dtype", "quantization", "load_format", "gpu_memory_utilization", "max_model_len",
                  "tensor_parallel_size", "enforce_eager", "kv_cache_dtype", "max_num_seqs",
                  "max_num_batched_tokens", "enable_prefix_caching", "skip_tokenizer_init", "tokenizer",
                  "trust_remote_code", "linear_backend", "attention_backend", "max_logprobs", "disable_log_stats",
                  "seed")


@dataclass(frozen=True)
class Options:
    dtype: Literal["auto", "float16", "bfloat16"] = "auto"
    quantization: Quantization = "none"
    # Restrict vLLM's GEMM kernel choice for quantized linear layers (vLLM's --linear-backend).
    linear_backend: LinearBackend = "auto"
    # vLLM attention backend name (e.g. FLASH_ATTN, FLASHINFER, TRITON_ATTN); null = vLLM's choice.
    attention_backend: str | None = None
    gpu_memory_utilization: float = 0.9
    # null = just enough for the workload and the quality text (prompt + new tokens, eval tokens + 8).
    max_model_len: int | None = None
    # Recorded and passed to vLLM; the weight census then describes rank 0's shard.
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    kv_cache_dtype: KVCacheDType = "auto"
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    # Off: repeats send the same prompts, and a prefix-cache hit would skip their prefill.
    enable_prefix_caching: bool = False
    # Refuse GPUs below this compute capability (major*10+minor), e.g. 89 for native FP8.
    min_capability: int | None = None
    # Synthetic AWQ/GPTQ: bits and group size of the injected quantization_config.
    # group_size null = 128, or the largest of 64/32 that divides every linear layer's input size.
    bits: int = 4
    group_size: int | None = None
    # Synthetic weights: use this quantization_config verbatim (e.g. a compressed-tensors scheme).
    quantization_config: dict[str, Any] | None = None
    # weights=pretrained: key of model.checkpoints to load; null = the method's usual key (awq, gptq, ...).
    checkpoint: str | None = None
    # quantization compressed-tensors: build the checkpoint from the run's model with llm-compressor
    # (backends/compress, cached; the same folder the transformers ct_* backends load on CPU), unless
    # model.checkpoints has the `checkpoint` key (a folder carried from another machine).
    compress: Recipe | None = None
    # Top-k log-probs per position for quality scoring (vLLM returns top-k, never full distributions).
    score_top_k: int = 20
    # Load the tokenizer and detokenize outputs as a server would; off: token ids in and out.
    detokenize: bool = False
    # Record kernels and weight bytes by inspecting the loaded layers in the worker (apply_model).
    # Off: no weight census, so a backend that expects quantization ends not_applied.
    introspect: bool = True
    seed: int = 0
    # Any other `vllm.LLM` keyword argument, passed through (vLLM rejects unknown ones).
    engine_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = "backend.options."
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"{p}gpu_memory_utilization: must be in (0, 1], got {self.gpu_memory_utilization}")
        for name in ("max_model_len", "tensor_parallel_size", "max_num_seqs", "max_num_batched_tokens",
                     "min_capability", "score_top_k"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{p}{name}: must be > 0, got {value}")
        if self.bits not in (4, 8):
            raise ConfigError(f"{p}bits: {self.bits} is not valid; choose one of 4, 8")
        if self.quantization in AWQ and self.bits != 4:
            raise ConfigError(f"{p}bits: vLLM's AWQ supports 4-bit weights only, got {self.bits}")
        if self.group_size is not None and self.group_size not in (-1, *GROUP_SIZES):
            raise ConfigError(f"{p}group_size: {self.group_size} is not valid; choose one of -1, 32, 64, 128")
        if self.compress is not None and self.quantization != "compressed-tensors":
            raise ConfigError(f"{p}compress: makes a compressed-tensors checkpoint; set quantization: compressed-tensors "
                              f"(got {self.quantization})")
        clash = sorted(set(self.engine_args) & set(MANAGED_KWARGS))
        if clash:
            raise ConfigError(f"{p}engine_args: {', '.join(clash)} are set by their own options or by quantbench")


def checkpoint_key(options: Options) -> str | None:
    if options.checkpoint:
        return options.checkpoint
    return CHECKPOINT_KEYS.get(options.quantization)
