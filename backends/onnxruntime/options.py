"""The ONNX Runtime engine's typed options (a backend YAML's `options:`) and its execution providers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from backends.contract import ConfigError

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"

# Precision -> graph dtypes it can be built on (the first is the default).
PRECISION_DTYPES = {"fp32": ("float32",), "fp16": ("float16",), "int8": ("float32",),
                    "int4": ("float32", "float16")}
INT8_OP_TYPES = ("MatMul", "Gather", "Conv", "Attention", "LSTM", "EmbedLayerNormalization", "Transpose")
INT4_OP_TYPES = ("MatMul", "Gather")
# Options that only mean something for one precision: set elsewhere, they are a mistake.
ONLY_FOR = {"per_channel": "int8", "reduce_range": "int8", "block_size": "int4", "symmetric": "int4",
            "accuracy_level": "int4"}


@dataclass(frozen=True)
class Options:
    precision: Literal["fp32", "fp16", "int8", "int4"] = "fp32"
    # auto: CUDA when the run's device is cuda, else CPU.
    providers: Literal["auto", "cpu", "cuda"] = "auto"
    # Graph dtype (activations, KV cache, unquantized weights); null: float16 for fp16, else float32.
    dtype: Literal["float32", "float16"] | None = None
    opset: int = 18
    # Which ops to quantize (int8: quantize_dynamic op types; int4: MatMul / Gather). null: MatMul.
    op_types: list[str] | None = None
    # A tied LM head (SmolLM2) stays float regardless: its weight reaches MatMul through a Transpose.
    quantize_head: bool = False
    # int8 (quantize_dynamic). ORT advises reduce_range on CPUs without VNNI, per_channel above all:
    # on an AVX2-only CPU SmolLM2 scored KL 9.7 per-channel without it, 0.59 with it.
    per_channel: bool | None = None
    reduce_range: bool | None = None
    # int4 (MatMulNBits): block_size 32 divides every hidden size we meet (SmolLM2's 576 is not a
    # multiple of 128); accuracy_level 0-4 (4 = int8 compute on CPU), null = ORT's default.
    block_size: int | None = None
    symmetric: bool | None = None
    accuracy_level: int | None = None
    # CUDA EP: TF32 matmuls for float32 graphs (ORT's default is on; torch's, and so the reference's, is off).
    tf32: bool = False
    # Session
    threads: int = 0  # intra-op threads; 0 = ORT's default (physical cores)
    graph_optimization: Literal["disabled", "basic", "extended", "all"] = "all"

    def __post_init__(self) -> None:
        dtypes = PRECISION_DTYPES[self.precision]
        if self.dtype is not None and self.dtype not in dtypes:
            raise ConfigError(f"backend.options.dtype: precision {self.precision} runs on "
                              f"{' or '.join(dtypes)}, not {self.dtype}")
        for name, precision in ONLY_FOR.items():
            if getattr(self, name) is not None and self.precision != precision:
                raise ConfigError(f"backend.options.{name}: only applies to precision {precision}, "
                                  f"not {self.precision}")
        if self.op_types is not None:
            valid = {"int8": INT8_OP_TYPES, "int4": INT4_OP_TYPES}.get(self.precision)
            if valid is None:
                raise ConfigError(f"backend.options.op_types: only applies to precision int8 or int4, "
                                  f"not {self.precision}")
            bad = [t for t in self.op_types if t not in valid] or ([] if self.op_types else ["(empty)"])
            if bad:
                raise ConfigError(f"backend.options.op_types: {', '.join(bad)} not valid for "
                                  f"{self.precision}; choose from {', '.join(valid)}")
        if self.block_size is not None and (self.block_size < 16 or self.block_size & (self.block_size - 1)):
            raise ConfigError(f"backend.options.block_size: must be a power of 2 >= 16 (16, 32, 64, 128, ...), "
                              f"got {self.block_size}")
        if self.accuracy_level is not None and not 0 <= self.accuracy_level <= 4:
            raise ConfigError(f"backend.options.accuracy_level: must be 0-4 or null, got {self.accuracy_level}")
        if not 18 <= self.opset <= 23:  # the dynamo exporter's own range
            raise ConfigError(f"backend.options.opset: must be 18-23, got {self.opset}")
        if self.threads < 0:
            raise ConfigError(f"backend.options.threads: must be >= 0 (0 = ORT's default), got {self.threads}")

    @property
    def graph_dtype(self) -> str:
        return self.dtype or PRECISION_DTYPES[self.precision][0]

    def quantization(self) -> dict[str, Any]:
        """The effective settings of the precision's rewrite (defaults filled in)."""
        if self.precision == "int8":
            return {"method": "quantize_dynamic", "op_types": self.op_types or ["MatMul"],
                    "per_channel": bool(self.per_channel), "reduce_range": bool(self.reduce_range),
                    "quantize_head": self.quantize_head}
        if self.precision == "int4":
            return {"method": "MatMulNBits", "op_types": self.op_types or ["MatMul"],
                    "block_size": self.block_size or 32,
                    "symmetric": True if self.symmetric is None else self.symmetric,
                    "accuracy_level": self.accuracy_level, "quantize_head": self.quantize_head}
        return {}


def resolve_providers(choice: str, device: str) -> list[str]:
    """Execution providers in priority order; CPU always last, since ORT places leftovers there."""
    if choice == "cuda" or (choice == "auto" and device == "cuda"):
        return [CUDA_EP, CPU_EP]
    return [CPU_EP]
