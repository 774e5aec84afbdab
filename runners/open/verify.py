"""After load: did the engine run what the backend's name promises?

The backend YAML's `expect` (runners.plan.config.Expectation) is checked against the engine's weight
census. A failed check is the run's status `not_applied`, with the evidence in its reason; the run
is not measured, because its numbers would carry a name they do not deserve.
"""
from __future__ import annotations

from typing import Any, Callable

from backends.contract import WeightCensus
from runners.plan.config import Expectation

# Stored bits per weight may fall this far below the nominal width (never by much: packing is exact).
_BELOW = 0.5


def verdict(expect: Expectation, census: WeightCensus | None, backend: str,
            describe: Callable[[], dict[str, Any]] | None = None) -> str | None:
    """None when the census (and, for the KV cache, the engine's describe()) proves the expectation;
    else why not, with the evidence."""
    if expect.empty:
        return None
    weights = _weights_verdict(expect, census, backend)
    if weights or expect.kv_cache_dtype is None:
        return weights
    got = (describe() if describe else {}).get("kv_cache_dtype")
    if got is None or not str(got).startswith(expect.kv_cache_dtype):
        return (f"{backend} expects a {expect.kv_cache_dtype} KV cache, but the engine reports "
                f"{'no KV-cache dtype' if got is None else repr(got)}")
    return None


def _weights_verdict(expect: Expectation, census: WeightCensus | None, backend: str) -> str | None:
    if expect.quantized is None and expect.weight_bits is None:
        return None
    if census is None or census.linear_layers == 0:
        return (f"{backend} expects {_expected(expect)}, but the engine reported no linear-layer census "
                "to prove it")
    if expect.quantized and census.quantized_layers == 0:
        return (f"{backend} expects quantized linear layers, but 0 of {census.linear_layers} are "
                f"({_kinds(census)}); the engine ran them unquantized")
    if expect.quantized is False and census.quantized_layers:
        return (f"{backend} expects no quantized layers, but {census.quantized_layers} of {census.linear_layers} "
                f"are ({_kinds(census)})")
    if expect.weight_bits is not None:
        bits = census.quantized_bits if expect.quantized else census.linear_bits
        low, high = expect.weight_bits - _BELOW, expect.weight_bits + expect.bits_tolerance
        if bits is None or not low <= bits <= high:
            which = "quantized linear layers" if expect.quantized else "linear layers"
            return (f"{backend} expects ~{expect.weight_bits:g}-bit weights (accepted {low:g}-{high:g} bits per "
                    f"weight), but its {which} hold {bits} bits per weight "
                    f"({census.quantized_bytes if expect.quantized else census.linear_bytes} bytes for "
                    f"{census.quantized_params if expect.quantized else census.linear_params} weights; {_kinds(census)})")
    return None


def _expected(expect: Expectation) -> str:
    parts = []
    if expect.quantized is not None:
        parts.append("quantized layers" if expect.quantized else "no quantized layers")
    if expect.weight_bits is not None:
        parts.append(f"~{expect.weight_bits:g}-bit weights")
    return " and ".join(parts)


def _kinds(census: WeightCensus) -> str:
    return ", ".join(f"{k} x{n}" for k, n in sorted(census.layers.items(), key=lambda kv: -kv[1]))
