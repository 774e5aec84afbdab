"""What a compressed-tensors checkpoint holds, and whether the loaded layers carry its values.

On CPU, transformers decompresses the checkpoint on load: every layer is then a plain `Linear` with a
float32 weight, so the class names and bytes of the loaded model prove nothing. The census is made
from two pieces of evidence instead, and a layer counts as quantized only with both:
- the checkpoint's own tensors for that layer (safetensors header: `weight_packed` int32 + scales and
  zero points for pack-quantized int4; a float8_e4m3fn `weight` + scales for FP8), whose bytes are
  what the layer stores (so bits/weight = 4.25 for int4 group 64 with 16-bit scales);
- the loaded float weight lies on the quantization grid: sampled rows are reproduced exactly by
  re-quantizing with the checkpoint's scales (int: at most 2^bits distinct values per group;
  FP8: w / scale is exactly representable in float8_e4m3fn).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backends.contract import WeightCensus

# Rows per layer checked against the grid (cheap; the checkpoint header is the bulk of the evidence).
_SAMPLE_ROWS = 4
_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "F8_E4M3": 1,
          "F8_E5M2": 1, "BOOL": 1}
_QUANTIZED_DTYPES = ("I32", "I8", "U8", "F8_E4M3", "F8_E5M2")


def checkpoint_tensors(folder: str | Path) -> dict[str, dict[str, tuple[str, list[int]]]]:
    """module name -> {tensor name: (dtype, shape)} from the safetensors headers (no data read)."""
    out: dict[str, dict[str, tuple[str, list[int]]]] = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            module, _, tensor = name.rpartition(".")
            out.setdefault(module, {})[tensor] = (meta["dtype"], list(meta["shape"]))
    return out


def quantization_config(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "config.json").read_text()).get("quantization_config") or {}


def checkpoint_summary(folder: str | Path) -> dict[str, Any]:
    """The checkpoint's quantization_config in one line per group, for describe()."""
    qc = quantization_config(folder)
    groups = {}
    for name, g in (qc.get("config_groups") or {}).items():
        w, a = g.get("weights") or {}, g.get("input_activations") or {}
        text = (f"weights {w.get('type')}{w.get('num_bits')} {w.get('strategy')}"
                + (f" {w.get('group_size')}" if w.get("group_size") else "")
                + (" symmetric" if w.get("symmetric") else " asymmetric"))
        if a:
            text += f"; activations {a.get('type')}{a.get('num_bits')} per {a.get('strategy')}" + \
                    (" dynamic" if a.get("dynamic") else " static")
        groups[name] = text
    return {"quant_method": qc.get("quant_method"), "format": qc.get("format"), "groups": groups,
            "ignore": qc.get("ignore"), "compressed_tensors_version": qc.get("version")}


def _stored_bytes(tensors: dict[str, tuple[str, list[int]]]) -> int:
    total = 0
    for dtype, shape in tensors.values():
        n = 1
        for s in shape:
            n *= s
        total += n * _BYTES.get(dtype, 4)
    return total


def _on_grid(module: Any, scheme: Any) -> bool | None:
    """Do sampled rows of the loaded (float) weight equal their re-quantized values? None: cannot tell."""
    import torch

    weight = getattr(module, "weight", None)
    scale = getattr(module, "weight_scale", None)
    w_args = getattr(scheme, "weights", None)
    if weight is None or scale is None or w_args is None:
        return None
    rows = torch.linspace(0, weight.shape[0] - 1, min(_SAMPLE_ROWS, weight.shape[0])).long()
    w = weight.detach()[rows].float()
    s = scale.detach()[rows].float()
    if str(getattr(w_args.type, "value", w_args.type)) == "float":
        q = (w / s).to(torch.float8_e4m3fn).float() * s
        return bool(torch.equal(q, w))
    group = w_args.group_size or w.shape[1]
    groups = w.reshape(w.shape[0], -1, group)
    levels = 2 ** int(w_args.num_bits)
    return all(int(torch.unique(g).numel()) <= levels for row in groups for g in row)


def checkpoint_census(model: Any, folder: str | Path, weights_bytes: int | None = None) -> WeightCensus:
    """Linear layers of a model loaded from a compressed-tensors checkpoint, judged on the checkpoint."""
    import torch

    stored = checkpoint_tensors(folder)
    census = WeightCensus(weights_bytes=weights_bytes)
    off_grid: list[str] = []
    fmt = quantization_config(folder).get("format") or "compressed"
    for name, m in model.named_modules():
        if not isinstance(m, torch.nn.Linear):
            continue
        tensors = stored.get(name, {})
        scheme = getattr(m, "quantization_scheme", None)
        held = [t for t, (dtype, _) in tensors.items() if t.startswith("weight") and dtype in _QUANTIZED_DTYPES
                and t != "weight_shape"]
        params = m.in_features * m.out_features
        if not tensors:  # tied head: no tensor of its own in the checkpoint
            nbytes = int(m.weight.numel() * m.weight.element_size())
        else:
            nbytes = _stored_bytes({t: v for t, v in tensors.items() if t != "weight_shape" and t != "bias"})
        quantized = False
        if held and scheme is not None:
            grid = _on_grid(m, scheme)
            quantized = grid is not False
            if grid is False:
                off_grid.append(name)
        kind = f"{fmt} Linear (checkpoint), decompressed to {str(m.weight.dtype).replace('torch.', '')}" \
            if quantized else type(m).__name__
        census.add(kind, quantized, name, params, nbytes)
    census.notes.append("bytes are what the checkpoint stores per layer (packed weights, scales, zero points); "
                        "on load transformers decompresses them to float weights, checked to lie on the "
                        f"quantization grid ({_SAMPLE_ROWS} rows per layer)")
    if off_grid:
        census.notes.append(f"{len(off_grid)} layers hold quantized tensors in the checkpoint but their loaded "
                            f"weights are off the grid, counted unquantized: {off_grid[:8]}")
    return census
