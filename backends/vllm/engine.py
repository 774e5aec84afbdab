"""vLLM engine: offline `vllm.LLM` with continuous batching, fp16/bf16, AWQ, GPTQ, FP8, bitsandbytes.

Written against vLLM 0.26.0 (torch 2.11). Facts from its source that shape this engine:
- `quantization="awq"` and `"awq_marlin"` both resolve to `auto_awq`, `"gptq"`/`"gptq_marlin"` to
  `auto_gptq`; the GEMM kernel is then picked per layer by `choose_mp_linear_kernel` (Machete on
  Hopper where it can, else Marlin, ...). `linear_backend` (an `LLM` kwarg) restricts that choice.
  So the kernel is reported from what the loaded layers hold and what vLLM logged, never assumed.
- Synthetic weights: dummy weights on a config-only folder (args.py says why its quantization_config
  names the quantized modules).
- `fp8` on an unquantized checkpoint is online dynamic FP8; below compute capability 8.9 vLLM falls
  back to weight-only FP8 Marlin (recorded; `min_capability: 89` refuses such GPUs up front).
- Per-request metrics (`RequestOutput.metrics`) exist only with log stats on (`disable_log_stats=
  False`, which is also what `vllm bench throughput` runs with).
- The weight census comes from the loaded layers (introspect.py), so a run whose layers fell back to
  `UnquantizedLinearMethod` cannot pass the runner's check of the backend's `expect`.

The package's modules, one job each: options (typed options), args (LLM arguments, model folder),
cli (flags for `vllm bench`), logs (log capture, log facts, error classes), outputs (log-probs,
TTFT), introspect (in-worker inspection, census), hardware (capability check), engine (this).
Nothing here imports vllm or torch at module level.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from backends.compress import build_facts, checkpoint
from backends.contract import (CHECKPOINT_MIB, KV_CACHE_MIB, QUANTIZE_S, WEIGHTS_MIB, ConfigError, Engine, LogProbs,
                               Metric, RunFailure, WeightCensus, installed_versions)
from backends.contract.profiling import Trace, save_trace, trace_from_chrome
from backends.vllm.args import (auto_max_model_len, gptq_block_modules, llm_kwargs, model_source, needs_build,
                                vllm_environment)
from backends.vllm.hardware import capability_failure, gpu_capability
from backends.vllm.introspect import census_from_inspection, inspect_model, inspection_from_text, resolved_config
from backends.vllm.logs import LogCapture, classify_error, parse_vllm_log
from backends.vllm.options import GPTQ, PREQUANTIZED, Options, checkpoint_key
from backends.vllm.outputs import batch_ttft_ms, next_token_logprobs, topk_logprobs
from backends.vllm.serve import server_process

MIB = 2**20
GIB_IN_MIB = 1024.0


class VllmEngine(Engine):
    name = "vllm"
    extra = "vllm"
    # Distributions whose versions shape a vLLM run (kernels come from vllm, torch and triton;
    # configs from transformers and compressed-tensors; in-flight NF4 from bitsandbytes;
    # sampler and attention choices change when flashinfer is present).
    packages = ("vllm", "torch", "transformers", "compressed-tensors", "bitsandbytes", "triton",
                "flashinfer-python")
    Options = Options
    devices = ("cuda",)
    requires = ("vllm",)
    calls = frozenset({"generate", "score"})
    capabilities = frozenset({"profile", "serve"})
    metrics = (QUANTIZE_S, CHECKPOINT_MIB, WEIGHTS_MIB, KV_CACHE_MIB,
               Metric("model_load_mib", "Model load memory (vLLM-reported), MiB", "lower", "load", "run",
                      "not a vLLM run, or vLLM did not log it"))

    @classmethod
    def gpus_needed(cls, options: Options) -> int:
        # Tensor parallelism: one worker process per GPU; the launcher leases that many.
        return options.tensor_parallel_size

    def __init__(self, options: Options, ctx):
        super().__init__(options, ctx)
        if options.quantization == "bitsandbytes":
            self.requires = ("vllm", "bitsandbytes")
        self.llm = None
        self.kwargs: dict[str, Any] = {}
        self.source = ""
        self.injected_qcfg: dict | None = None
        self.log_facts: dict[str, Any] = {}
        self.inspection: dict[str, Any] = {}
        self.notes: list[str] = []
        self.timing: dict[str, Any] = {}
        self.capability: tuple[int, int] | None = None
        self.gpu_name = ""
        self._log: LogCapture | None = None
        self.built = None  # backends.compress.CheckpointBuild when options.compress makes the checkpoint
        self.profile_dir: str | None = None  # where vLLM's workers write their torch profiler traces
        if options.compress is not None:
            self.requires = ("vllm", "llmcompressor")
            self.packages = self.packages + ("llmcompressor",)

    # -- checks ---------------------------------------------------------------------------------
    @classmethod
    def validate(cls, options: Options, run) -> None:
        o = options
        if run.model.task != "causal_lm" or run.task != "causal_lm":
            raise ConfigError(f"backend {run.backend!r}: the vllm engine runs causal-LM models only "
                              f"(model {run.model.name} is {run.model.task}, the workload needs {run.task})")
        if run.weights == "pretrained" and o.quantization in PREQUANTIZED and o.compress is None:
            key = checkpoint_key(o)
            if key not in (run.model.checkpoints or {}):
                listed = ", ".join(sorted(run.model.checkpoints or {})) or "none"
                raise ConfigError(
                    f"backend {run.backend!r}: {o.quantization} needs pre-quantized weights, and model "
                    f"{run.model.name!r} lists no {key!r} checkpoint (model.checkpoints: {listed}); "
                    f"add one, or use weights=synthetic")
        if (run.weights == "synthetic" and o.quantization == "compressed-tensors" and o.quantization_config is None
                and o.compress is None):
            raise ConfigError(f"backend {run.backend!r}: synthetic compressed-tensors weights need "
                              f"backend.options.quantization_config (the checkpoint's config.json entry)")
        if run.weights == "synthetic" and o.quantization in GPTQ and o.quantization_config is None:
            gptq_block_modules(run.model.architecture)  # an unknown architecture: the ConfigError says why
        if o.max_model_len is not None and o.max_model_len < auto_max_model_len(run):
            raise ConfigError(f"backend.options.max_model_len: {o.max_model_len} is shorter than the workload "
                              f"needs ({auto_max_model_len(run)} tokens)")

    def check(self) -> RunFailure | None:
        problem = super().check()
        if problem:
            return problem
        cap = self.ctx.extra.get("compute_capability")
        if cap is not None:
            self.capability, self.gpu_name = tuple(cap), str(self.ctx.extra.get("gpu_name", ""))
        else:
            self.capability, self.gpu_name = gpu_capability()
        return capability_failure(self.options, self.capability, self.gpu_name)

    # -- loading --------------------------------------------------------------------------------
    def prepare(self) -> None:
        o = self.options
        if needs_build(o, self.ctx.run):
            self.built = checkpoint(self.ctx, o.compress)
        model_source(o, self.ctx, self.built)  # config-only folder for dummy weights; real files otherwise

    def artefact_stats(self) -> dict[str, float]:
        return dict(self.built.stats) if self.built is not None else {}

    def load(self) -> None:
        o = self.options
        self._log = LogCapture()
        self._log.install()
        # The worker process has touched CUDA (device checks, NVML, env capture): a forked engine core
        # could not re-initialise it, so vLLM's engine process must be spawned.
        self._log.set_env("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        for name, value in vllm_environment().items():
            self._log.set_env(name, value)
        if o.introspect:
            # apply_model sends a function to the engine-core process; vLLM pickles it only with this set.
            self._log.set_env("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        source = model_source(o, self.ctx, self.built)
        _, _, self.injected_qcfg, self.source = source
        self.kwargs = llm_kwargs(o, self.ctx, source)
        if self.ctx.run.profile:
            # The engine core runs in another process: its profiler is configured before it starts and
            # only records between start_profile() and stop_profile() (the profiled pass).
            import tempfile

            self.profile_dir = tempfile.mkdtemp(prefix="qb_vllm_profile_")
            self.kwargs["profiler_config"] = {"profiler": "torch", "torch_profiler_dir": self.profile_dir,
                                              "torch_profiler_with_stack": False}
        if o.detokenize and not self.ctx.files.tokenizer_source():
            raise RunFailure("invalid_config", f"detokenize: model {self.ctx.run.model.name} has no tokenizer")
        import vllm

        self._log.attach()
        try:
            try:
                self.llm = vllm.LLM(**self.kwargs)
            except TypeError as exc:
                if "profiler_config" not in str(exc) or "profiler_config" not in self.kwargs:
                    raise
                # A vLLM without `profiler_config` reads the trace folder from the environment instead.
                del self.kwargs["profiler_config"]
                self._log.set_env("VLLM_TORCH_PROFILER_DIR", self.profile_dir)
                self.llm = vllm.LLM(**self.kwargs)
        except Exception as exc:  # noqa: BLE001 — classified below
            found = classify_error(f"{type(exc).__name__}: {exc}", self._log.text()[-20000:])
            if found:
                raise RunFailure(*found) from exc
            raise
        self.log_facts = parse_vllm_log(self._log.text())
        if o.introspect:
            self.inspection = self._inspect()

    def _inspect(self) -> dict[str, Any]:
        try:
            return self.llm.apply_model(inspect_model)[0]  # rank 0's view (one result per worker)
        except Exception as exc:  # noqa: BLE001 — fall back to the text vLLM prints about its layers
            self.notes.append(f"apply_model introspection failed ({type(exc).__name__}: {exc}); no weight census, "
                              "kernels are from vLLM's log lines")
        try:
            return inspection_from_text(self.llm.collective_rpc("get_model_inspection")[0])
        except Exception:  # noqa: BLE001
            return {}

    # -- work -----------------------------------------------------------------------------------
    def _sampling(self, **kw):
        from vllm import SamplingParams

        return SamplingParams(temperature=0.0, detokenize=self.options.detokenize, **kw)

    def _check_lengths(self, lengths: list[int]) -> None:
        limit = self.kwargs.get("max_model_len")
        if limit and max(lengths) > limit:
            raise RunFailure("invalid_config", f"a sequence of {max(lengths)} tokens exceeds max_model_len {limit}")

    def generate(self, prompts: list[list[int]], new_tokens: int, timer) -> list[list[int]]:
        """All prompts in one `llm.generate` call: vLLM's offline throughput mode (continuous batching).

        e2e: host clock around the blocking call (as `vllm bench throughput` times it). TTFT: until
        every request had its first token, from vLLM's per-request metrics; if they are missing, a
        separate max_tokens=1 call on the same batch.
        """
        self._check_lengths([len(p) + new_tokens for p in prompts])
        inputs = [{"prompt_token_ids": [int(t) for t in p]} for p in prompts]
        # ignore_eos with max_tokens already decodes exactly new_tokens (no stop ids or strings are set; the
        # workload checks every length). min_tokens would add vLLM's MinTokensLogitsProcessor to every step
        # of the engine core: per-step host work neither `vllm bench throughput` nor a bare loop pays
        # (scripts/vllm_factors.py measures it as its own factor).
        params = self._sampling(max_tokens=new_tokens, ignore_eos=True)
        start_wall = time.time()
        t0 = time.perf_counter()
        outs = self.llm.generate(inputs, params, use_tqdm=False)
        e2e_ms = (time.perf_counter() - t0) * 1e3
        tokens = [list(o.outputs[0].token_ids) for o in outs]
        ttft, summary = batch_ttft_ms(start_wall, [getattr(o, "metrics", None) for o in outs])
        if ttft is not None:
            self.timing = {"ttft_method": "vLLM request metrics: arrival_time + first_token_latency, latest "
                                          "request of the batch; e2e: host clock around llm.generate", **summary}
        else:
            one = self._sampling(max_tokens=1, ignore_eos=True)
            t1 = time.perf_counter()
            self.llm.generate(inputs, one, use_tqdm=False)
            ttft = (time.perf_counter() - t1) * 1e3
            self.timing = {"ttft_method": "separate max_tokens=1 call on the same batch (request metrics "
                                          "missing); e2e: host clock around llm.generate"}
        timer.external(min(ttft, e2e_ms), e2e_ms, new_tokens)
        return tokens

    def score(self, token_ids: list[int]) -> LogProbs:
        if len(token_ids) < 2:
            raise RunFailure("invalid_config", "score needs at least 2 tokens")
        self._check_lengths([len(token_ids) + 1])
        k = self.options.score_top_k
        params = self._sampling(max_tokens=1, prompt_logprobs=k, logprobs=k)
        out = self.llm.generate([{"prompt_token_ids": [int(t) for t in token_ids]}], params, use_tqdm=False)[0]
        if out.prompt_logprobs is None or not out.outputs[0].logprobs:
            raise RunFailure("crash", "vLLM returned no log-probs")
        values, indices = topk_logprobs(out.prompt_logprobs, out.outputs[0].logprobs[0], k)
        return LogProbs(values=values, indices=indices,
                        next_token_values=next_token_logprobs(out.prompt_logprobs, token_ids))

    def server(self, log_path):
        """`vllm serve` with exactly the engine arguments of the offline path (backends.vllm.serve)."""
        return server_process(self.options, self.ctx, self.built, log_path)

    def profile(self, run_once, trace_path) -> Trace | None:
        """vLLM's own torch profiler in its worker (start_profile/stop_profile around one pass); the rank-0
        worker's trace is read back. Written against vLLM's `profiler_config`; checked on CPU only as far
        as its parsing goes (the GPU pass is the H200 campaign's)."""
        if self.llm is None or self.profile_dir is None:
            return None
        import glob
        import gzip
        import json as _json

        self.llm.start_profile()
        t0 = time.perf_counter()
        units = run_once()
        span_us = (time.perf_counter() - t0) * 1e6
        self.llm.stop_profile()
        deadline = time.time() + 300  # the workers flush their traces after stop_profile returns
        files: list[str] = []
        while time.time() < deadline:
            files = sorted(glob.glob(f"{self.profile_dir}/**/*.pt.trace.json*", recursive=True),
                           key=lambda f: -Path(f).stat().st_size)
            if files:
                time.sleep(2.0)  # let the writer finish the file it started
                break
            time.sleep(1.0)
        if not files:
            raise RunFailure("crash", f"vLLM wrote no profiler trace into {self.profile_dir} within 300 s")
        raw = Path(files[0]).read_bytes()
        data = _json.loads(gzip.decompress(raw) if files[0].endswith(".gz") else raw)
        trace = trace_from_chrome(data, "cuda", span_us, units, "vLLM torch profiler (worker, rank 0)")
        trace.trace_file = save_trace(data, trace_path)
        trace.notes.append(f"read from {Path(files[0]).name}; CUDA graphs replay as graph launches")
        return trace

    # -- reporting ------------------------------------------------------------------------------
    def census(self) -> WeightCensus | None:
        return census_from_inspection(self.inspection)

    def describe(self) -> dict[str, Any]:
        o = self.options
        info: dict[str, Any] = {"engine": "vllm", "quantization": o.quantization, "dtype": o.dtype,
                                "linear_backend": o.linear_backend, "weights_source": self.source,
                                "tensor_parallel_size": o.tensor_parallel_size}
        info.update(installed_versions(("vllm", "torch", "bitsandbytes")))
        if self.capability:
            info["compute_capability"] = f"{self.capability[0]}.{self.capability[1]}"
        if self.injected_qcfg:
            info["synthetic_quantization_config"] = self.injected_qcfg
        if self.built is not None:
            info.update(build_facts(self.built, o.compress))
        if self.kwargs:
            info["llm_kwargs"] = {k: v for k, v in self.kwargs.items() if k != "model"}
        if self.llm is not None:
            try:
                info.update(resolved_config(self.llm))
            except Exception as exc:  # noqa: BLE001 — describing is best effort
                info["resolved_config_error"] = f"{type(exc).__name__}: {exc}"
        info.update(self._kernels())
        lf = self.log_facts
        attn = lf.get("attention_backend") or ", ".join(sorted(self.inspection.get("attention_backends", {})))
        if attn:
            info["attention_backend"] = attn
        for key in ("kv_cache_tokens", "max_concurrency", "model_load_s"):
            if key in lf:
                info[key] = lf[key]
        info.update(self.memory_facts())
        kernels = " ".join(info.get("linear_kernels", []))
        if lf.get("fp8_weight_only_marlin") or (o.quantization == "fp8" and "Marlin" in kernels):
            info["fp8_mode"] = "weight-only FP8 via Marlin (GPU lacks native FP8: capability < 8.9)"
        elif o.quantization == "fp8":
            info["fp8_mode"] = "W8A8 dynamic FP8"
        if self.timing:
            info["timing"] = self.timing
        if lf.get("lines"):
            info["log_lines"] = lf["lines"][:40]
        if self.notes:
            info["notes"] = self.notes
        return info

    def _kernels(self) -> dict[str, Any]:
        """Quant method and GEMM kernel per linear layer, with counts; vLLM's log lines beside them."""
        out: dict[str, Any] = {}
        insp, lf = self.inspection, self.log_facts
        per_layer = insp.get("linear_kernel_layers") or {}
        if per_layer:
            # What ran each linear layer: its kernel, or its method where it has none (fp16 GEMM).
            out["linear_kernels"] = [f"{k} x{n}" for k, n in sorted(per_layer.items(), key=lambda kv: -kv[1])]
        elif lf.get("linear_kernels"):
            out["linear_kernels"] = sorted({k for ks in lf["linear_kernels"].values() for k in ks})
        if lf.get("linear_kernels"):
            out["linear_kernels_by_method"] = lf["linear_kernels"]
        for key in ("quant_methods", "other_quant_methods", "attention_backends", "quant_methods_seen"):
            if insp.get(key):
                out[key] = insp[key]
        census = self.census()
        if census is not None:
            out["quantized_linear_layers"] = f"{census.quantized_layers}/{census.linear_layers}"
            if census.unquantized and self.options.quantization != "none":
                out["unquantized_modules"] = census.unquantized
        return out

    def memory_facts(self) -> dict[str, float]:
        facts: dict[str, float] = {}
        if "weights_bytes" in self.inspection:
            facts["weights_mib"] = round(self.inspection["weights_bytes"] / MIB, 1)
        if "model_load_gib" in self.log_facts:
            facts["model_load_mib"] = round(self.log_facts["model_load_gib"] * GIB_IN_MIB, 1)
            facts.setdefault("weights_mib", facts["model_load_mib"])
        if "kv_cache_gib" in self.log_facts:
            facts["kv_cache_mib"] = round(self.log_facts["kv_cache_gib"] * GIB_IN_MIB, 1)
        return {k: v for k, v in facts.items() if math.isfinite(v)}

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001 — best effort; the process ends after a run anyway
                pass
            del llm
            try:
                from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

                cleanup_dist_env_and_memory()
            except Exception:  # noqa: BLE001
                pass
        if self._log is not None:
            self._log.close()
            self._log = None


ENGINE = VllmEngine
