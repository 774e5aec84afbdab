"""Weight census of an ONNX graph: which nodes hold the linear weights, quantized or not, and their bytes.

Read from the graph the session was created from (without its external data: sizes come from
each initializer's dims and type), so it proves what the quantization step left behind:
- MatMulInteger (quantize_dynamic): int8 weight initializer + its scale and zero point;
- MatMulNBits (weight-only int4/int8): packed B + scales (+ zero points); logical weights K x N;
- DynamicQuantizeMatMul, MatMulIntegerToFloat, QLinearMatMul: where an offline tool wrote them;
- MatMul / Gemm whose B is a float initializer (possibly behind a Transpose, as a tied LM head is).
Attention's MatMuls (both operands activations) hold no weights and are not counted.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from backends.contract import WeightCensus

MS_DOMAIN = "com.microsoft"
FLOAT_TYPES = {1: "float32", 10: "float16", 16: "bfloat16", 11: "float64"}
# ONNX TensorProto data types stored two per byte.
NIBBLE_TYPES = {21, 22, 23}  # UINT4, INT4, FLOAT4E2M1
ITEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2,
              17: 1, 18: 1, 19: 1, 20: 1}
# Quantized weight ops -> (index of the weight input, indexes of the inputs stored beside it).
QUANTIZED_OPS = {
    "MatMulInteger": (1, (3,)),  # scale: quantize_dynamic's `<weight>_scale`, read by a Mul after it
    "MatMulNBits": (1, (2, 3)),
    "DynamicQuantizeMatMul": (1, (2, 3)),
    "MatMulIntegerToFloat": (1, (3, 5)),
    "QLinearMatMul": (3, (4, 5)),
}
FLOAT_OPS = ("MatMul", "Gemm")
# Ops a weight may pass through on its way to a MatMul (a tied head's Transpose, an fp16 Cast).
PASS_THROUGH = ("Transpose", "Cast", "Identity", "Reshape")


def tensor_bytes(t: Any) -> int:
    n = math.prod(t.dims)
    if t.data_type in NIBBLE_TYPES:
        return (n + 1) // 2
    return n * ITEM_BYTES.get(t.data_type, 0)


def module_name(node: Any) -> str:
    """The HF module a node came from (`model.layers.0.mlp.up_proj`), else the node's name.

    The dynamo exporter records each node's module scopes; our wrapper module is `inner`.
    """
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = [s for s in prop.value.strip("[]").replace("'", "").split(", ") if s.startswith("inner.")]
            if scopes:
                return scopes[-1].removeprefix("inner.")
    return node.name


def head_node(model: Any) -> str | None:
    """The node that produces `logits` from a weight (LM head or classifier), walking back through reshapes."""
    producer = {out: node for node in model.graph.node for out in node.output}
    node = producer.get("logits")
    for _ in range(16):
        if node is None:
            return None
        if node.op_type in FLOAT_OPS or node.op_type in QUANTIZED_OPS:
            return node.name
        node = next((producer[i] for i in node.input if i in producer), None)
    return None


def graph_census(model: Any, head: str | None = None, quantize_head: bool | None = None) -> WeightCensus:
    """The census of an `onnx.ModelProto` (loaded with or without external data). `head`: the name of
    the node producing the logits, named in a note when it stays float in a quantized graph;
    `quantize_head`: whether the run asked for it quantized (None: the precision quantizes nothing)."""
    inits = {t.name: t for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    census = WeightCensus(weights_bytes=sum(tensor_bytes(t) for t in inits.values()))

    def initializer_behind(value: str) -> Any:
        for _ in range(4):
            if value in inits:
                return inits[value]
            node = producer.get(value)
            if node is None or node.op_type not in PASS_THROUGH or not node.input:
                return None
            value = node.input[0]
        return None

    missing_scales = []
    for node in model.graph.node:
        spec = QUANTIZED_OPS.get(node.op_type)
        if spec is not None and node.domain in ("", "ai.onnx", MS_DOMAIN):
            index, beside = spec
            weight = inits.get(node.input[index]) if len(node.input) > index else None
            if weight is None:
                continue  # an activation x activation product: no weight
            stored = [weight] + [inits[node.input[i]] for i in beside if i < len(node.input) and node.input[i] in inits]
            if node.op_type == "MatMulInteger":
                scale = inits.get(weight.name.removesuffix("_quantized") + "_scale")
                if scale is None:
                    missing_scales.append(node.name)
                else:
                    stored.append(scale)
            if node.op_type == "MatMulNBits":
                attrs = {a.name: a.i for a in node.attribute}
                params = attrs["K"] * attrs["N"]
            else:
                params = math.prod(weight.dims)
            census.add(node.op_type, True, module_name(node), params, sum(tensor_bytes(t) for t in stored))
        elif node.op_type in FLOAT_OPS and node.domain in ("", "ai.onnx") and len(node.input) > 1:
            weight = initializer_behind(node.input[1])
            if weight is None or weight.data_type not in FLOAT_TYPES:
                continue
            name = module_name(node)
            if node.name == head:
                scoped = name != node.name  # a head the quantizer rewrote (Gemm -> MatMul) lost its scopes
                name = name if scoped else f"output head {node.name}"
                if quantize_head is not None:
                    label = f"output head {name} ({node.name})" if scoped else name
                    tied = node.input[1] not in inits
                    why = ("by design (quantize_head: false)" if not quantize_head else
                           "although quantize_head: true: its weight reaches the MatMul through a Transpose "
                           "(a tied head), which the quantizers skip" if tied else
                           "although quantize_head: true: the quantizer skipped it")
                    census.notes.append(f"{label} stays {FLOAT_TYPES[weight.data_type]} {why}")
            census.add(node.op_type, False, name, math.prod(weight.dims), tensor_bytes(weight))
    if missing_scales:
        census.notes.append(f"{len(missing_scales)} MatMulInteger nodes' scales not found by name: "
                            f"their bytes count the int8 weights and zero points only")
    return census


def file_census(path: Path, quantize_head: bool | None = None) -> WeightCensus:
    """The census of a saved graph, its output head found by `head_node`."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return graph_census(model, head_node(model), quantize_head)
