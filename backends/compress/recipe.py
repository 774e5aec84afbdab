"""The typed `compress:` block of a backend YAML: which llm-compressor recipe makes the checkpoint."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from backends.contract import ConfigError

Method = Literal["gptq", "awq", "fp8_dynamic"]


@dataclass(frozen=True)
class Recipe:
    # gptq / awq: 4-bit integer weights in groups, 16-bit activations (W4A16), calibrated;
    # fp8_dynamic: FP8 e4m3 weights per output channel, activations quantized per token at run time
    # (llm-compressor's FP8_DYNAMIC scheme), no calibration.
    method: Method
    bits: int = 4
    # Weights per scale along the input dim. 64: SmolLM2's hidden 576 is not a multiple of 128.
    group_size: int = 64
    # GPTQ is symmetric (no zero points); AWQ keeps a zero point per group (asymmetric).
    symmetric: bool = True
    # Calibration: articles of the BBC News *train* split (never the evaluation articles), each cut to
    # `calibration_seq_len` tokens.
    calibration_samples: int = 16
    calibration_seq_len: int = 256
    ignore: list[str] = field(default_factory=lambda: ["lm_head"])
    # GPTQ's Hessian dampening (llm-compressor default 0.01).
    dampening_frac: float = 0.01

    def __post_init__(self) -> None:
        p = "backend.options.compress."
        if self.method == "fp8_dynamic":
            if self.bits != 8:
                raise ConfigError(f"{p}bits: fp8_dynamic stores 8-bit weights, got {self.bits}")
        elif self.bits not in (4, 8):
            raise ConfigError(f"{p}bits: {self.bits} is not valid for {self.method}; choose 4 or 8")
        if self.method != "fp8_dynamic" and self.group_size not in (32, 64, 128):
            raise ConfigError(f"{p}group_size: {self.group_size} is not valid; choose 32, 64 or 128")
        for name in ("calibration_samples", "calibration_seq_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{p}{name}: must be > 0, got {getattr(self, name)}")

    @property
    def calibrated(self) -> bool:
        return self.method != "fp8_dynamic"

    def key(self) -> dict[str, Any]:
        """What the checkpoint depends on (fp8_dynamic: no calibration, no groups)."""
        d: dict[str, Any] = {"method": self.method, "bits": self.bits, "ignore": sorted(self.ignore)}
        if self.calibrated:
            d.update(group_size=self.group_size, symmetric=self.symmetric, samples=self.calibration_samples,
                     seq_len=self.calibration_seq_len)
        if self.method == "gptq":
            d["dampening_frac"] = self.dampening_frac
        return d

    def quantization_config(self) -> dict[str, Any]:
        """The config.json `quantization_config` a checkpoint of this recipe carries (as llm-compressor
        0.14 writes it): what dummy-weight loaders (vLLM, weights=synthetic) need to give layers their
        packed shapes without building a checkpoint."""
        if self.method == "fp8_dynamic":
            weights = {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True, "dynamic": False}
            acts: dict[str, Any] | None = {"num_bits": 8, "type": "float", "strategy": "token", "symmetric": True,
                                           "dynamic": True}
            fmt = "float-quantized"
        else:
            weights = {"num_bits": self.bits, "type": "int", "strategy": "group", "group_size": self.group_size,
                       "symmetric": self.symmetric, "dynamic": False}
            acts, fmt = None, "pack-quantized"
        return {"quant_method": "compressed-tensors", "format": fmt, "quantization_status": "compressed",
                "ignore": list(self.ignore), "kv_cache_scheme": None, "sparsity_config": {},
                "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": acts,
                                              "output_activations": None, "format": fmt}}}

    def modifier(self) -> Any:
        """The llm-compressor modifier for this recipe (imports llm-compressor)."""
        if self.method == "fp8_dynamic":
            from llmcompressor.modifiers.quantization import QuantizationModifier

            return QuantizationModifier(targets=["Linear"], ignore=list(self.ignore), scheme="FP8_DYNAMIC")
        weights = {"num_bits": self.bits, "type": "int", "strategy": "group", "group_size": self.group_size,
                   "symmetric": self.symmetric}
        groups = {"group_0": {"targets": ["Linear"], "weights": weights}}
        if self.method == "gptq":
            from llmcompressor.modifiers.quantization import GPTQModifier

            return GPTQModifier(targets=["Linear"], ignore=list(self.ignore), config_groups=groups,
                                dampening_frac=self.dampening_frac)
        from llmcompressor.modifiers.awq import AWQModifier

        return AWQModifier(targets=["Linear"], ignore=list(self.ignore), config_groups=groups)
