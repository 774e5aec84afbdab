"""Export an HF model folder to ONNX with `torch.onnx.export(..., dynamo=True)`.

Exporter: torch.export + onnxscript, on a thin wrapper module that turns the HF model's
`DynamicCache` into named graph inputs/outputs (`past.<i>.key`, ..., `present.<i>.value`). Why this one:
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
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from backends.contract import RunFailure
from backends.contract.weights import PICKLE_HINT

MODEL_FILE = "model.onnx"


def save_onnx(model: Any, path: Path) -> None:
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
            # `past_key_values`, not 5.24's new `cache`: transformers 5.17 (the GPU host's) knows only this.
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


def export_args(model: Any, task: str) -> tuple[Any, tuple, dict, list[str], list[str]]:
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


@contextlib.contextmanager
def first_node_prefilter() -> Iterator[bool]:
    """Make onnxscript's multi-output pattern matching linear instead of quadratic; same rewrites.

    For a rule whose pattern has several output nodes (in onnxscript 0.5-0.7 one default rule:
    `SlicesSplit`, Slice + Slice -> Split), `SimplePatternMatcher.match` indexes the whole graph by
    op type before it looks at the node it was given, for every node of the graph: on SmolLM2's
    7,370-node graph that is 51 million node visits, about half of the whole export. A node whose op
    type differs from the pattern's first output node cannot start a match (that node is matched
    against it first, and a local op-type mismatch fails every candidate combination), so skipping
    it changes no rewrite and no byte of the saved graph (tests/test_onnxruntime.py checks that). The
    check is patched in for the export only and left out where onnxscript's internals differ.
    Yields whether it is active.
    """
    try:
        from onnxscript.rewriter import _basics, _matcher

        cls = _matcher.SimplePatternMatcher
        original = cls.match
    except (ImportError, AttributeError):
        yield False
        return

    def match(self, model, graph_or_function, node, **kwargs):
        try:
            pattern = self.pattern
            first = None if pattern.has_single_output_node else pattern.output_nodes[0]
            skip = first is not None and kwargs.get("tracer") is None and not first.op.matches(node.op_type)
        except AttributeError:  # another onnxscript: match as it does
            skip = False
        if skip:
            return _basics.MatchResult().fail(f"OpType mismatch: expected {first.op}, got {node.op_type}.")
        return original(self, model, graph_or_function, node, **kwargs)

    cls.match = match
    try:
        yield True
    finally:
        cls.match = original


def export_model(folder: str, task: str, dtype: str, opset: int, dest: Path, *, trust_remote_code: bool = False,
                 allow_pickle: bool = False, prefilter: bool = True) -> None:
    """Export the HF model in `folder` (head for `task`) to `dest/model.onnx` with the dynamo exporter."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForCausalLM if task == "causal_lm" else AutoModelForSequenceClassification
    try:
        model = auto.from_pretrained(folder, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code,
                                     use_safetensors=not allow_pickle).eval()
    except OSError as exc:
        if not allow_pickle and "safetensors" in str(exc):
            raise RunFailure("invalid_config", f"{folder}: {str(exc).splitlines()[0]}; if it has pickle "
                                               f"checkpoints, {PICKLE_HINT}") from exc
        raise
    wrapper, args, shapes, inputs, outputs = export_args(model, task)
    fast = first_node_prefilter() if prefilter else contextlib.nullcontext(False)
    with torch.no_grad(), fast:
        program = torch.onnx.export(wrapper, args, dynamo=True, dynamic_shapes=shapes, opset_version=opset,
                                    input_names=inputs, output_names=outputs, verbose=False)
    program.save(str(dest / MODEL_FILE), external_data=True)
