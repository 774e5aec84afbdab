"""Hugging Face transformers engine: fp32 / fp16 / bf16, bitsandbytes LLM.int8, NF4, FP4, and
compressed-tensors checkpoints made by llm-compressor (GPTQ / AWQ W4A16, FP8 dynamic).

Quantized variants load exactly as users load them: `from_pretrained(..., quantization_config=
BitsAndBytesConfig(...))` on a folder of real (or cached synthetic) weights, so the kernels measured
are the ones a user of that line of code gets.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

from backends.compress import Recipe, build_facts, checkpoint, checkpoint_census
from backends.contract import (CHECKPOINT_MIB, QUANTIZE_S, WEIGHTS_MIB, ConfigError, CudaClock, Engine, HostClock,
                               LogProbs, RunFailure, Trace, WeightCensus, installed_versions, torch_profile)
from backends.contract.engine import install_hint
from backends.contract.server import ServerProcess

DType = Literal["float32", "float16", "bfloat16"]
MIB = 2**20
# The output head stays in full precision by default (transformers does the same): quantizing the
# layer that produces logits costs quality for little memory.
OUTPUT_HEADS = {"causal_lm": ["lm_head"], "sequence_classification": ["score", "classifier"]}


@dataclass(frozen=True)
class Options:
    dtype: DType = "float32"
    # compressed_tensors: a checkpoint llm-compressor makes with `compress` (built once, cached), loaded
    # with transformers' compressed-tensors support (decompressed to `dtype` weights on load).
    quantization: Literal["none", "bnb_int8", "bnb_nf4", "bnb_fp4", "compressed_tensors"] = "none"
    llm_int8_threshold: float = 6.0
    # null = the model's output head (lm_head / score / classifier)
    llm_int8_skip_modules: list[str] | None = None
    # null = `dtype`
    bnb_4bit_compute_dtype: DType | None = None
    bnb_4bit_use_double_quant: bool = True
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    compress: Recipe | None = None

    def __post_init__(self) -> None:
        if (self.quantization == "compressed_tensors") != (self.compress is not None):
            raise ConfigError("backend.options.compress: give it exactly when quantization is compressed_tensors")
        if self.llm_int8_threshold < 0:
            raise ConfigError(f"backend.options.llm_int8_threshold: must be >= 0, got {self.llm_int8_threshold}")


class TransformersEngine(Engine):
    name = "transformers"
    extra = "bnb"
    packages = ("torch", "transformers", "accelerate", "safetensors", "bitsandbytes")
    Options = Options
    metrics = (QUANTIZE_S, CHECKPOINT_MIB, WEIGHTS_MIB)
    capabilities = frozenset({"profile", "serve"})

    def __init__(self, options: Options, ctx):
        super().__init__(options, ctx)
        self.model = None
        self.checkpoint = None  # backends.compress.CheckpointBuild, for compressed_tensors
        self.requires = ("torch", "transformers")
        if options.quantization == "compressed_tensors":
            self.requires += ("llmcompressor", "compressed_tensors")
            self.extra = "quantize"
            self.packages = self.packages + ("llmcompressor", "compressed-tensors")
        elif options.quantization != "none":
            self.requires += ("bitsandbytes",)

    def check(self) -> RunFailure | None:
        problem = super().check()
        if problem:
            return problem
        if self.options.dtype == "bfloat16" and self.ctx.device == "cuda":
            import torch

            if not torch.cuda.is_bf16_supported():
                return RunFailure("unsupported_hardware", "bfloat16 needs compute capability >= 8.0")
        return None

    # -- loading -----------------------------------------------------------------------------
    def prepare(self) -> None:
        super().prepare()
        if self.options.compress is not None:
            self.checkpoint = checkpoint(self.ctx, self.options.compress)

    def artefact_stats(self) -> dict[str, Any]:
        return dict(self.checkpoint.stats) if self.checkpoint is not None else {}

    def _torch_dtype(self, name: str | None):
        import torch

        return getattr(torch, name or self.options.dtype)

    def skip_modules(self) -> list[str]:
        return list(self.options.llm_int8_skip_modules or OUTPUT_HEADS[self.ctx.run.task])

    def quantization_config(self):
        o = self.options
        if o.quantization == "none":
            return None
        if o.quantization == "compressed_tensors":
            from transformers.utils.quantization_config import CompressedTensorsConfig

            # Decompressed float weights: CPU has no compressed-tensors kernels (FP8 weights would meet a
            # float32 matmul); dynamic FP8 activations are still quantized per token (emulated in float).
            return CompressedTensorsConfig(run_compressed=False)
        from transformers import BitsAndBytesConfig

        if o.quantization == "bnb_int8":
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=o.llm_int8_threshold,
                                      llm_int8_skip_modules=self.skip_modules())
        return BitsAndBytesConfig(
            load_in_4bit=True,
            # transformers defaults to fp4; NF4 must be asked for explicitly.
            bnb_4bit_quant_type="nf4" if o.quantization == "bnb_nf4" else "fp4",
            bnb_4bit_use_double_quant=o.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=self._torch_dtype(o.bnb_4bit_compute_dtype),
            llm_int8_skip_modules=self.skip_modules(),
        )

    def load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        files, spec, task = self.ctx.files, self.ctx.run.model, self.ctx.run.task
        auto = AutoModelForCausalLM if task == "causal_lm" else AutoModelForSequenceClassification
        kwargs: dict[str, Any] = dict(
            dtype=self._torch_dtype(None), attn_implementation=self.options.attn_implementation,
            trust_remote_code=spec.trust_remote_code, use_safetensors=not spec.allow_pickle,
            device_map=self.ctx.device,
        )
        if task == "sequence_classification":
            kwargs["num_labels"] = spec.num_labels
        qc = self.quantization_config()
        if qc is not None:
            kwargs["quantization_config"] = qc
        folder = str(self.checkpoint.folder) if self.checkpoint is not None else files.folder()
        self.model = auto.from_pretrained(folder, **kwargs).eval()
        if self.model.config.pad_token_id is None:
            # Sequence classification with batch > 1 needs a pad id to find the last token; our inputs
            # never contain id 0 unpadded, so it only marks "no padding here".
            self.model.config.pad_token_id = 0
        self._torch = torch

    # -- work ----------------------------------------------------------------------------------
    def synchronize(self) -> None:
        if self.ctx.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def make_clock(self):
        return CudaClock() if self.ctx.device == "cuda" else HostClock(self.synchronize)

    def generate(self, prompts, new_tokens, timer):
        torch = self._torch
        from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

        class Tick(LogitsProcessor):
            # Called once per step, right after the forward that produced the step's logits.
            def __call__(self, input_ids, scores):
                timer.token()
                return scores

        ids = torch.tensor(prompts, dtype=torch.long, device=self.ctx.device)
        pad = self.model.config.pad_token_id
        gen = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                               num_beams=1, pad_token_id=pad, eos_token_id=None, use_cache=True)
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen,
                                      logits_processor=LogitsProcessorList([Tick()]))
        return out[:, ids.shape[1]:].tolist()

    def classify(self, input_ids, attention_mask):
        torch = self._torch
        with torch.inference_mode():
            logits = self.model(input_ids=torch.from_numpy(input_ids).to(self.ctx.device),
                                attention_mask=torch.from_numpy(attention_mask).to(self.ctx.device)).logits
            return logits.float().cpu().numpy()

    def score(self, token_ids):
        torch = self._torch
        with torch.inference_mode():
            ids = torch.tensor([token_ids], dtype=torch.long, device=self.ctx.device)
            logits = self.model(input_ids=ids).logits[0].float()
            return LogProbs(torch.log_softmax(logits, dim=-1).cpu().numpy())

    # -- serving -------------------------------------------------------------------------------
    SERVE_QUANTIZATION = {"none": None, "bnb_int8": "bnb-8bit", "bnb_nf4": "bnb-4bit", "bnb_fp4": "bnb-4bit"}

    def server(self, log_path):
        """`transformers serve` on the same folder, dtype and device, with continuous batching (what its
        docs advise for load). bitsandbytes rows pass its `--quantization`; a quantization it cannot
        express (compressed-tensors checkpoints) has no server."""
        import importlib.util

        o = self.options
        if o.quantization not in self.SERVE_QUANTIZATION:
            return None
        missing = [m for m in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(m) is None]
        if missing:
            raise RunFailure("missing_dependency", f"transformers serve needs {', '.join(missing)}: "
                                                   f"{install_hint('serve', ('transformers[serving]',))}")
        folder = self.ctx.files.folder()
        census = log_path.with_name("server-census.json")
        cmd = [sys.executable, "-m", "backends.transformers", folder, "--host", "127.0.0.1",
               "--port", "{port}", "--device", self.ctx.device, "--dtype", o.dtype, "--continuous-batching"]
        if self.SERVE_QUANTIZATION[o.quantization]:
            cmd += ["--quantization", self.SERVE_QUANTIZATION[o.quantization]]
        # transformers serve refuses fields it does not know: no ignore_eos, so a request may end early
        # at an end-of-sequence token; the samples count the tokens each request really produced.
        server = ServerProcess(cmd, log_path, health_path="/health", model=folder,
                               env={SERVE_CENSUS_ENV: str(census)})
        server.facts["census_file"] = census.name
        return server

    def server_census(self, server) -> WeightCensus | None:
        import json

        path = server.log_path.with_name(server.facts.get("census_file", "server-census.json"))
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("loaded_class", None)
        return WeightCensus.from_dict(data)

    # -- profiling -----------------------------------------------------------------------------
    def profile(self, run_once, trace_path) -> Trace:
        trace = torch_profile(run_once, self.ctx.device, trace_path)
        if self.options.quantization == "bnb_int8":
            # Counted in a pass of its own: the counting kernels must not appear in the profiled one.
            trace.facts["llm_int8_outliers"] = self._outlier_census(run_once)
        return trace

    def _outlier_census(self, run_once) -> dict[str, Any]:
        """How many activation columns crossed `llm_int8_threshold` per linear-layer call (the columns
        LLM.int8 sends down its fp16 outlier path), over one more pass of the workload."""
        torch = self._torch
        threshold = self.options.llm_int8_threshold
        counts: dict[str, list] = {}
        hooks = []
        for name, m in self.model.named_modules():
            if type(m).__name__ != "Linear8bitLt":
                continue

            def hook(module, inputs, name=name):
                x = inputs[0]
                cols = (x.detach().abs() >= threshold).reshape(-1, x.shape[-1]).any(0).sum()
                counts.setdefault(name, []).append(cols)
            hooks.append(m.register_forward_pre_hook(hook))
        try:
            with torch.inference_mode():
                run_once()
        finally:
            for h in hooks:
                h.remove()
        per_call = [int(c) for calls in counts.values() for c in calls]
        with_any = sum(1 for calls in counts.values() if any(int(c) for c in calls))
        out: dict[str, Any] = {"llm_int8_threshold": threshold, "layers": len(hooks), "calls": len(per_call),
                               "mean_outlier_columns": round(sum(per_call) / len(per_call), 3) if per_call else 0.0,
                               "max_outlier_columns": max(per_call, default=0), "layers_with_outliers": with_any}
        if not with_any:
            out["note"] = ("the fp16 outlier path never ran (no activation reached the threshold): this row's "
                           "LLM.int8 cost is a lower bound of what real weights pay"
                           + (" (synthetic weights rarely cross it)" if self.ctx.run.weights == "synthetic" else ""))
        return out

    # -- reporting -----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        o = self.options
        info: dict[str, Any] = {"engine": "transformers", **installed_versions(("transformers", "torch")),
                                "dtype": o.dtype, "quantization": o.quantization}
        if o.quantization == "compressed_tensors":
            info.update(self._compressed_info())
        elif o.quantization != "none":
            info.update(installed_versions(("bitsandbytes",)))
            info["skip_modules"] = self.skip_modules()
        if o.quantization == "bnb_int8":
            info["llm_int8_threshold"] = o.llm_int8_threshold
        if o.quantization in ("bnb_nf4", "bnb_fp4"):
            info.update(bnb_4bit_quant_type=o.quantization[4:], bnb_4bit_use_double_quant=o.bnb_4bit_use_double_quant,
                        bnb_4bit_compute_dtype=o.bnb_4bit_compute_dtype or o.dtype)
        if self.model is not None:
            info["attn_implementation"] = getattr(self.model.config, "_attn_implementation", None)
            census = self.census()
            info["linear_kernels"] = ", ".join(f"{k} x{v}" for k, v in sorted(census.layers.items()))
            if census.unquantized and o.quantization != "none":
                info["unquantized_modules"] = census.unquantized
        return info

    def _compressed_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"recipe": self.options.compress.key()}
        if self.checkpoint is not None:
            b = self.checkpoint
            info.update(build_facts(b, self.options.compress))
            info.update(checkpoint_mib=b.stats.get("checkpoint_mib"), calibration_tokens=b.info.get("calibration_tokens"),
                        compute=("checkpoint decompressed on load to float weights on the quantization grid; "
                                 "the matmuls run in " + self.options.dtype + (
                                     ", activations quantized to FP8 per token on the fly (emulated)"
                                     if self.options.compress.method == "fp8_dynamic" else "")))
        return info

    def census(self) -> WeightCensus | None:
        """Which layer classes hold the linear weights, and their bytes: proof that quantization happened."""
        if self.model is None:
            return None
        if self.checkpoint is not None:
            return checkpoint_census(self.model, self.checkpoint.folder, int(self.model.get_memory_footprint()))

        return model_census(self.model)

    def memory_facts(self) -> dict[str, float]:
        if self.model is None:
            return {}
        return {"weights_mib": round(self.model.get_memory_footprint() / MIB, 1)}

    def close(self) -> None:
        self.model = None


def model_census(model) -> WeightCensus:
    """The linear layers of a loaded transformers model by class, which are quantized, and their bytes."""
    import torch

    census = WeightCensus(weights_bytes=int(model.get_memory_footprint()))
    for name, m in model.named_modules():
        if not isinstance(m, torch.nn.Linear):  # bitsandbytes' Linear8bitLt / Linear4bit subclass it
            continue
        weight = m.weight
        quant_state = getattr(weight, "quant_state", None)
        quantized = quant_state is not None or weight.dtype in (torch.int8, torch.uint8)
        census.add(type(m).__name__, quantized, name, m.in_features * m.out_features,
                   _tensor_bytes(weight) + _quant_state_bytes(weight, quant_state))
    return census


SERVE_CENSUS_ENV = "QUANTBENCH_SERVE_CENSUS"


def install_census_hook(census_path: str) -> None:
    """Every from_pretrained of this process writes the loaded model's census to `census_path` (JSON): the
    server's own account of its layers, which `transformers serve` does not log."""
    import json
    import os
    import sys

    from transformers import PreTrainedModel

    original = PreTrainedModel.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        model = original(cls, *args, **kwargs)
        try:
            data = model_census(model).to_dict()
            tmp = f"{census_path}.tmp{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(tmp, census_path)
        except Exception as exc:  # noqa: BLE001 — a census failure must not stop the server it describes
            print(f"quantbench: census of the served model failed: {exc}", file=sys.stderr)
        return model

    PreTrainedModel.from_pretrained = classmethod(from_pretrained)


def _tensor_bytes(t) -> int:
    return int(t.numel() * t.element_size()) if t is not None else 0


def _quant_state_bytes(weight, quant_state) -> int:
    """Scales a quantized weight keeps beside its packed values (LLM.int8's row scales, 4-bit absmax)."""
    nbytes = _tensor_bytes(getattr(weight, "SCB", None))
    if quant_state is not None:
        nbytes += _tensor_bytes(getattr(quant_state, "absmax", None))
        nested = getattr(quant_state, "state2", None)
        if nested is not None:
            nbytes += _tensor_bytes(getattr(nested, "absmax", None))
    return nbytes


ENGINE = TransformersEngine


if __name__ in ("__main__", "__mp_main__"):
    # `python -m backends.transformers MODEL [transformers serve options]` with SERVE_CENSUS_ENV set: the
    # server Engine.server starts. transformers serve loads the model in a spawned process, which imports
    # this module again as __mp_main__: the hook is installed there too.
    import os as _os
    import sys as _sys

    if _os.environ.get(SERVE_CENSUS_ENV):
        install_census_hook(_os.environ[SERVE_CENSUS_ENV])
    if __name__ == "__main__":
        from transformers.cli.transformers import main as _cli_main

        _sys.argv = ["transformers", "serve", *_sys.argv[1:]]
        _cli_main()
