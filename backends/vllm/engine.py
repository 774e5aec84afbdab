"""vLLM engine: offline `vllm.LLM` with continuous batching, fp16/bf16, AWQ, GPTQ, FP8, bitsandbytes.

Written against vLLM 0.26.0 (torch 2.11). Facts from its source that shape this module:
- `quantization="awq"` and `"awq_marlin"` both resolve to `auto_awq`, `"gptq"`/`"gptq_marlin"` to
  `auto_gptq`; the GEMM kernel is then picked per layer by `choose_mp_linear_kernel` (Machete on
  Hopper where it can, else Marlin, ...). `linear_backend` (an `LLM` kwarg) restricts that choice.
  So the kernel is reported from what vLLM logged and what the loaded layers hold, never assumed.
- Synthetic weights use `load_format="dummy"` on a config-only folder whose config.json carries a
  quantization_config, so packed AWQ/GPTQ weights get their real shapes. bitsandbytes always uses
  its own loader (vLLM overrides load_format) and quantizes real safetensors in flight to NF4, so
  synthetic bitsandbytes runs load the materialised synthetic weights folder instead.
- `fp8` on an unquantized checkpoint is online dynamic FP8; below compute capability 8.9 vLLM falls
  back to weight-only FP8 Marlin (recorded; `min_capability: 89` refuses such GPUs up front).
- Per-request metrics (`RequestOutput.metrics`) exist only with log stats on (`disable_log_stats=
  False`, which is also what `vllm bench throughput` runs with).
- Logs of the engine-core and worker processes never reach a handler in this process; they are
  captured through `VLLM_LOGGING_CONFIG_PATH` (a config that adds a file handler), which every vLLM
  process reads at import.

Nothing here imports vllm or torch at module level.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from backends.contract import Engine, LogProbs, RunFailure
from backends.contract import ConfigError

MIB = 2**20
GIB_IN_MIB = 1024.0

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
    # Top-k log-probs per position for quality scoring (vLLM returns top-k, never full distributions).
    score_top_k: int = 20
    # Load the tokenizer and detokenize outputs as a server would; off: token ids in and out.
    detokenize: bool = False
    # Record kernels and weight bytes by inspecting the loaded layers in the worker (apply_model).
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
        clash = sorted(set(self.engine_args) & set(_MANAGED_KWARGS))
        if clash:
            raise ConfigError(f"{p}engine_args: {', '.join(clash)} are set by their own options or by quantbench")


# LLM kwargs that llm_kwargs() owns; engine_args may not override them.
_MANAGED_KWARGS = ("model", "dtype", "quantization", "load_format", "gpu_memory_utilization", "max_model_len",
                   "tensor_parallel_size", "enforce_eager", "kv_cache_dtype", "max_num_seqs",
                   "max_num_batched_tokens", "enable_prefix_caching", "skip_tokenizer_init", "tokenizer",
                   "trust_remote_code", "linear_backend", "attention_backend", "max_logprobs", "disable_log_stats",
                   "seed")


# -- pure helpers: config mapping -------------------------------------------------------------------
def checkpoint_key(options: Options) -> str | None:
    if options.checkpoint:
        return options.checkpoint
    return CHECKPOINT_KEYS.get(options.quantization)


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
                "modules_to_not_convert": None}
    # AutoGPTQ / GPTQModel checkpoints: symmetric, no act-order.
    return {"quant_method": "gptq", "bits": options.bits, "group_size": group, "sym": True, "desc_act": False,
            "lm_head": False, "checkpoint_format": "gptq"}


def auto_max_model_len(run: Any) -> int:
    wl = run.workload
    need = wl.prompt_tokens + wl.new_tokens if wl.kind == "generate" else wl.seq_len
    quality = getattr(run, "quality", None)
    if quality is not None and getattr(quality, "enabled", False):
        need = max(need, quality.eval_tokens + 8)  # scoring: the text plus one generated token, with slack
        need = max(need, 2 * getattr(quality, "generation_tokens", 0))  # greedy generations: prompt + new tokens
    return int(need)


def model_source(options: Options, ctx: Any) -> tuple[str, str | None, dict | None, str]:
    """(model path or id, load_format or None, injected quantization_config, what it is)."""
    run = ctx.run
    q = options.quantization
    if run.weights == "pretrained":
        key = checkpoint_key(options)
        checkpoints = run.model.checkpoints or {}
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
        # Per-request metrics (TTFT) need stats on; `vllm bench throughput` runs with them on too.
        "disable_log_stats": False,
        "max_logprobs": max(20, o.score_top_k),
        "seed": o.seed,
    }
    if load_format:
        kw["load_format"] = load_format
    if o.detokenize:
        kw["skip_tokenizer_init"] = False
    else:
        # Prompts are token ids (TokensPrompt) and outputs are token ids: no tokenizer needed.
        kw["skip_tokenizer_init"] = True
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


# EngineArgs flags declared with action="store_true" (no --no- form).
_STORE_TRUE_FLAGS = {"disable_log_stats"}


def kwargs_to_cli(kwargs: dict[str, Any]) -> list[str]:
    """`vllm.LLM` kwargs -> `vllm bench throughput` engine flags (same EngineArgs names)."""
    args: list[str] = []
    for key, value in kwargs.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if key in _STORE_TRUE_FLAGS:
                args += [flag] if value else []
            else:  # EngineArgs makes every bool field a BooleanOptionalAction: --x / --no-x
                args.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, (dict, list)):
            args += [flag, json.dumps(value)]
        else:
            args += [flag, str(value)]
    return args


def capability_failure(options: Options, capability: tuple[int, int] | None, gpu_name: str = "") -> RunFailure | None:
    """unsupported_hardware when the GPU is below `min_capability` (checked before anything loads)."""
    if options.min_capability is None or capability is None:
        return None
    have = capability[0] * 10 + capability[1]
    if have >= options.min_capability:
        return None
    need = f"{options.min_capability // 10}.{options.min_capability % 10}"
    what = options.quantization if options.quantization != "none" else "this backend"
    name = f" ({gpu_name})" if gpu_name else ""
    return RunFailure("unsupported_hardware",
                      f"{what} needs compute capability >= {need}, this GPU is {capability[0]}.{capability[1]}{name}")


# -- pure helpers: vLLM log lines -------------------------------------------------------------------
_RE_KERNEL_USING = re.compile(r"\bUsing (\w*Kernel\w*) for (\w[\w ]*?)\s*$")
_RE_KERNEL_SELECTED = re.compile(r"\bSelected (\w+) for (\w+)")
_RE_ATTN_AUTO = re.compile(r"Using (?:AttentionBackendEnum\.)?(\w+) attention backend out of potential backends")
_RE_ATTN_FORCED = re.compile(r"Using (?:AttentionBackendEnum\.)?([A-Z0-9_]+) backend\.")
_RE_MODEL_LOAD = re.compile(r"Model loading took ([\d.]+) GiB(?: memory)? and ([\d.]+) seconds")
_RE_KV_MEMORY = re.compile(r"Available KV cache memory: (-?[\d.]+) GiB")
_RE_KV_TOKENS = re.compile(r"GPU KV cache size: ([\d,]+) tokens")
_RE_CONCURRENCY = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
_FP8_MARLIN = "Weight-only FP8 compression will be used leveraging the Marlin kernel"


def parse_vllm_log(text: str) -> dict[str, Any]:
    """Facts vLLM logs while loading: kernels, attention backend, weights and KV cache memory."""
    facts: dict[str, Any] = {"linear_kernels": {}, "lines": []}
    for line in text.splitlines():
        line = line.rstrip()
        hit = False
        m = _RE_KERNEL_USING.search(line) or _RE_KERNEL_SELECTED.search(line)
        if m:
            facts["linear_kernels"].setdefault(m.group(2).strip(), [])
            if m.group(1) not in facts["linear_kernels"][m.group(2).strip()]:
                facts["linear_kernels"][m.group(2).strip()].append(m.group(1))
            hit = True
        if m := (_RE_ATTN_AUTO.search(line) or _RE_ATTN_FORCED.search(line)):
            facts["attention_backend"] = m.group(1)
            hit = True
        if m := _RE_MODEL_LOAD.search(line):
            facts["model_load_gib"] = float(m.group(1))
            facts["model_load_s"] = float(m.group(2))
            hit = True
        if m := _RE_KV_MEMORY.search(line):
            facts["kv_cache_gib"] = float(m.group(1))
            hit = True
        if m := _RE_KV_TOKENS.search(line):
            facts["kv_cache_tokens"] = int(m.group(1).replace(",", ""))
            hit = True
        if m := _RE_CONCURRENCY.search(line):
            facts["max_concurrency"] = float(m.group(2))
            hit = True
        if _FP8_MARLIN in line:
            facts["fp8_weight_only_marlin"] = True
            hit = True
        if hit:
            facts["lines"].append(line[-300:])
    return facts


_ERROR_PATTERNS: tuple[tuple[str, str], ...] = (
    ("out of memory", "oom"),
    ("No available memory for the cache blocks", "oom"),
    ("which is larger than the available KV cache memory", "oom"),
    ("not enough GPU memory", "oom"),
    ("is not supported for the current GPU", "unsupported_hardware"),
    ("requires compute capability", "unsupported_hardware"),
    ("requires capability", "unsupported_hardware"),
    ("No valid attention backend found", "unsupported_hardware"),
    ("Please install bitsandbytes", "missing_dependency"),
    ("No module named", "missing_dependency"),
    ("does not match the quantization method specified", "invalid_config"),
    ("Cannot find the config file for", "invalid_config"),
    ("is not supported for quantization method", "invalid_config"),
    ("Unknown quantization method", "invalid_config"),
    ("Failed to find a kernel that can implement", "invalid_config"),
    ("was requested but no", "invalid_config"),
)


def classify_error(*texts: str) -> tuple[str, str] | None:
    """(status, the line that says why) for a vLLM failure, searching the exception then the log."""
    for text in texts:
        for line in reversed(text.splitlines()):
            for needle, status in _ERROR_PATTERNS:
                if needle.lower() in line.lower():
                    return status, line.strip()[-500:]
    return None


# -- pure helpers: outputs --------------------------------------------------------------------------
def topk_row(entries: Any, k: int) -> tuple[list[float], list[int]]:
    """Top-k (log-prob, token id) of one position of vLLM's logprobs, best first.

    vLLM gives {token_id: Logprob(logprob, rank)} holding the top k plus the actual token, which may
    rank below k: sorting by log-prob and keeping k drops it.
    """
    items = sorted(((float(getattr(v, "logprob", v)), int(t)) for t, v in dict(entries).items()),
                   key=lambda x: -x[0])[:k]
    return [v for v, _ in items], [t for _, t in items]


def topk_logprobs(prompt_logprobs: list, last_logprobs: Any, k: int):
    """Rows t = 0..T-1 (distribution of token t+1): prompt_logprobs[1:] then the first sampled step's."""
    import numpy as np

    positions = list(prompt_logprobs[1:]) + [last_logprobs]
    values = np.full((len(positions), k), -np.inf, dtype=np.float32)
    indices = np.full((len(positions), k), -1, dtype=np.int64)
    for i, entries in enumerate(positions):
        if entries is None:
            raise RunFailure("crash", f"vLLM returned no log-probs for position {i}")
        vals, ids = topk_row(entries, k)
        values[i, :len(vals)] = vals
        indices[i, :len(ids)] = ids
    return values, indices


def next_token_logprobs(prompt_logprobs: list, token_ids: list[int]):
    """Log-prob of each actual next token (rows t = 0..T-2): vLLM's prompt_logprobs hold it at every
    position even when it ranks below k, so perplexity needs no full distribution. NaN where missing."""
    import numpy as np

    out = np.full(max(len(token_ids) - 1, 0), np.nan, dtype=np.float32)
    for t, entries in enumerate(list(prompt_logprobs[1:len(token_ids)])):
        hit = dict(entries or {}).get(int(token_ids[t + 1]))
        if hit is not None:
            out[t] = float(getattr(hit, "logprob", hit))
    return out


def batch_ttft_ms(start_wall: float, metrics: list[Any]) -> tuple[float | None, dict[str, float]]:
    """Batch TTFT from vLLM's per-request metrics: until every request of the batch had a first token.

    Per request, `arrival_time` (time.time() when it was added) + `first_token_latency` (seconds) is
    the wall time its first token reached the frontend. Returns (ms, per-request summary), or None
    when the metrics are missing (stats off) so the caller can fall back.
    """
    firsts, per_request = [], []
    for m in metrics:
        if m is None:
            return None, {}
        arrival = getattr(m, "arrival_time", 0.0) or 0.0
        latency = getattr(m, "first_token_latency", 0.0) or 0.0
        if arrival <= 0 or latency <= 0:
            return None, {}
        firsts.append(arrival + latency)
        per_request.append(latency * 1e3)
    if not firsts:
        return None, {}
    return (max(firsts) - start_wall) * 1e3, {
        "ttft_per_request_ms_p50": statistics.median(per_request),
        "ttft_per_request_ms_max": max(per_request),
    }


# -- worker-side introspection (pickled by reference: keep it a module-level function) ------------
def inspect_model(model: Any) -> dict[str, Any]:
    """Quant-method and kernel classes held by the loaded layers, attention backends, weight bytes."""
    quant: dict[str, int] = {}
    kernels: dict[str, int] = {}
    attention: dict[str, int] = {}
    seen: set[int] = set()
    nbytes = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            nbytes += t.numel() * t.element_size()
    for mod in model.modules():
        qm = getattr(mod, "quant_method", None)
        if qm is not None and hasattr(qm, "apply"):
            scheme = getattr(mod, "scheme", None)
            name = type(qm).__name__ + (f"/{type(scheme).__name__}" if scheme is not None else "")
            quant[name] = quant.get(name, 0) + 1
            for holder in (qm, scheme):
                for value in (vars(holder).values() if holder is not None and hasattr(holder, "__dict__") else ()):
                    cls = type(value).__name__
                    if "Kernel" in cls and not isinstance(value, type):
                        kernels[cls] = kernels.get(cls, 0) + 1
        backend = getattr(mod, "attn_backend", None)
        if backend is not None:
            get_name = getattr(backend, "get_name", None)
            try:
                name = str(get_name()) if callable(get_name) else getattr(backend, "__name__", type(backend).__name__)
            except Exception:  # noqa: BLE001 — a name is best effort
                name = getattr(backend, "__name__", type(backend).__name__)
            attention[name] = attention.get(name, 0) + 1
    return {"quant_methods": quant, "linear_kernel_layers": kernels, "attention_backends": attention,
            "weights_bytes": int(nbytes)}


def _resolved_config(llm: Any) -> dict[str, Any]:
    """What vLLM actually configured (after its own defaults), read from the frontend's config."""
    engine = llm.llm_engine
    mc = engine.model_config
    info: dict[str, Any] = {"quantization_method": mc.quantization,  # what vLLM resolved, e.g. auto_awq
                            "model_dtype": str(mc.dtype).replace("torch.", ""), "max_model_len": mc.max_model_len,
                            "enforce_eager": mc.enforce_eager}
    cfg = getattr(engine, "vllm_config", None)
    if cfg is not None:
        cc, sc, pc = cfg.cache_config, cfg.scheduler_config, cfg.parallel_config
        info.update(gpu_memory_utilization=cc.gpu_memory_utilization, kv_cache_dtype=cc.cache_dtype,
                    block_size=cc.block_size, num_gpu_blocks=cc.num_gpu_blocks,
                    enable_prefix_caching=cc.enable_prefix_caching, max_num_seqs=sc.max_num_seqs,
                    max_num_batched_tokens=sc.max_num_batched_tokens, tensor_parallel_size=pc.tensor_parallel_size)
        linear_backend = getattr(getattr(cfg, "kernel_config", None), "linear_backend", None)
        if linear_backend is not None:
            info["linear_backend_resolved"] = str(linear_backend)
    return info


def _gpu_capability() -> tuple[tuple[int, int] | None, str]:
    """Compute capability and name of the first visible GPU, via NVML (no CUDA context) or torch."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
            if visible.startswith(("GPU-", "MIG-")):
                handle = pynvml.nvmlDeviceGetHandleByUUID(visible)
            else:
                handle = pynvml.nvmlDeviceGetHandleByIndex(int(visible) if visible.isdigit() else 0)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            return (int(major), int(minor)), name.decode() if isinstance(name, bytes) else str(name)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 — fall back to torch
        pass
    try:
        import torch

        if torch.cuda.is_available():
            return tuple(torch.cuda.get_device_capability(0)), torch.cuda.get_device_name(0)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001
        pass
    return None, ""


class _LogCapture:
    """Every vLLM process's log records, appended to one file, also echoed to stdout as usual."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="quantbench-vllm-"))
        self.path = self.dir / "vllm.log"
        self.path.touch()
        self._handler: logging.Handler | None = None
        self.via_env = False
        self._env_set: list[str] = []

    def set_env(self, name: str, value: str) -> None:
        """Set an environment variable for vLLM's processes, undone by close()."""
        if name not in os.environ:
            os.environ[name] = value
            self._env_set.append(name)

    def install(self) -> None:
        """Before vLLM is imported (and before it starts processes): point its logging config here."""
        if os.environ.get("VLLM_LOGGING_CONFIG_PATH") or os.environ.get("VLLM_CONFIGURE_LOGGING", "1") == "0":
            return  # the user configured vLLM logging: only this process's records are captured
        level = os.environ.get("VLLM_LOGGING_LEVEL", "INFO").upper()
        config = {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "vllm": {"class": "vllm.logging_utils.NewLineFormatter", "datefmt": "%m-%d %H:%M:%S",
                         "format": "%(levelname)s %(asctime)s [%(fileinfo)s:%(lineno)d] %(message)s"},
                "capture": {"format": "%(process)d %(levelname)s %(name)s: %(message)s"},
            },
            "handlers": {
                "vllm": {"class": "logging.StreamHandler", "formatter": "vllm", "level": level,
                         "stream": os.environ.get("VLLM_LOGGING_STREAM", "ext://sys.stdout")},
                "capture": {"class": "logging.FileHandler", "formatter": "capture", "level": "INFO",
                            "filename": str(self.path), "mode": "a", "encoding": "utf-8"},
            },
            "loggers": {"vllm": {"handlers": ["vllm", "capture"], "level": "INFO" if level != "DEBUG" else level,
                                 "propagate": False}},
        }
        cfg_path = self.dir / "logging.json"
        cfg_path.write_text(json.dumps(config))
        self.set_env("VLLM_LOGGING_CONFIG_PATH", str(cfg_path))
        self.via_env = True

    def attach(self) -> None:
        """After import: make sure this process's vLLM logger writes here (vLLM may have been imported first)."""
        logger = logging.getLogger("vllm")
        for h in logger.handlers:
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == self.path:
                return
        self._handler = logging.FileHandler(self.path, mode="a", encoding="utf-8")
        self._handler.setLevel(logging.INFO)
        self._handler.setFormatter(logging.Formatter("%(process)d %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(self._handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)

    def text(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        logger = logging.getLogger("vllm")
        for h in list(logger.handlers):
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == self.path:
                logger.removeHandler(h)
                h.close()
        self._handler = None
        for name in self._env_set:
            os.environ.pop(name, None)
        self._env_set = []
        shutil.rmtree(self.dir, ignore_errors=True)


class VllmEngine(Engine):
    name = "vllm"
    extra = "vllm"
    Options = Options
    devices = ("cuda",)
    requires = ("vllm",)

    def __init__(self, options: Options, ctx):
        super().__init__(options, ctx)
        if options.quantization == "bitsandbytes":
            self.requires = ("vllm", "bitsandbytes")
        self.llm = None
        self.kwargs: dict[str, Any] = {}
        self.source = ""
        self.injected_qcfg: dict | None = None
        self.log_facts: dict[str, Any] = {}
        self.inspection: dict[str, Any] = {}
        self.notes: list[str] = []
        self.timing: dict[str, Any] = {}
        self.capability: tuple[int, int] | None = None
        self.gpu_name = ""
        self._log: _LogCapture | None = None

    # -- checks ---------------------------------------------------------------------------------
    @classmethod
    def validate(cls, run) -> None:
        o: Options = run.backend.options
        if run.workload.kind != "generate" or run.model.task != "causal_lm":
            raise ConfigError(f"backend {run.backend.name!r}: the vllm engine runs causal-LM generate workloads only "
                              f"(got model task {run.model.task}, workload {run.workload.kind})")
        if run.weights == "pretrained" and o.quantization in PREQUANTIZED:
            key = checkpoint_key(o)
            if key not in (run.model.checkpoints or {}):
                listed = ", ".join(sorted(run.model.checkpoints or {})) or "none"
                raise ConfigError(
                    f"backend {run.backend.name!r}: {o.quantization} needs pre-quantized weights, and model "
                    f"{run.model.name!r} lists no {key!r} checkpoint (model.checkpoints: {listed}); "
                    f"add one, or use weights=synthetic")
        if run.weights == "synthetic" and o.quantization == "compressed-tensors" and o.quantization_config is None:
            raise ConfigError(f"backend {run.backend.name!r}: synthetic compressed-tensors weights need "
                              f"backend.options.quantization_config (the checkpoint's config.json entry)")
        if o.max_model_len is not None and o.max_model_len < auto_max_model_len(run):
            raise ConfigError(f"backend.options.max_model_len: {o.max_model_len} is shorter than the workload "
                              f"needs ({auto_max_model_len(run)} tokens)")

    def check(self) -> RunFailure | None:
        problem = super().check()
        if problem:
            return problem
        cap = self.ctx.extra.get("compute_capability")
        if cap is not None:
            self.capability, self.gpu_name = tuple(cap), str(self.ctx.extra.get("gpu_name", ""))
        else:
            self.capability, self.gpu_name = _gpu_capability()
        return capability_failure(self.options, self.capability, self.gpu_name)

    # -- loading --------------------------------------------------------------------------------
    def prepare(self) -> None:
        model_source(self.options, self.ctx)  # config-only folder for dummy weights; real files otherwise

    def load(self) -> None:
        # The worker process has touched CUDA (device checks, NVML, env capture): a forked engine core
        # could not re-initialise it, so vLLM's engine process must be spawned.
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        if importlib.util.find_spec("flashinfer") is None:
            # vLLM 0.26's sampler probes FlashInfer at start-up and dies without it (seen on an H100
            # with the minimal wheel set); the PyTorch sampler is what runs then anyway.
            os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
        o = self.options
        self._log = _LogCapture()
        self._log.install()
        if o.introspect:
            # apply_model sends a function to the engine-core process; vLLM pickles it only with this set.
            self._log.set_env("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        source = model_source(o, self.ctx)
        _, _, self.injected_qcfg, self.source = source
        self.kwargs = llm_kwargs(o, self.ctx, source)
        if o.detokenize and not self.ctx.files.tokenizer_source():
            raise RunFailure("invalid_config", f"detokenize: model {self.ctx.run.model.name} has no tokenizer")
        import vllm

        self._log.attach()
        try:
            self.llm = vllm.LLM(**self.kwargs)
        except Exception as exc:  # noqa: BLE001 — classified below
            found = classify_error(f"{type(exc).__name__}: {exc}", self._log.text()[-20000:])
            if found:
                raise RunFailure(*found) from exc
            raise
        self.log_facts = parse_vllm_log(self._log.text())
        if o.introspect:
            try:
                self.inspection = self.llm.apply_model(inspect_model)[0]
            except Exception as exc:  # noqa: BLE001 — fall back to the per-layer quant names
                self.notes.append(f"apply_model introspection failed ({type(exc).__name__}: {exc}); "
                                  "kernels are from vLLM's log lines")
                self.inspection = self._inspection_from_text()

    def _inspection_from_text(self) -> dict[str, Any]:
        try:
            text = self.llm.collective_rpc("get_model_inspection")[0]
        except Exception:  # noqa: BLE001
            return {}
        quant: dict[str, int] = {}
        for name in re.findall(r"quant=(\w+)", text):
            quant[name] = quant.get(name, 0) + 1
        return {"quant_methods": quant}

    # -- work -----------------------------------------------------------------------------------
    def _sampling(self, **kw):
        from vllm import SamplingParams

        return SamplingParams(temperature=0.0, detokenize=self.options.detokenize, **kw)

    def _check_lengths(self, lengths: list[int]) -> None:
        limit = self.kwargs.get("max_model_len")
        if limit and max(lengths) > limit:
            raise RunFailure("invalid_config", f"a sequence of {max(lengths)} tokens exceeds max_model_len {limit}")

    def generate(self, prompts: list[list[int]], new_tokens: int, timer) -> list[list[int]]:
        """All prompts in one `llm.generate` call: vLLM's offline throughput mode (continuous batching).

        e2e: host clock around the blocking call. TTFT: until every request had its first token, from
        vLLM's per-request metrics; if they are missing, a separate max_tokens=1 call on the same batch.
        """
        self._check_lengths([len(p) + new_tokens for p in prompts])
        inputs = [{"prompt_token_ids": [int(t) for t in p]} for p in prompts]
        params = self._sampling(max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True)
        start_wall = time.time()
        t0 = time.perf_counter()
        outs = self.llm.generate(inputs, params, use_tqdm=False)
        e2e_ms = (time.perf_counter() - t0) * 1e3
        tokens = [list(o.outputs[0].token_ids) for o in outs]
        ttft, summary = batch_ttft_ms(start_wall, [getattr(o, "metrics", None) for o in outs])
        if ttft is not None:
            self.timing = {"ttft_method": "vLLM request metrics: arrival_time + first_token_latency, latest "
                                          "request of the batch; e2e: host clock around llm.generate", **summary}
        else:
            one = self._sampling(max_tokens=1, min_tokens=1, ignore_eos=True)
            t1 = time.perf_counter()
            self.llm.generate(inputs, one, use_tqdm=False)
            ttft = (time.perf_counter() - t1) * 1e3
            self.timing = {"ttft_method": "separate max_tokens=1 call on the same batch (request metrics "
                                          "missing); e2e: host clock around llm.generate"}
        timer.external(min(ttft, e2e_ms), e2e_ms, new_tokens)
        return tokens

    def score(self, token_ids: list[int]) -> LogProbs:
        if len(token_ids) < 2:
            raise RunFailure("invalid_config", "score needs at least 2 tokens")
        self._check_lengths([len(token_ids) + 1])
        k = self.options.score_top_k
        params = self._sampling(max_tokens=1, prompt_logprobs=k, logprobs=k)
        out = self.llm.generate([{"prompt_token_ids": [int(t) for t in token_ids]}], params, use_tqdm=False)[0]
        if out.prompt_logprobs is None or not out.outputs[0].logprobs:
            raise RunFailure("crash", "vLLM returned no log-probs")
        values, indices = topk_logprobs(out.prompt_logprobs, out.outputs[0].logprobs[0], k)
        return LogProbs(values=values, indices=indices,
                        next_token_values=next_token_logprobs(out.prompt_logprobs, token_ids))

    # -- reporting ------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        import importlib.metadata as md

        o = self.options
        info: dict[str, Any] = {"engine": "vllm", "quantization": o.quantization, "dtype": o.dtype,
                                "linear_backend": o.linear_backend, "weights_source": self.source}
        for pkg in ("vllm", "torch", "bitsandbytes"):
            try:
                info[pkg] = md.version(pkg)
            except md.PackageNotFoundError:
                pass
        if self.capability:
            info["compute_capability"] = f"{self.capability[0]}.{self.capability[1]}"
        if self.injected_qcfg:
            info["synthetic_quantization_config"] = self.injected_qcfg
        if self.kwargs:
            info["llm_kwargs"] = {k: v for k, v in self.kwargs.items() if k != "model"}
        if self.llm is not None:
            try:
                info.update(_resolved_config(self.llm))
            except Exception as exc:  # noqa: BLE001 — describing is best effort
                info["resolved_config_error"] = f"{type(exc).__name__}: {exc}"
        lf = self.log_facts
        kernels = sorted({k for ks in lf.get("linear_kernels", {}).values() for k in ks}
                         | set(self.inspection.get("linear_kernel_layers", {})))
        if kernels:
            info["linear_kernels"] = kernels
        if lf.get("linear_kernels"):
            info["linear_kernels_by_method"] = lf["linear_kernels"]
        for key in ("quant_methods", "linear_kernel_layers", "attention_backends"):
            if self.inspection.get(key):
                info[key] = self.inspection[key]
        attn = lf.get("attention_backend") or ", ".join(sorted(self.inspection.get("attention_backends", {})))
        if attn:
            info["attention_backend"] = attn
        for key in ("kv_cache_tokens", "max_concurrency", "model_load_s"):
            if key in lf:
                info[key] = lf[key]
        if lf.get("fp8_weight_only_marlin") or (o.quantization == "fp8" and any("Marlin" in k for k in kernels)):
            info["fp8_mode"] = "weight-only FP8 via Marlin (GPU lacks native FP8: capability < 8.9)"
        elif o.quantization == "fp8":
            info["fp8_mode"] = "W8A8 dynamic FP8"
        if self.timing:
            info["timing"] = self.timing
        if lf.get("lines"):
            info["log_lines"] = lf["lines"][:40]
        if self.notes:
            info["notes"] = self.notes
        return info

    def memory_facts(self) -> dict[str, float]:
        facts: dict[str, float] = {}
        if "weights_bytes" in self.inspection:
            facts["weights_mib"] = round(self.inspection["weights_bytes"] / MIB, 1)
        if "model_load_gib" in self.log_facts:
            facts["model_load_mib"] = round(self.log_facts["model_load_gib"] * GIB_IN_MIB, 1)
            facts.setdefault("weights_mib", facts["model_load_mib"])
        if "kv_cache_gib" in self.log_facts:
            facts["kv_cache_mib"] = round(self.log_facts["kv_cache_gib"] * GIB_IN_MIB, 1)
        return {k: v for k, v in facts.items() if math.isfinite(v)}

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001 — best effort; the process ends after a run anyway
                pass
            del llm
            try:
                from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

                cleanup_dist_env_and_memory()
            except Exception:  # noqa: BLE001
                pass
        if self._log is not None:
            self._log.close()
            self._log = None


ENGINE = VllmEngine
