"""Typed run configuration: what one benchmark cell is, checked before anything loads.

A run = one backend (engine + typed options) x one model x one workload (all its batch sizes).
`RunConfig.from_dict` takes the composed Hydra config as a plain dict.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from runners.typed import ConfigError, as_dict, build, non_negative, positive

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
    kind: Literal["generate", "classify"]
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


@dataclass(frozen=True)
class BackendSpec:
    name: str
    engine: str
    options: Any  # the engine's own options dataclass
    description: str = ""


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

    @staticmethod
    def from_dict(cfg: dict, backend_name: str) -> "RunConfig":
        """Build and validate from the composed config. `backend_name` is the selected YAML."""
        from backends import engine_class  # light: engine modules import nothing heavy at top level

        cfg = dict(cfg)
        top = {"backend", "model", "workload", "weights", "device", "timeout_s", "resume", "isolate",
               "quality", "report"}
        unknown = sorted(set(cfg) - top - {"hydra"})
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)}; valid top-level keys: {', '.join(sorted(top))}")
        backend = dict(cfg.get("backend") or {})
        unknown = sorted(set(backend) - {"engine", "options", "description"})
        if unknown:
            raise ConfigError(f"unknown key(s) backend.{', backend.'.join(unknown)}; valid: description, engine, options")
        if "engine" not in backend:
            raise ConfigError(f"backend {backend_name!r} names no engine")
        cls = engine_class(backend["engine"])
        options = build(cls.Options, backend.get("options"), "backend.options")
        model = build(ModelSpec, cfg.get("model"), "model")
        workload = build(WorkloadSpec, cfg.get("workload"), "workload")
        weights = cfg.get("weights", "auto")
        if weights not in ("auto", "pretrained", "synthetic"):
            raise ConfigError(f"weights: {weights!r} is not valid; choose one of 'auto', 'pretrained', 'synthetic'")
        if weights == "auto":
            # A model we can load without a hub runs on its real weights; anything else measures speed
            # on random weights and says so, rather than failing on a hub the machine cannot reach.
            weights = "pretrained" if model.has_local_weights else "synthetic"
        rest = {k: cfg[k] for k in ("device", "timeout_s", "resume", "isolate") if k in cfg}
        run = build(RunConfig, {
            **rest,
            "backend": BackendSpec(backend_name, backend["engine"], options, backend.get("description", "")),
            "model": model, "workload": workload, "weights": weights,
            "quality": build(QualitySpec, cfg.get("quality"), "quality"),
            "report": build(ReportSpec, cfg.get("report"), "report"),
        })
        positive("timeout_s", run.timeout_s)
        if weights == "pretrained" and not (model.has_local_weights or model.hub_id):
            raise ConfigError(f"model {model.name!r} has no hub_id, path or packaged source: use weights=synthetic")
        cls.validate(run)
        return run

    def with_backend(self, backend: BackendSpec) -> "RunConfig":
        return replace(self, backend=backend)

    def to_dict(self) -> dict:
        return as_dict(self)

    def identity(self) -> dict:
        """What makes two runs the same measurement (resume skips a run whose identity is done)."""
        d = self.to_dict()
        for k in ("timeout_s", "resume", "isolate", "report"):
            d.pop(k, None)
        return d
