"""What holds a loaded model's weights: the evidence that a backend's quantization really ran.

Each engine counts its linear layers after load, by the class or method that computes them
(`Linear8bitLt`, `AWQMarlinLinearMethod`, `MatMulNBits`, ...), whether that one is quantized, how many
logical weights (inputs x outputs) each holds and how many bytes it stores for them (packed weights
plus scales and zero points). The runner compares that with what the backend's YAML expects, so a
"gptq" row whose layers all ran unquantized can never read `ok`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Names of unquantized layers kept in the census: enough to see a pattern, bounded for huge models.
_MAX_NAMES = 24


@dataclass
class WeightCensus:
    layers: dict[str, int] = field(default_factory=dict)  # layer kind -> count
    quantized_kinds: list[str] = field(default_factory=list)  # the kinds above that are quantized
    quantized_layers: int = 0
    linear_layers: int = 0
    quantized_params: int = 0  # logical weights of the quantized layers
    quantized_bytes: int = 0  # bytes those layers store (packed weights, scales, zero points)
    linear_params: int = 0  # the same over every linear layer, quantized or not
    linear_bytes: int = 0
    unquantized: list[str] = field(default_factory=list)  # names of linear layers left unquantized (capped)
    unquantized_total: int = 0
    weights_bytes: int | None = None  # every weight and buffer the engine holds for the model
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, quantized: bool, name: str, params: int, nbytes: int) -> None:
        self.layers[kind] = self.layers.get(kind, 0) + 1
        self.linear_layers += 1
        self.linear_params += int(params)
        self.linear_bytes += int(nbytes)
        if quantized:
            if kind not in self.quantized_kinds:
                self.quantized_kinds.append(kind)
            self.quantized_layers += 1
            self.quantized_params += int(params)
            self.quantized_bytes += int(nbytes)
        else:
            self.unquantized_total += 1
            if len(self.unquantized) < _MAX_NAMES:
                self.unquantized.append(name)

    @staticmethod
    def _bits(nbytes: int, params: int) -> float | None:
        return round(8.0 * nbytes / params, 3) if params > 0 else None

    @property
    def quantized_bits(self) -> float | None:
        """Bits stored per logical weight in the quantized layers (4-bit group-128 AWQ: ~4.16)."""
        return self._bits(self.quantized_bytes, self.quantized_params)

    @property
    def linear_bits(self) -> float | None:
        """Bits stored per logical weight over all linear layers."""
        return self._bits(self.linear_bytes, self.linear_params)

    def summary(self) -> str:
        """`Linear8bitLt x210, Linear x1 (lm_head); 8.0 bits/weight`: what a table cell shows."""
        kinds = ", ".join(f"{k} x{n}" for k, n in sorted(self.layers.items(), key=lambda kv: -kv[1]))
        bits = self.quantized_bits if self.quantized_layers else self.linear_bits
        text = f"{self.quantized_layers}/{self.linear_layers} linear layers quantized ({kinds})"
        return text + (f"; {bits:g} bits/weight" if bits is not None else "")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(quantized_bits=self.quantized_bits, linear_bits=self.linear_bits, summary=self.summary())
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "WeightCensus":
        known = WeightCensus.__dataclass_fields__
        return WeightCensus(**{k: v for k, v in d.items() if k in known})
