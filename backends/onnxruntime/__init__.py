"""ONNX Runtime engine: export the run's model folder to ONNX once, quantize it, run it with ORT.

One module per job: options.py (typed options, providers), export.py (torch.onnx dynamo export),
quantize.py (int8 / int4 rewrites), census.py (weight-bearing nodes and their bytes), placement.py
(which provider ran each node), progress.py (console heartbeat, quiet libraries), engine.py.
"""
from backends.onnxruntime.engine import OnnxRuntimeEngine, left_pad, log_softmax
from backends.onnxruntime.options import CPU_EP, CUDA_EP, Options, resolve_providers
from backends.onnxruntime.placement import node_placement, placement_text

ENGINE = OnnxRuntimeEngine

__all__ = ["CPU_EP", "CUDA_EP", "ENGINE", "OnnxRuntimeEngine", "Options", "left_pad", "log_softmax",
           "node_placement", "placement_text", "resolve_providers"]
