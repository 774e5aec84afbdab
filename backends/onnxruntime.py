"""ONNX Runtime engine: export the run's model folder to ONNX once, quantize it, run it with ORT.

Exporter: `torch.onnx.export(..., dynamo=True)` (torch.export + onnxscript) on a thin wrapper module
that turns the HF model's `DynamicCache` into named graph inputs/outputs (`past.<i>.key`, ...,
`present.<i>.value`). Why this one:
- the TorchScript exporter (`dynamo=False`) cannot trace transformers >= 5 (DynamicCache inputs and
  the new masking utilities are not traceable);
- optimum-onnx caps transformers below 4.58;
- `transformers.exporters.OnnxExporter` only exists in recent 5.x releases and is marked
  experimental, and onnxruntime-genai's model builder re-implements each architecture by hand; the
  dynamo exporter follows the HF modeling code itself, on every transformers >= 5.5 we support.
The wrapper only flattens the cache; the graph is what HF's own forward does (its attention
implementation, its fp32 upcasts in fp16), so ORT measures the same model the other engines load.

One decoder graph serves prefill, decode and scoring: the past may be empty (length 0), and the
`logits_index` input picks which positions get logits (the last one while generating, all of them
while scoring), as HF's `logits_to_keep` does, so prefill never pays for a [B, S, V] head.

Precisions are graph rewrites of the exported fp32 (or fp16) graph:
- fp16: exported in float16 (HF's own mixed precision; mainly a CUDA path);
- int8: `quantize_dynamic` (MatMulInteger + DynamicQuantizeLinear; mainly a CPU path: on the CUDA EP
  those nodes fall back to CPU, which the recorded node placement shows);
- int4: weight-only `MatMulNBits` (block-wise, `MatMulNBitsQuantizer`).
The classifier / LM head stays unquantized unless `quantize_head`, as bitsandbytes, AWQ and GPTQ do.

Artifacts are cached under `<cache>/onnx/<key>` (key: model folder identity, weights, task, opset,
options, library versions) and written atomically, so a second run only creates the session.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from backends.contract import Engine, LogProbs, RunFailure
from backends.contract import build_once, content_key, folder_identity
from backends.contract import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from runners.plan.config import RunConfig
    from backends.contract import StepTimer

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
GPU_EXTRA = "ort-gpu"
# Bumped when the export wrapper or the rewrite steps change what an artifact contains.
ARTIFACT_FORMAT = 1

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
            raise ConfigError(f"backend.options.block_size: must be a power of 2 >= 16, got {self.block_size}")
        if self.accuracy_level is not None and not 0 <= self.accuracy_level <= 4:
            raise ConfigError(f"backend.options.accuracy_level: must be 0-4, got {self.accuracy_level}")
        if not 18 <= self.opset <= 23:  # the dynamo exporter's own range
            raise ConfigError(f"backend.options.opset: must be 18-23, got {self.opset}")
        if self.threads < 0:
            raise ConfigError(f"backend.options.threads: must be >= 0, got {self.threads}")

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


# -- pure helpers (unit-tested without ORT) ------------------------------------------------------
def resolve_providers(choice: str, device: str) -> list[str]:
    """Execution providers in priority order; CPU always last, since ORT places leftovers there."""
    if choice == "cuda" or (choice == "auto" and device == "cuda"):
        return [CUDA_EP, CPU_EP]
    return [CPU_EP]


# Dtypes of shape / index / mask bookkeeping: nodes that touch only these are cheap wherever they run
# (ORT keeps shape subgraphs on CPU on purpose); a node touching anything else does real work.
INDEX_DTYPES = {"int64", "int32", "bool"}


def _touches_data(args: dict) -> bool:
    tensors = [t for key in ("input_type_shape", "output_type_shape") for t in args.get(key) or []]
    if not tensors:
        return True  # no type information: count it as real work rather than hide it
    return any(dtype not in INDEX_DTYPES for t in tensors for dtype in t)


def node_placement(profile: list[dict]) -> dict[str, Any]:
    """Which provider ran each graph node, from an ORT profile (`enable_profiling` JSON events).

    Counts distinct nodes (after ORT's own graph optimizations), not kernel launches, so several
    profiled runs give the same numbers. `data_node_placement` counts only nodes that read or write
    float or quantized tensors: a CPU fallback there costs copies and time, unlike shape arithmetic.
    """
    placed: dict[str, tuple[str, str, bool]] = {}
    for ev in profile:
        args = ev.get("args") or {}
        if ev.get("cat") != "Node" or "provider" not in args:
            continue
        name = ev.get("name", "")
        for suffix in ("_kernel_time", "_fence_before", "_fence_after"):
            name = name.removesuffix(suffix)
        placed[name] = (args["provider"], args.get("op_name", "?"), _touches_data(args))
    counts = Counter(p for p, _, _ in placed.values())
    data = Counter(p for p, _, d in placed.values() if d)
    ops: dict[str, Counter] = {}
    for provider, op, _ in placed.values():
        ops.setdefault(provider, Counter())[op] += 1
    return {
        "node_placement": dict(counts.most_common()),
        "data_node_placement": {p: data.get(p, 0) for p in counts},
        "nodes_total": len(placed),
        "ops_by_provider": {p: dict(c.most_common()) for p, c in ops.items()},
    }


def placement_text(placement: dict[str, int], total: int, data: dict[str, int] | None = None) -> str:
    """`CUDA 412/430 nodes, CPU 18/430 nodes (2 on float/quantized tensors)`: what a table cell shows."""
    if not total:
        return "no nodes profiled"
    parts = []
    for i, (provider, n) in enumerate(sorted(placement.items(), key=lambda kv: -kv[1])):
        text = f"{provider.removesuffix('ExecutionProvider')} {n}/{total} nodes"
        if i and data is not None:  # the minority providers: is it bookkeeping or real work?
            text += f" ({data.get(provider, 0)} on float/quantized tensors)"
        parts.append(text)
    return ", ".join(parts)


def left_pad(prompts: list[list[int]], pad_id: int = 0) -> tuple["np.ndarray", "np.ndarray", "np.ndarray"]:
    """input_ids, attention_mask, position_ids for a left-padded batch (positions as HF generate)."""
    import numpy as np

    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), width), dtype=np.int64)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = p
        mask[row, width - len(p):] = 1
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    return ids, mask, positions


def log_softmax(logits: "np.ndarray") -> "np.ndarray":
    import numpy as np

    x = logits.astype(np.float32)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


# -- artifacts -----------------------------------------------------------------------------------
def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import onnxruntime

    # The imported module, not package metadata: onnxruntime-gpu installed with --target sits beside
    # a CPU onnxruntime whose metadata would still answer.
    out = {"onnxruntime": onnxruntime.__version__}
    for dist in ("torch", "transformers", "onnx", "onnxscript"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def _save_onnx(model: Any, path: Path) -> None:
    import onnx

    # External data always: models past 2 GB cannot be one protobuf, and one layout keeps loading simple.
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)


def _decoder_wrapper(model: Any) -> Any:
    import torch
    from transformers import DynamicCache

    class DecoderWithCache(torch.nn.Module):
        """HF causal LM with its cache as flat tensors: ONNX graphs take no Python objects."""

        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, position_ids, logits_index, past):
            pairs = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
            cache = DynamicCache(pairs, config=self.inner.config)
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True, logits_to_keep=logits_index)
            present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
            return (out.logits, *present)

    return DecoderWithCache(model).eval()


def _classifier_wrapper(model: Any) -> Any:
    import torch

    class Classifier(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    return Classifier(model).eval()


def _export_args(model: Any, task: str) -> tuple[Any, tuple, dict, list[str], list[str]]:
    """Wrapper, sample inputs, dynamic shapes and I/O names for one task's graph."""
    import torch

    # Distinct sample sizes > 1: torch.export specialises sizes 0/1 and may tie equal ones.
    batch, seq, past_len = 2, 3, 5
    ids = torch.randint(0, 8, (batch, seq))
    b, s = torch.export.Dim("batch"), torch.export.Dim("seq")
    if task != "causal_lm":
        mask = torch.ones(batch, seq, dtype=torch.int64)
        return (_classifier_wrapper(model), (ids, mask), {"input_ids": {0: b, 1: s}, "attention_mask": {0: b, 1: s}},
                ["input_ids", "attention_mask"], ["logits"])
    with torch.no_grad():  # real cache shapes (layers, kv heads, head dim) from the model itself
        layers = model(input_ids=ids, use_cache=True).past_key_values.layers
    past = [t.new_zeros(batch, t.shape[1], past_len, t.shape[3])
            for layer in layers for t in (layer.keys, layer.values)]
    mask = torch.ones(batch, past_len + seq, dtype=torch.int64)
    positions = torch.arange(past_len, past_len + seq).expand(batch, seq)
    index = torch.tensor([seq - 2, seq - 1])
    p, t, k = torch.export.Dim("past"), torch.export.Dim("total"), torch.export.Dim("keep")
    names = [f"{io}.{i}.{kv}" for io in ("past", "present") for i in range(len(layers)) for kv in ("key", "value")]
    shapes = {"input_ids": {0: b, 1: s}, "attention_mask": {0: b, 1: t}, "position_ids": {0: b, 1: s},
              "logits_index": {0: k}, "past": [{0: b, 2: p}] * len(past)}
    return (_decoder_wrapper(model), (ids, mask, positions, index, past), shapes,
            ["input_ids", "attention_mask", "position_ids", "logits_index", *names[:len(past)]],
            ["logits", *names[len(past):]])


def export_model(folder: str, task: str, dtype: str, opset: int, dest: Path, trust_remote_code: bool = False) -> None:
    """Export the HF model in `folder` (head for `task`) to `dest/model.onnx` with the dynamo exporter."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    log.info("exporting %s (%s, %s) to ONNX once; cached in %s", folder, task, dtype, dest.parent)
    auto = AutoModelForCausalLM if task == "causal_lm" else AutoModelForSequenceClassification
    model = auto.from_pretrained(folder, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code).eval()
    wrapper, args, shapes, inputs, outputs = _export_args(model, task)
    with torch.no_grad():
        program = torch.onnx.export(wrapper, args, dynamo=True, dynamic_shapes=shapes, opset_version=opset,
                                    input_names=inputs, output_names=outputs, verbose=False)
    program.save(str(dest / MODEL_FILE), external_data=True)


def head_node(model: Any) -> str | None:
    """The MatMul/Gemm that produces `logits` (LM head or classifier), walking back through reshapes."""
    producer = {out: node for node in model.graph.node for out in node.output}
    node = producer.get("logits")
    for _ in range(16):
        if node is None:
            return None
        if node.op_type in ("MatMul", "Gemm"):
            return node.name
        node = next((producer[i] for i in node.input if i in producer), None)
    return None


def quantize_int8(src: Path, dest: Path, q: dict) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    head = head_node(onnx.load(src / MODEL_FILE, load_external_data=False))
    exclude = [head] if head and not q["quantize_head"] else []
    quantize_dynamic(src / MODEL_FILE, dest / MODEL_FILE, op_types_to_quantize=q["op_types"],
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
    _save_onnx(quantizer.model.model, dest / MODEL_FILE)


def op_counts(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def artifact_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 2**20


# -- the engine ----------------------------------------------------------------------------------
class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    extra = "ort"
    requires = ("onnxruntime", "onnx", "onnxscript")
    Options = Options
    devices = ("cpu", "cuda")

    def __init__(self, options: Options, ctx):
        super().__init__(options, ctx)
        self.providers = resolve_providers(options.providers, ctx.device)
        self.session: Any = None
        self.info: dict[str, Any] = {}

    @classmethod
    def validate(cls, run: "RunConfig") -> None:
        opts: Options = run.backend.options
        if opts.providers == "cuda" and run.device == "cpu":
            raise ConfigError("backend.options.providers: cuda needs device=cuda (or auto on a GPU host), "
                              "not device=cpu")
        if run.workload.kind == "generate" and run.model.task != "causal_lm":
            raise ConfigError(f"workload generate needs a causal_lm model; {run.model.name} is {run.model.task}")

    def check(self) -> RunFailure | None:
        failure = super().check()
        wants_cuda = CUDA_EP in self.providers
        if failure is not None and wants_cuda and failure.status == "missing_dependency":
            return RunFailure(failure.status, failure.reason.replace(f"[{self.extra}]", f"[{GPU_EXTRA}]"))
        if failure is not None:
            return failure
        if wants_cuda:
            import onnxruntime as ort

            if CUDA_EP not in ort.get_available_providers():
                return RunFailure("unsupported_hardware",
                                  f"onnxruntime {ort.__version__} here has no {CUDA_EP} "
                                  f"({', '.join(ort.get_available_providers())}): "
                                  f"pip install 'quantbench[{GPU_EXTRA}]' (onnxruntime-gpu)")
        return None

    # -- load ------------------------------------------------------------------------------------
    def load(self) -> None:
        if CUDA_EP in self.providers:
            # torch loads the CUDA/cuDNN libraries that an onnxruntime-gpu installed with --target cannot find.
            importlib.import_module("torch")
        placement = self._open(self._artifact())
        self._check_providers()
        self.info.update(placement)
        self.info["placement"] = placement_text(placement["node_placement"], placement["nodes_total"],
                                                placement["data_node_placement"])

    def _artifact(self) -> Path:
        """The graph for this run's precision, exported/quantized once and cached."""
        opts, ctx = self.options, self.ctx
        base_key = [ARTIFACT_FORMAT, folder_identity(ctx.files.folder()), ctx.run.weights, ctx.files.task,
                    ctx.num_labels, opts.graph_dtype, opts.opset, library_versions()]
        root = Path(ctx.cache_dir) / "onnx"
        exported = root / content_key("export", *base_key)
        t0 = time.perf_counter()
        export_hit = build_once(exported, lambda tmp: export_model(
            ctx.files.folder(), ctx.files.task, opts.graph_dtype, opts.opset, tmp, ctx.run.model.trust_remote_code))
        if not export_hit:
            self.info["export_s"] = round(time.perf_counter() - t0, 3)
        self.info["cache_hit"] = export_hit
        final = exported
        if opts.precision in ("int8", "int4"):
            q = opts.quantization()
            final = root / content_key(opts.precision, q, *base_key)
            rewrite = quantize_int8 if opts.precision == "int8" else quantize_int4
            t0 = time.perf_counter()
            hit = build_once(final, lambda tmp: rewrite(exported, tmp, q))
            if not hit:
                self.info["quantize_s"] = round(time.perf_counter() - t0, 3)
            self.info["cache_hit"] = export_hit and hit
        self.info["artifact"] = str(final)
        self.info["artifact_mib"] = round(artifact_mib(final), 2)
        self.info["graph_ops"] = op_counts(final / MODEL_FILE)
        return final

    def _session_options(self, profile_dir: str) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = {
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.options.graph_optimization]
        if self.options.threads:
            so.intra_op_num_threads = self.options.threads
        so.log_severity_level = 3
        # Profiling shows where each node actually ran; it is switched off after one probe run.
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(profile_dir, "ort_profile")
        return so

    def _provider_specs(self) -> list[Any]:
        cuda = {"use_tf32": "1" if self.options.tf32 else "0"}
        return [(p, cuda) if p == CUDA_EP else p for p in self.providers]

    def _open(self, path: Path) -> dict[str, Any]:
        """Create the session; return where its nodes ran (node_placement's dict)."""
        import onnxruntime as ort

        with tempfile.TemporaryDirectory(prefix="qb_ort_") as tmp:
            self.session = session = ort.InferenceSession(str(path / MODEL_FILE), self._session_options(tmp),
                                                          providers=self._provider_specs())
            self._io = {i.name: i for i in session.get_inputs()}
            self._outputs = [o.name for o in session.get_outputs()]
            self._device = "cuda" if CUDA_EP in session.get_providers() else "cpu"
            self._probe()
            profile_file = session.end_profiling()
            events = json.loads(Path(profile_file).read_text()) if profile_file else []
        return node_placement(events)

    def _probe(self) -> None:
        """One tiny forward, so that the profile lists every node with the provider that ran it."""
        import numpy as np

        ids = np.array([[1, 2]], dtype=np.int64)
        if "past.0.key" in self._io:
            self._forward(ids, np.ones_like(ids), np.array([[0, 1]]), np.array([1]), self._empty_past(1))
        else:
            self.session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})

    def _check_providers(self) -> None:
        actual = self.session.get_providers()
        self.info.update(providers_requested=list(self.providers), providers=actual)
        missing = [p for p in self.providers if p not in actual]
        if missing:
            # ORT falls back to CPU with a log line only; a "CUDA" number measured on CPU is a lie.
            raise RunFailure("unsupported_hardware",
                             f"onnxruntime could not start {', '.join(missing)} (session has {', '.join(actual)}); "
                             "check the CUDA/cuDNN libraries onnxruntime-gpu needs")

    # -- running ---------------------------------------------------------------------------------
    def _kv_dtype(self) -> Any:
        import numpy as np

        return np.float16 if self._io["past.0.key"].type == "tensor(float16)" else np.float32

    def _empty_past(self, batch: int) -> dict[str, Any]:
        import numpy as np

        dtype = self._kv_dtype()
        return {name: np.zeros((batch, io.shape[1], 0, io.shape[3]), dtype=dtype)
                for name, io in self._io.items() if name.startswith("past.")}

    def _forward(self, ids, mask, positions, index, past: dict) -> tuple["np.ndarray", dict]:
        """One decoder step via IO binding: the cache stays where the provider keeps it (GPU memory on CUDA)."""
        binding = self.session.io_binding()
        for name, value in (("input_ids", ids), ("attention_mask", mask), ("position_ids", positions),
                            ("logits_index", index)):
            binding.bind_cpu_input(name, value.astype("int64", copy=False))
        for name, value in past.items():
            if hasattr(value, "numpy"):  # an OrtValue from the previous step
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, value)
        for name in self._outputs:
            binding.bind_output(name, self._device)
        self.session.run_with_iobinding(binding)
        outs = binding.get_outputs()
        present = {name.replace("present.", "past.", 1): v for name, v in zip(self._outputs[1:], outs[1:])}
        return outs[0].numpy(), present

    def generate(self, prompts: list[list[int]], new_tokens: int, timer: "StepTimer") -> list[list[int]]:
        import numpy as np

        ids, mask, positions = left_pad(prompts)
        past = self._empty_past(len(prompts))
        last = np.array([ids.shape[1] - 1])
        out = []
        for step in range(new_tokens):
            logits, past = self._forward(ids, mask, positions, last, past)
            timer.token()
            ids = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
            out.append(ids[:, 0])
            if step + 1 < new_tokens:
                mask = np.concatenate([mask, np.ones_like(ids)], axis=1)
                positions = positions[:, -1:] + 1
                last = np.array([0])
        return np.stack(out, axis=1).tolist()

    def score(self, token_ids: list[int]) -> LogProbs:
        import numpy as np

        if "past.0.key" not in self._io:
            raise RunFailure("invalid_config", "score needs a causal_lm graph")
        ids = np.array([token_ids], dtype=np.int64)
        n = ids.shape[1]
        logits, _ = self._forward(ids, np.ones_like(ids), np.arange(n)[None], np.arange(n), self._empty_past(1))
        return LogProbs(values=log_softmax(logits[0]))

    def classify(self, input_ids: "np.ndarray", attention_mask: "np.ndarray") -> "np.ndarray":
        import numpy as np

        (logits,) = self.session.run(["logits"], {"input_ids": np.asarray(input_ids, dtype=np.int64),
                                                  "attention_mask": np.asarray(attention_mask, dtype=np.int64)})
        return logits.astype(np.float32)

    # -- reporting -------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {
            "engine": self.name, "onnxruntime": ort.__version__, "exporter": "torch.onnx.export(dynamo=True)",
            "versions": library_versions(), "precision": self.options.precision,
            "dtype": self.options.graph_dtype, "opset": self.options.opset,
            "quantization": self.options.quantization(), "threads": self.options.threads,
            "graph_optimization": self.options.graph_optimization, "io_binding": True,
            **({"tf32": self.options.tf32} if CUDA_EP in self.providers else {}), **self.info,
        }

    def memory_facts(self) -> dict[str, float]:
        return {"onnx_artifact_mib": self.info["artifact_mib"]} if "artifact_mib" in self.info else {}

    def close(self) -> None:
        self.session = None


ENGINE = OnnxRuntimeEngine
