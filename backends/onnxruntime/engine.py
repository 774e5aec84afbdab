"""The ONNX Runtime engine: prepare() exports and quantizes the run's model folder once (cached),
load() opens an ORT session on the result and probes where its nodes run.

Artefacts are cached under `<cache>/onnx/<key>` (key: model folder identity, weights, task, opset,
options, library versions) and written atomically, so a second run only creates the session.
"""
from __future__ import annotations

import importlib
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.contract import (EXPORT_S, QUANTIZE_S, WEIGHTS_MIB, Activity, ConfigError, Engine, LogProbs, Metric,
                               RunFailure, Trace, WeightCensus)
from backends.contract.profiling import save_trace
from backends.contract import build_once, content_key, folder_identity
from backends.onnxruntime.census import FLOAT_OPS, QUANTIZED_OPS, file_census
from backends.contract.weights import refuse_pickle
from backends.onnxruntime.export import MODEL_FILE, export_model
from backends.onnxruntime.options import CPU_EP, CUDA_EP, Options, resolve_providers
from backends.onnxruntime.placement import node_placement, placement_text, session_ops
from backends.onnxruntime.progress import Heartbeat, quiet_libraries
from backends.onnxruntime.quantize import REWRITE_FORMAT, REWRITES

if TYPE_CHECKING:
    import numpy as np

    from backends.contract import StepTimer

GPU_EXTRA = "ort-gpu"
# Bumped when the export wrapper or the rewrite steps change what an artefact contains.
ARTIFACT_FORMAT = 1
MIB = 2**20


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


def library_versions() -> dict[str, str]:
    """Versions that shape an artefact (part of its cache key)."""
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


def op_counts(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def artifact_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / MIB


def cuda_provider_fails() -> str | None:
    """Why ONNX Runtime's CUDA provider does not start a session here, or None when it does: ORT
    falls back to CPU with a log line only. One Identity node, so it costs the CUDA context alone."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    # torch loads the CUDA/cuDNN libraries that an onnxruntime-gpu installed with --target cannot find.
    importlib.import_module("torch")
    tensor = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("x", "y")]
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                                                tensor[:1], tensor[1:]),
                              opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), so, providers=[CUDA_EP, CPU_EP])
    except Exception as exc:  # noqa: BLE001 - any failure to start is the answer
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    actual = session.get_providers()
    return None if CUDA_EP in actual else f"the session fell back to {', '.join(actual)}"


def profiled_placement(session: Any) -> dict[str, Any]:
    """End a session's profiling; where its nodes ran (node_placement's dict)."""
    profile_file = session.end_profiling()
    return node_placement(json.loads(Path(profile_file).read_text()) if profile_file else [])


def argmax_model(logits_type: str) -> bytes:
    """Greedy decoding's pick as a graph of its own: ArgMax over the vocabulary of the last logits,
    run where the logits are (the device), so only the token ids cross to the host. numpy's argmax
    on float16 is emulated: at batch 16 x 151,936 logits it took 14 ms a step on a 2-core VM."""
    from onnx import TensorProto, helper

    elem = {"tensor(float16)": TensorProto.FLOAT16, "tensor(float)": TensorProto.FLOAT}[logits_type]
    nodes = [helper.make_node("Cast", ["logits"], ["logits32"], to=TensorProto.FLOAT),
             helper.make_node("ArgMax", ["logits32"], ["next"], axis=-1, keepdims=0)]
    graph = helper.make_graph(nodes, "greedy", [helper.make_tensor_value_info("logits", elem, ["b", "k", "v"])],
                              [helper.make_tensor_value_info("next", TensorProto.INT64, ["b", "k"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8).SerializeToString()


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    extra = "ort"
    packages = ("onnxruntime", "onnxruntime-gpu", "onnx", "onnxscript", "torch", "transformers")
    requires = ("onnxruntime", "onnx", "onnxscript")
    Options = Options
    devices = ("cpu", "cuda")
    capabilities = frozenset({"profile"})
    metrics = (EXPORT_S, QUANTIZE_S, WEIGHTS_MIB,
               Metric("onnx_artifact_mib", "ONNX model on disk, MiB", "lower", "load", "run", "not an ONNX Runtime run"))

    def __init__(self, options: Options, ctx):
        super().__init__(options, ctx)
        self.providers = resolve_providers(options.providers, ctx.device)
        self.session: Any = None
        self._greedy: Any = None  # decoders: the ArgMax session (argmax_model)
        self.artifact: Path | None = None
        self.stats: dict[str, float] = {}  # what preparing cost this run: export_s, quantize_s
        self.cache_hit: bool | None = None  # whether the graph came from the cache
        self.info: dict[str, Any] = {}
        self._census: WeightCensus | None = None

    @classmethod
    def validate(cls, options: Options, run: Any) -> None:
        if options.providers == "cuda" and run.device == "cpu":
            raise ConfigError("backend.options.providers: cuda needs device=cuda (or auto on a GPU host), "
                              "not device=cpu")
        if "generate" in run.calls and run.model.task != "causal_lm":
            raise ConfigError(f"generation needs a causal_lm model; {run.model.name} is {run.model.task}")

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
            # Compiled in is not started: a provider whose CUDA libraries do not load is found here,
            # before minutes of export, rather than by the session that load() opens.
            why = cuda_provider_fails()
            if why:
                return RunFailure("unsupported_hardware",
                                  f"onnxruntime {ort.__version__} could not start {CUDA_EP} ({why}); "
                                  "check the CUDA/cuDNN libraries onnxruntime-gpu needs")
        return None

    # -- preparation: export and quantize once, not timed as load ---------------------------------
    def prepare(self) -> None:
        """The graph for this run's precision, exported / quantized once and cached."""
        super().prepare()
        opts, ctx = self.options, self.ctx
        folder = ctx.files.folder()
        if not ctx.run.model.allow_pickle:
            # Before the cache too: an export made while pickles were allowed is no licence now.
            refuse_pickle(folder)
        self.stats = {}
        self._census = None
        base_key = [ARTIFACT_FORMAT, folder_identity(folder), ctx.run.weights, ctx.run.task,
                    ctx.num_labels, opts.graph_dtype, opts.opset, library_versions()]
        root = Path(ctx.cache_dir) / "onnx"
        exported = root / content_key("export", *base_key)
        model = ctx.run.model

        def export(tmp: Path) -> None:
            t0 = time.perf_counter()
            with quiet_libraries(), Heartbeat(f"exporting {model.name} to ONNX (first time only)"):
                export_model(folder, ctx.run.task, opts.graph_dtype, opts.opset, tmp,
                             trust_remote_code=model.trust_remote_code, allow_pickle=model.allow_pickle)
            self.stats["export_s"] = round(time.perf_counter() - t0, 3)

        final = exported
        if opts.precision in REWRITES:
            q = opts.quantization()
            final = root / content_key(opts.precision, q, REWRITE_FORMAT[opts.precision], *base_key)

            def rewrite(tmp: Path) -> None:
                build_once(exported, export)  # only when the quantized graph is not cached already
                t0 = time.perf_counter()
                with quiet_libraries(), Heartbeat(f"quantizing {model.name} to {opts.precision} (first time only)"):
                    REWRITES[opts.precision](exported, tmp, q)
                self.stats["quantize_s"] = round(time.perf_counter() - t0, 3)

            self.cache_hit = build_once(final, rewrite)
        else:
            self.cache_hit = build_once(exported, export)
        self.artifact = final

    def artefact_stats(self) -> dict[str, float]:
        return dict(self.stats)

    # -- load: open the session, see where its nodes run ------------------------------------------
    def load(self) -> None:
        if self.artifact is None:
            raise RuntimeError("OnnxRuntimeEngine.load() opens the graph prepare() builds: call prepare() first")
        if CUDA_EP in self.providers:
            # torch loads the CUDA/cuDNN libraries that an onnxruntime-gpu installed with --target cannot find.
            importlib.import_module("torch")
        placement, greedy = self._open(self.artifact)
        # The options each provider really runs with (device_id, use_tf32, the arena's strategy, ...).
        self.info.update(providers_requested=list(self.providers), providers=self.session.get_providers(),
                         provider_options={p: dict(o) for p, o in self.session.get_provider_options().items()})
        self._check_providers(self.session, "session")
        if self._greedy is not None:
            self._check_providers(self._greedy, "the greedy ArgMax session")
            # Where the pick really ran (a provider can take the session and still leave a node to CPU).
            self.info["greedy_pick"] = ("ArgMax in a second session on the logits where the decoder left them, "
                                        "token ids copied to the host: "
                                        + placement_text(greedy["node_placement"], greedy["nodes_total"],
                                                         greedy["data_node_placement"]))
            self.info["greedy_node_placement"] = greedy["ops_by_provider"]
        self.info.update(placement)
        self.info["placement"] = placement_text(placement["node_placement"], placement["nodes_total"],
                                                placement["data_node_placement"])
        self.info["artifact"] = str(self.artifact)
        self.info["artifact_mib"] = round(artifact_mib(self.artifact), 2)
        self.info["graph_ops"] = op_counts(self.artifact / MODEL_FILE)

    def profile(self, run_once, trace_path) -> Trace:
        """One pass on sessions opened with ORT's profiler on (the measured ones stay as they were); each
        node's kernel time is an activity, each run's `model_run` the device time they add up to."""
        import onnxruntime as ort

        saved = (self.session, self._greedy)
        with tempfile.TemporaryDirectory(prefix="qb_ort_prof_") as tmp:
            try:
                self.session = ort.InferenceSession(str(self.artifact / MODEL_FILE), self._session_options(tmp),
                                                    providers=self._provider_specs())
                if saved[1] is not None:
                    greedy_dir = os.path.join(tmp, "greedy")
                    os.makedirs(greedy_dir)
                    self._greedy = ort.InferenceSession(argmax_model(self.session.get_outputs()[0].type),
                                                        self._session_options(greedy_dir),
                                                        providers=self._provider_specs())
                t0 = time.perf_counter()
                units = run_once()
                span_us = (time.perf_counter() - t0) * 1e6
                events = []
                for s in (self.session, self._greedy):
                    if s is not None and s is not saved[1]:
                        path = s.end_profiling()
                        events += json.loads(Path(path).read_text()) if path else []
            finally:
                self.session, self._greedy = saved
        nodes = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]
        activities = [Activity(str((e.get("args") or {}).get("op_name") or e["name"]), float(e.get("dur", 0)))
                      for e in nodes]
        runs = sum(float(e.get("dur", 0)) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
        # What a run spent outside its nodes' kernels (allocation, fences, binding): shown, not hidden.
        between = runs - sum(a.dur_us for a in activities)
        if between > 0:
            activities.append(Activity("onnxruntime executor, between nodes (allocation, fences, IO binding)", between))
        device = "cuda" if CUDA_EP in self.providers else "cpu"
        trace = Trace(f"onnxruntime {ort.__version__} profiling", device, span_us, runs, activities, None, None, units)
        if device == "cuda":
            trace.notes.append("ORT's node times on the CUDA provider are host-side (launch) times, not kernel "
                               "times: the busy share is not measured")
        trace.trace_file = save_trace({"traceEvents": events}, trace_path)
        return trace

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

    def _open(self, path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Create the session (and a decoder's greedy session); return where their nodes ran
        (node_placement's dicts; None for a graph without a greedy pick)."""
        import onnxruntime as ort

        with tempfile.TemporaryDirectory(prefix="qb_ort_") as tmp:
            self.session = session = ort.InferenceSession(str(path / MODEL_FILE), self._session_options(tmp),
                                                          providers=self._provider_specs())
            self._io = {i.name: i for i in session.get_inputs()}
            self._outputs = [o.name for o in session.get_outputs()]
            self._device = "cuda" if CUDA_EP in session.get_providers() else "cpu"
            if "past.0.key" in self._io:
                greedy_dir = os.path.join(tmp, "greedy")
                os.makedirs(greedy_dir)
                self._greedy = ort.InferenceSession(argmax_model(session.get_outputs()[0].type),
                                                    self._session_options(greedy_dir),
                                                    providers=self._provider_specs())
            self._probe()
            greedy = profiled_placement(self._greedy) if self._greedy is not None else None
            return profiled_placement(session), greedy

    def _probe(self) -> None:
        """One tiny forward (and pick), so that the profiles list every node with the provider that ran it."""
        import numpy as np

        ids = np.array([[1, 2]], dtype=np.int64)
        if "past.0.key" in self._io:
            logits, _ = self._forward(ids, np.ones_like(ids), np.array([[0, 1]]), np.array([1]), self._empty_past(1))
            self._pick(logits)
        else:
            self.session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})

    def _check_providers(self, session: Any, what: str) -> None:
        actual = session.get_providers()
        missing = [p for p in self.providers if p not in actual]
        if missing:
            # ORT falls back to CPU with a log line only; a "CUDA" number measured on CPU is a lie.
            raise RunFailure("unsupported_hardware",
                             f"onnxruntime could not start {', '.join(missing)} ({what} has {', '.join(actual)}); "
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

    def _forward(self, ids, mask, positions, index, past: dict) -> tuple[Any, dict]:
        """One decoder step via IO binding: logits and cache stay where the provider keeps them (GPU
        memory on CUDA), as OrtValues."""
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
        return outs[0], present

    def _pick(self, logits: Any) -> "np.ndarray":
        """Greedy next token per row ([batch, 1] int64) from the last step's logits OrtValue."""
        binding = self._greedy.io_binding()
        binding.bind_ortvalue_input("logits", logits)
        binding.bind_output("next", "cpu")
        self._greedy.run_with_iobinding(binding)
        return binding.get_outputs()[0].numpy()[:, -1:]

    def generate(self, prompts: list[list[int]], new_tokens: int, timer: "StepTimer") -> list[list[int]]:
        import numpy as np

        ids, mask, positions = left_pad(prompts)
        past = self._empty_past(len(prompts))
        last = np.array([ids.shape[1] - 1])
        out = []
        for step in range(new_tokens):
            logits, past = self._forward(ids, mask, positions, last, past)
            ids = self._pick(logits)
            timer.token()
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
        return LogProbs(values=log_softmax(logits.numpy()[0]))

    def classify(self, input_ids: "np.ndarray", attention_mask: "np.ndarray") -> "np.ndarray":
        import numpy as np

        (logits,) = self.session.run(["logits"], {"input_ids": np.asarray(input_ids, dtype=np.int64),
                                                  "attention_mask": np.asarray(attention_mask, dtype=np.int64)})
        return logits.astype(np.float32)

    # -- reporting -------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        info: dict[str, Any] = {
            "engine": self.name, "onnxruntime": ort.__version__,
            # Which build was imported: onnxruntime-gpu installed beside a CPU onnxruntime has the same version.
            "onnxruntime_build": ort.get_device(), "onnxruntime_module": os.path.dirname(ort.__file__),
            "exporter": "torch.onnx.export(dynamo=True)",
            "versions": library_versions(), "precision": self.options.precision,
            "dtype": self.options.graph_dtype, "opset": self.options.opset,
            "quantization": self.options.quantization(), "threads": self.options.threads,
            "graph_optimization": self.options.graph_optimization, "io_binding": True,
            **({"tf32": self.options.tf32} if CUDA_EP in self.providers else {}), **self.stats,
            "cache_hit": self.cache_hit, **self.info,
        }
        census = self.census()
        if census is not None:
            info["linear_kernels"] = ", ".join(f"{k} x{n}" for k, n in sorted(census.layers.items(),
                                                                              key=lambda kv: -kv[1]))
            # What the quantizer wrote, per op (MatMulInteger: 210), and what stayed float, by module.
            info["quantized_nodes"] = {k: census.layers[k] for k in census.quantized_kinds}
            info["unquantized_nodes"] = census.unquantized
            # After ORT's own fusions: what the session ran (attention's activation MatMuls included).
            info["session_matmul_ops"] = session_ops(self.info.get("ops_by_provider", {}),
                                                     set(QUANTIZED_OPS) | set(FLOAT_OPS))
        return info

    def census(self) -> WeightCensus | None:
        """The weight-bearing nodes of the graph the session was created from (see census.py)."""
        if self.session is None or self.artifact is None:
            return None
        if self._census is None:
            quantizing = self.options.precision in REWRITES
            self._census = file_census(self.artifact / MODEL_FILE, self.options.quantize_head if quantizing else None)
        return self._census

    def memory_facts(self) -> dict[str, float]:
        facts = {"onnx_artifact_mib": self.info["artifact_mib"]} if "artifact_mib" in self.info else {}
        census = self.census()
        if census is not None and census.weights_bytes:
            # Every initializer the session holds: the bytes a batch-1 decode step streams, at most.
            facts["weights_mib"] = round(census.weights_bytes / MIB, 1)
        return facts

    def close(self) -> None:
        self.session = self._greedy = None


ENGINE = OnnxRuntimeEngine
