"""Precisions below fp32 as rewrites of the exported graph, with ONNX Runtime's own quantizers.

- int8: `quantize_dynamic` (MatMulInteger + DynamicQuantizeLinear; mainly a CPU path: on the CUDA EP
  those nodes fall back to CPU, which the recorded node placement shows);
- int4: weight-only `MatMulNBits` (block-wise, `MatMulNBitsQuantizer`).
(fp16 is not a rewrite: the model is exported in float16, HF's own mixed precision.)
The classifier / LM head stays unquantized unless `quantize_head`, as bitsandbytes, AWQ and GPTQ do.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.onnxruntime.census import head_node
from backends.onnxruntime.export import MODEL_FILE, save_onnx


# Bumped when a rewrite changes what it writes for the same options (part of the artefact's key).
REWRITE_FORMAT = {"int8": 3, "int4": 1}


def transposed_gemm_shapes(model: Any) -> list[str]:
    """Names of the shape entries (`value_info`) that the exporter wrote for Gemm weights read
    transposed (transB=1). quantize_dynamic before ONNX Runtime 1.32 transposes such a weight in place
    when it rewrites the Gemm as MatMul and keeps the entry, so its shape inference then fails
    ("Inferred shape and existing shape differ"): a classifier head, on 1.30 (the H200 host's)."""
    inits = {t.name for t in model.graph.initializer}
    weights = {n.input[1] for n in model.graph.node if n.op_type == "Gemm" and len(n.input) > 1
               and n.input[1] in inits and any(a.name == "transB" and a.i for a in n.attribute)}
    return [v.name for v in model.graph.value_info if v.name in weights]


def quantize_int8(src: Path, dest: Path, q: dict) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(src / MODEL_FILE, load_external_data=False)
    head = head_node(graph)
    source: Path | Any = src / MODEL_FILE
    stale = set(transposed_gemm_shapes(graph))
    if stale:
        # An initializer carries its own shape: the entry is redundant, so dropping it changes nothing
        # on the ONNX Runtime versions that keep the weight's name and shape consistent.
        source = onnx.load(src / MODEL_FILE)
        kept = [v for v in source.graph.value_info if v.name not in stale]
        del source.graph.value_info[:]
        source.graph.value_info.extend(kept)
    # Dynamic quantization first rewrites each Gemm (a classifier head) as a MatMul named
    # `<gemm>_MatMul`, then applies the exclusions: both names, or the head is quantized after all.
    exclude = [head, f"{head}_MatMul"] if head and not q["quantize_head"] else []
    quantize_dynamic(source, dest / MODEL_FILE, op_types_to_quantize=q["op_types"],
                     per_channel=q["per_channel"], reduce_range=q["reduce_range"], weight_type=QuantType.QInt8,
                     nodes_to_exclude=exclude, use_external_data_format=True)


def quantize_int4(src: Path, dest: Path, q: dict) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(src / MODEL_FILE))
    head = head_node(model)
    exclude = [head] if head and not q["quantize_head"] else []
    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=q["block_size"], is_symmetric=q["symmetric"],
                                     accuracy_level=q["accuracy_level"], nodes_to_exclude=exclude,
                                     op_types_to_quantize=tuple(q["op_types"]))
    quantizer.process()
    # int4 tensors need IR >= 10 (ORT 1.32 bumps it itself; 1.30 does not).
    quantizer.model.model.ir_version = max(quantizer.model.model.ir_version, 10)
    save_onnx(quantizer.model.model, dest / MODEL_FILE)


REWRITES = {"int8": quantize_int8, "int4": quantize_int4}
