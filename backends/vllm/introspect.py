"""What the loaded model holds, read inside vLLM's worker, and the weight census built from it.

`inspect_model` runs in the worker process through `LLM.apply_model`, which pickles it by reference:
it must stay a module-level function of an importable module, and return plain data (dicts, lists,
numbers), never tensors. vLLM returns one result per worker; quantbench reads rank 0's, so with
tensor parallelism every count and byte below is that rank's shard (the census says so).

A linear layer is a vLLM `LinearBase` (vllm/model_executor/layers/linear.py); its `quant_method`
is the class that computes it (`AutoGPTQLinearMethod`, `AutoAWQMarlinLinearMethod`,
`Fp8LinearMethod`, `BitsAndBytesLinearMethod`, `CompressedTensorsLinearMethod` + the layer's
`scheme`, or `UnquantizedLinearMethod`), and the GEMM kernel object that method (or scheme) chose
is one of its attributes (`self.kernel = MacheteLinearKernel(...)` in auto_gptq.py).
"""
from __future__ import annotations

from typing import Any

from backends.contract import WeightCensus

LINEAR_BASE = "LinearBase"
# vLLM's own model inspection treats a method whose class name says "Unquantized" as not
# quantized (vllm/model_inspection.py, _get_module_info); so does the census.
UNQUANTIZED_MARK = "Unquantized"


def _linear_base() -> type | None:
    try:
        from vllm.model_executor.layers.linear import LinearBase

        return LinearBase
    except Exception:  # noqa: BLE001 — vLLM absent or moved: fall back to the class name
        return None


def is_linear(module: Any, base: type | None) -> bool:
    if base is not None and isinstance(module, base):
        return True
    return any(c.__name__ == LINEAR_BASE for c in type(module).__mro__)


def kernel_names(*holders: Any) -> list[str]:
    """Class names of the kernel objects a quant method or scheme holds (`MacheteLinearKernel`)."""
    found: list[str] = []
    for holder in holders:
        for value in (vars(holder).values() if holder is not None and hasattr(holder, "__dict__") else ()):
            name = type(value).__name__
            if "Kernel" in name and not isinstance(value, type) and name not in found:
                found.append(name)
    return found


def _tensor_bytes(t: Any) -> int:
    return int(t.numel() * t.element_size()) if t is not None and hasattr(t, "numel") else 0


def _quant_state_bytes(param: Any) -> int:
    """bitsandbytes absmax scales vLLM keeps beside a packed weight (`bnb_quant_state`, one per shard)."""
    states = getattr(param, "bnb_quant_state", None)
    if states is None:
        return 0
    nbytes = 0
    for qs in (states.values() if isinstance(states, dict) else [states]):
        nbytes += _tensor_bytes(getattr(qs, "absmax", None))
        nested = getattr(qs, "state2", None)
        if nested is not None:
            nbytes += _tensor_bytes(getattr(nested, "absmax", None))
    return nbytes


def layer_weight_bytes(module: Any) -> tuple[int, list[str]]:
    """Bytes a linear layer stores for its weights: its own parameters, buffers and tensor attributes
    (packed weight, scales, zero points, g_idx, ...) plus bitsandbytes quant states; bias excluded.
    Also the dtypes seen, as evidence (`int32` packed, `float16` plain)."""
    import torch

    seen: set[int] = set()
    nbytes = 0
    dtypes: set[str] = set()
    tensors = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
    tensors += [(k, v) for k, v in vars(module).items() if isinstance(v, torch.Tensor)]
    for name, t in tensors:
        if name == "bias" or t is None or id(t) in seen:
            continue
        seen.add(id(t))
        nbytes += _tensor_bytes(t) + _quant_state_bytes(t)
        if t.numel():
            dtypes.add(str(t.dtype).replace("torch.", ""))
    return nbytes, sorted(dtypes)


def linear_entry(name: str, module: Any) -> dict[str, Any]:
    """One linear layer: what computes it, whether that is quantized, its logical size and bytes."""
    qm = getattr(module, "quant_method", None)
    scheme = getattr(module, "scheme", None)
    method = type(qm).__name__ if qm is not None else "NoQuantMethod"
    # Per-rank sizes (ColumnParallel/RowParallel); replicated layers only have the full ones.
    k = getattr(module, "input_size_per_partition", None) or getattr(module, "input_size", 0)
    n = getattr(module, "output_size_per_partition", None) or getattr(module, "output_size", 0)
    nbytes, dtypes = layer_weight_bytes(module)
    return {"name": name, "method": method, "scheme": type(scheme).__name__ if scheme is not None else None,
            "kernel": "+".join(kernel_names(qm, scheme)) or None,
            "quantized": qm is not None and UNQUANTIZED_MARK not in method,
            "params": int(k) * int(n), "bytes": int(nbytes), "dtypes": dtypes,
            "tp_rank": int(getattr(module, "tp_rank", 0) or 0), "tp_size": int(getattr(module, "tp_size", 1) or 1)}


def layer_kind(entry: dict[str, Any]) -> str:
    """`AutoGPTQLinearMethod+MacheteLinearKernel`, `CompressedTensorsLinearMethod(Scheme)+Kernel`, ..."""
    kind = entry["method"]
    if entry.get("scheme"):
        kind += f"({entry['scheme']})"
    if entry.get("kernel"):
        kind += f"+{entry['kernel']}"
    return kind


def _count(d: dict[str, int], key: str) -> None:
    d[key] = d.get(key, 0) + 1


def _attention_name(backend: Any) -> str:
    get_name = getattr(backend, "get_name", None)
    try:
        return str(get_name()) if callable(get_name) else getattr(backend, "__name__", type(backend).__name__)
    except Exception:  # noqa: BLE001 — a name is best effort
        return getattr(backend, "__name__", type(backend).__name__)


def inspect_model(model: Any) -> dict[str, Any]:
    """Linear layers (method, kernel, size, bytes), other quant methods, attention backends, weight bytes.

    Runs inside vLLM's worker (apply_model): keep it module-level and its result plain data.
    """
    base = _linear_base()
    linear: list[dict[str, Any]] = []
    methods: dict[str, int] = {}
    kernels: dict[str, int] = {}
    other: dict[str, int] = {}
    attention: dict[str, int] = {}
    for name, mod in model.named_modules():
        if is_linear(mod, base):
            entry = linear_entry(name, mod)
            linear.append(entry)
            _count(methods, entry["method"] + (f"/{entry['scheme']}" if entry["scheme"] else ""))
            _count(kernels, entry["kernel"] or entry["method"])
        else:
            qm = getattr(mod, "quant_method", None)
            if qm is not None and hasattr(qm, "apply"):
                _count(other, type(qm).__name__)
        backend = getattr(mod, "attn_backend", None)
        if backend is not None:
            _count(attention, _attention_name(backend))
    seen: set[int] = set()
    nbytes = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            nbytes += _tensor_bytes(t)
    return {"linear_layers": linear, "quant_methods": methods, "linear_kernel_layers": kernels,
            "other_quant_methods": other, "attention_backends": attention, "weights_bytes": int(nbytes)}


def census_from_inspection(inspection: dict[str, Any]) -> WeightCensus | None:
    """The engine contract's census from inspect_model's result; None when there was no inspection."""
    layers = inspection.get("linear_layers")
    if not layers:
        return None
    census = WeightCensus(weights_bytes=inspection.get("weights_bytes"))
    for e in layers:
        census.add(layer_kind(e), bool(e["quantized"]), e["name"], e["params"], e["bytes"])
    tp_size = max(int(e.get("tp_size", 1)) for e in layers)
    rank = int(layers[0].get("tp_rank", 0))
    census.notes.append(
        f"vLLM worker of tensor-parallel rank {rank} of {tp_size}: counts, logical weights "
        f"(input_size_per_partition x output_size_per_partition) and bytes are that rank's"
        + (" shard" if tp_size > 1 else ", i.e. the whole model"))
    census.notes.append("bytes per layer: its own parameters, buffers and tensor attributes (packed weights, "
                        "scales, zero points, g_idx, bitsandbytes absmax), bias excluded")
    return census


def inspection_from_text(text: str) -> dict[str, Any]:
    """Fallback when apply_model fails: the quant method names in vLLM's model-inspection text.
    That text folds repeated layers ("47 x LlamaDecoderLayer"), so it gives names, not counts."""
    import re

    return {"quant_methods_seen": sorted(set(re.findall(r"quant=(\w+)", text)))}


def resolved_config(llm: Any) -> dict[str, Any]:
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
        qc = getattr(cfg, "quant_config", None)
        if qc is not None:
            # After maybe_update_config: the module lists vLLM really decided with.
            for attr in ("modules_in_block_to_quantize", "modules_to_not_convert"):
                value = getattr(qc, attr, None)
                if isinstance(value, list):
                    info[f"quant_config_{attr}"] = value[:32]
    return info
