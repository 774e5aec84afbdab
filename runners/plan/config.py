"""Typed run configuration: what one benchmark cell is, checked before anything loads.

A run = one backend (engine + typed options) x one model x one workload (all its batch sizes).
`RunConfig.from_dict` resolves and validates the composed Hydra config (once, in the planner);
`RunConfig.from_plan` rebuilds that validated config from its serialised form in a child process,
without resolving anything again.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from backends.contract import ConfigError
from runners.plan.strict import as_dict, build, non_negative, positive

Task = Literal["causal_lm", "sequence_classification"]
Weights = Literal["auto", "pretrained", "synthetic"]


@dataclass(frozen=True)
class ModelSource:
    """Where real weights come from without a hub.

    kind `gguf_package`: a GGUF file shipped inside a pip package (converted once, cached);
    kind `python`: `module:function` returning a local HF folder (e.g. a classifier we train once).
    """

    kind: Literal["gguf_package", "python"]
    package: str | None = None
    file: str | None = None
    function: str | None = None
    pip: str | None = None  # what to `pip install` when the package is missing

    def __post_init__(self) -> None:
        if self.kind == "gguf_package" and not (self.package and self.file):
            raise ConfigError("model.source: kind gguf_package needs package and file")
        if self.kind == "python" and not self.function:
            raise ConfigError("model.source: kind python needs function (module:function)")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: Task
    hub_id: str | None = None
    path: str | None = None
    source: ModelSource | None = None
    # HF config kwargs (incl. model_type): enough to build the model with no hub (weights=synthetic).
    architecture: dict[str, Any] = field(default_factory=dict)
    num_labels: int = 2
    # Tokenizer for synthetic weights: a local folder / GGUF vocab, or null to feed token ids only.
    tokenizer: str | None = None
    # Pre-quantized checkpoints per method (awq, gptq, ...) for weights=pretrained.
    checkpoints: dict[str, str] = field(default_factory=dict)
    params_b: float | None = None
    # Labelled evaluation set for classifier quality (accuracy, macro-F1): `bbc-news` = the held-out
    # split of runners.evaldata.bbc_split; null = none (quality then says why it is absent).
    eval_data: Literal["bbc-news"] | None = None
    trust_remote_code: bool = False
    # Pickle-based weight files execute code on load: opt-in only.
    allow_pickle: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        positive("model.num_labels", self.num_labels)
        if not self.architecture.get("model_type"):
            raise ConfigError(f"model.architecture: model {self.name!r} needs architecture.model_type")

    @property
    def has_local_weights(self) -> bool:
        return bool(self.path or self.source)


@dataclass(frozen=True)
class WorkloadSpec:
    # A registered workload kind (runners.workload); checked against the registry by RunConfig.
    kind: str
    batch_sizes: list[int]
    prompt_tokens: int = 128
    new_tokens: int = 64
    seq_len: int = 128
    warmup: int = 2
    repeats: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.batch_sizes:
            raise ConfigError("workload.batch_sizes: give at least one batch size")
        for i, bs in enumerate(self.batch_sizes):
            positive(f"workload.batch_sizes[{i}]", bs)
        for name in ("prompt_tokens", "new_tokens", "seq_len", "repeats"):
            positive(f"workload.{name}", getattr(self, name))
        non_negative("workload.warmup", self.warmup)


@dataclass(frozen=True)
class QualitySpec:
    enabled: bool = True
    # Backend (config name) whose outputs are the reference; `auto` = fp32 on CPU, fp16 on GPU.
    reference: str = "auto"
    # Decoder evaluation text: null = the bundled default, or a path to a UTF-8 file.
    text: str | None = None
    eval_tokens: int = 256
    # Classifier evaluation examples (null = all of the held-out split).
    max_examples: int | None = 200
    # Decoders: greedy generations compared with the reference's, each from a prompt of
    # `generation_tokens` tokens of the evaluation text, `generation_tokens` new tokens long.
    generations: int = 8
    generation_tokens: int = 32

    def __post_init__(self) -> None:
        for name in ("eval_tokens", "max_examples", "generations", "generation_tokens"):
            positive(f"quality.{name}", getattr(self, name))
        if self.eval_tokens < 2:
            raise ConfigError(f"quality.eval_tokens: needs at least 2 tokens, got {self.eval_tokens}")


@dataclass(frozen=True)
class ReportSpec:
    baseline: str | None = None  # backend name; default: the first backend of the sweep
    html: bool = True
    # Which backend meets the constraints (runners.report.choose): e.g. "peak_vram<=24GiB,kl_mean<=0.05"
    require: str | None = None
    maximize: str | None = None  # objective metric to rank by, e.g. output_tokens_per_s
    minimize: str | None = None


@dataclass(frozen=True)
class Expectation:
    """What a backend promises to have run, checked after load against the engine's weight census.

    `quantized`: true = at least one linear layer on a quantized kernel; false = none.
    `weight_bits`: bits per logical weight the linear layers hold (quantized ones, when `quantized`),
    scales and zero points included; accepted from `weight_bits - 0.5` to `weight_bits + bits_tolerance`.
    `kv_cache_dtype`: the KV-cache dtype the engine reports in describe() (e.g. `fp8`: `fp8_e4m3` passes).
    """

    quantized: bool | None = None
    weight_bits: float | None = None
    bits_tolerance: float = 1.0
    kv_cache_dtype: str | None = None

    def __post_init__(self) -> None:
        positive("backend.expect.weight_bits", self.weight_bits)
        non_negative("backend.expect.bits_tolerance", self.bits_tolerance)

    @property
    def empty(self) -> bool:
        return self.quantized is None and self.weight_bits is None and self.kv_cache_dtype is None


@dataclass(frozen=True)
class BackendYaml:
    """The keys a `conf/backend/<name>.yaml` may hold."""

    engine: str
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    expect: Expectation = field(default_factory=Expectation)


@dataclass(frozen=True)
class BackendSpec:
    name: str
    engine: str
    options: Any  # the engine's own options dataclass
    description: str = ""
    expect: Expectation = field(default_factory=Expectation)


@dataclass(frozen=True)
class RunConfig:
    backend: BackendSpec
    model: ModelSpec
    workload: WorkloadSpec
    weights: Literal["pretrained", "synthetic"]
    device: Literal["auto", "cpu", "cuda"] = "auto"
    timeout_s: float = 1800.0
    resume: bool = False
    isolate: bool = True
    quality: QualitySpec = field(default_factory=QualitySpec)
    report: ReportSpec = field(default_factory=ReportSpec)
    # GPUs one cell leases for itself (null: what its engine needs, e.g. vLLM's tensor_parallel_size);
    # cells of a parallel sweep never share a GPU.
    gpus_per_job: int | None = None
    # The head the workload kind needs (causal_lm | sequence_classification): set from the workload
    # registry when the config is built, so engines need not know workload kinds.
    task: str = "causal_lm"

    @staticmethod
    def from_dict(cfg: dict, backend_name: str) -> "RunConfig":
        """Build and validate from the composed config. `backend_name` is the selected YAML."""
        from backends import engine_class  # light: engine modules import nothing heavy at top level

        cfg = {k: v for k, v in cfg.items() if k != "hydra"}
        top = {f for f in RunConfig.__dataclass_fields__} - {"task"}
        unknown = sorted(set(cfg) - top)
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)}; valid top-level keys: {', '.join(sorted(top))}")
        backend = build(BackendYaml, cfg.get("backend") or {}, "backend") if cfg.get("backend") else None
        if backend is None:
            raise ConfigError(f"backend {backend_name!r} names no engine")
        cls = engine_class(backend.engine)
        options = build(cls.Options, backend.options, "backend.options")
        model = build(ModelSpec, cfg.get("model"), "model")
        workload = build(WorkloadSpec, cfg.get("workload"), "workload")
        weights = cfg.get("weights", "auto")
        if weights not in ("auto", "pretrained", "synthetic"):
            raise ConfigError(f"weights: {weights!r} is not valid; choose one of 'auto', 'pretrained', 'synthetic'")
        if weights == "auto":
            # A model we can load without a hub runs on its real weights; anything else measures speed
            # on random weights and says so, rather than failing on a hub the machine cannot reach.
            weights = "pretrained" if model.has_local_weights else "synthetic"
        rest = {k: cfg[k] for k in ("device", "timeout_s", "resume", "isolate", "gpus_per_job") if k in cfg}
        from runners.workload import workload_kinds

        kinds = workload_kinds()
        if workload.kind not in kinds:
            raise ConfigError(f"workload.kind: {workload.kind!r} is not valid; choose one of "
                              f"{', '.join(map(repr, kinds))}")
        run = build(RunConfig, {
            **rest, "task": kinds[workload.kind],
            "backend": BackendSpec(backend_name, backend.engine, options, backend.description, backend.expect),
            "model": model, "workload": workload, "weights": weights,
            "quality": build(QualitySpec, cfg.get("quality"), "quality"),
            "report": build(ReportSpec, cfg.get("report"), "report"),
        })
        run.check()
        cls.validate(run)
        run.check_files()
        return run

    def check(self) -> None:
        """Checks across sections, before any engine is asked."""
        positive("gpus_per_job", self.gpus_per_job)
        if not math.isfinite(self.timeout_s) or self.timeout_s <= 0:
            raise ConfigError(f"timeout_s: must be a positive number of seconds, got {self.timeout_s}")
        model, wl = self.model, self.workload
        if self.weights == "pretrained" and not (model.has_local_weights or model.hub_id):
            raise ConfigError(f"model {model.name!r} has no hub_id, path or packaged source: use weights=synthetic")
        limit = model.architecture.get("max_position_embeddings")
        need = wl.prompt_tokens + wl.new_tokens if self.task == "causal_lm" else wl.seq_len
        what = (f"workload.prompt_tokens + workload.new_tokens = {need}" if self.task == "causal_lm"
                else f"workload.seq_len = {need}")
        if isinstance(limit, int) and need > limit:
            raise ConfigError(f"{what} exceeds model {model.name}'s max_position_embeddings ({limit})")

    def check_files(self) -> None:
        model = self.model
        if self.weights == "pretrained" and model.path:
            path = Path(model.path).expanduser()
            if not path.exists():
                raise ConfigError(f"model.path {model.path} does not exist")
            if not path.is_dir():
                raise ConfigError(f"model.path {model.path} is a file, not a folder: give the folder that holds "
                                  f"config.json and the weights")

    @staticmethod
    def from_plan(d: dict) -> "RunConfig":
        """Rebuild a config that `from_dict` already validated (serialised with `to_dict`)."""
        from backends import engine_class

        b = d["backend"]
        options = build(engine_class(b["engine"]).Options, b["options"], "backend.options")
        backend = BackendSpec(b["name"], b["engine"], options, b.get("description", ""),
                              build(Expectation, b.get("expect") or {}, "backend.expect"))
        return build(RunConfig, {**d, "backend": backend})

    def with_backend(self, backend: BackendSpec) -> "RunConfig":
        return replace(self, backend=backend)

    def to_dict(self) -> dict:
        return as_dict(self)

    def identity(self) -> dict:
        """What makes two runs the same measurement (resume skips a run whose identity is done)."""
        d = self.to_dict()
        for k in ("timeout_s", "resume", "isolate", "report", "task", "gpus_per_job"):
            d.pop(k, None)
        return d
