"""Typed run configuration: what one benchmark cell is, checked before anything loads.

A run = one backend (engine + typed options) x one model x one workload (all its batch sizes).
`RunConfig.from_dict` resolves and validates the composed Hydra config (once, in the planner);
`RunConfig.from_plan` rebuilds that validated config from its serialised form in a child process,
without resolving anything again.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

# Engine and workload-kind modules import nothing heavy at top level: the registries cost milliseconds.
from backends import engine_class, engine_names
from backends.contract import ConfigError, EngineRun, ModelFacts
from runners.plan.strict import as_dict, build, non_negative, positive
from runners.evaldata import EVAL_TEXT_DEFAULT
from runners.measure.stats import CI_LEVEL, min_repeats_for_median_interval
from runners.policy import decoder_quality_applies, quality_calls
from runners.workload import workload, workload_kinds

Task = Literal["causal_lm", "sequence_classification"]
Weights = Literal["auto", "pretrained", "synthetic"]
# Field metadata: `coordinate` marks a field that places a run in a table (a block's coordinates, names,
# descriptions), never a parameter that varies inside one.
COORDINATE = {"coordinate": True}


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
    name: str = field(metadata=COORDINATE)
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
    description: str = field(default="", metadata=COORDINATE)

    def __post_init__(self) -> None:
        positive("model.num_labels", self.num_labels)
        if not self.architecture.get("model_type"):
            raise ConfigError(f"model.architecture: model {self.name!r} needs architecture.model_type")

    @property
    def has_local_weights(self) -> bool:
        return bool(self.path or self.source)


@dataclass(frozen=True)
class ServeSpec:
    """The `serve` workload's load: one load point per offered request rate, against a real server."""

    # Offered request rates, req/s; `inf` sends every request of the point at once. One load point each.
    rates: list[float | str] = field(metadata=COORDINATE)
    arrival: Literal["poisson", "constant"] = "poisson"
    # Requests per load point; with `seconds` set, seconds x rate of them, and never fewer than `requests`
    # (a high rate needs seconds of arrivals to reach steady state, a low one enough requests for its
    # percentiles: p90 needs tens, p99 hundreds). The all-at-once point (inf) sends `requests`.
    requests: int = 32
    seconds: float | None = None
    # The most requests in flight at once (null: as the arrivals come); a closed-loop cap like vLLM's
    # `--max-concurrency`.
    max_concurrency: int | None = None
    warmup_requests: int = 2  # sent one by one before each load point, not kept
    # `bbc`: the BBC News text quantbench ships, cut into prompts of prompt_tokens tokens by the model's
    # tokenizer (the server tokenizes them again); `random`: seeded token ids sent as ids (vLLM only).
    prompts: Literal["bbc", "random"] = "bbc"
    request_timeout_s: float = 300.0
    start_timeout_s: float = 900.0  # the server must answer its health check within this

    def __post_init__(self) -> None:
        if not self.rates:
            raise ConfigError("workload.serve.rates: give at least one request rate (req/s, or inf)")
        for i, r in enumerate(self.rates):
            if isinstance(r, str) and r.strip().lower() not in ("inf", "infinity"):
                raise ConfigError(f"workload.serve.rates[{i}]: {r!r} is not a rate; give a number of requests/s > 0 "
                                  f"or inf (every request at once)")
            if not isinstance(r, str) and not (r > 0):
                raise ConfigError(f"workload.serve.rates[{i}]: must be > 0 req/s (or inf), got {r}")
        if len(set(self.rates_per_s)) != len(self.rates):
            raise ConfigError(f"workload.serve.rates: {list(self.rates)} names a rate twice")
        for name in ("requests", "max_concurrency", "seconds", "request_timeout_s", "start_timeout_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"workload.serve.{name}: must be > 0, got {value}")
        non_negative("workload.serve.warmup_requests", self.warmup_requests)

    @property
    def rates_per_s(self) -> list[float]:
        return [math.inf if isinstance(r, str) else float(r) for r in self.rates]

    def requests_at(self, rate_per_s: float) -> int:
        if self.seconds is None or math.isinf(rate_per_s):
            return self.requests
        return max(self.requests, math.ceil(rate_per_s * self.seconds))


@dataclass(frozen=True)
class WorkloadSpec:
    # A registered workload kind (runners.workload); checked against the registry by RunConfig.
    kind: str = field(metadata=COORDINATE)
    # Offline kinds: one point per batch size. `serve` has load points (serve.rates) instead.
    batch_sizes: list[int] = field(default_factory=list, metadata=COORDINATE)
    prompt_tokens: int = 128
    new_tokens: int = 64
    seq_len: int = 128
    warmup: int = 2
    # A number of timed repeats, or "auto": repeat until the primary metric's median has a 95% interval
    # of half-width under ci_target_pct of the median, or max_repeats or max_seconds is reached.
    repeats: int | Literal["auto"] = 10
    seed: int = 0
    ci_target_pct: float = 1.0
    max_repeats: int = 50
    max_seconds: float = 300.0  # of timed repeats, warm-up excluded
    serve: ServeSpec | None = None

    def __post_init__(self) -> None:
        serves = getattr(workload_kinds().get(self.kind), "serves", False)
        if serves and self.serve is None:
            raise ConfigError(f"workload.serve: workload kind {self.kind!r} needs a serve section (rates, arrival, "
                              f"requests): see conf/workload/serve.yaml")
        if not serves and self.serve is not None:
            raise ConfigError(f"workload.serve: only a serving workload takes it (workload.kind={self.kind!r})")
        if serves and self.batch_sizes:
            raise ConfigError(f"workload.batch_sizes: workload kind {self.kind!r} has load points "
                              f"(workload.serve.rates), not batch sizes")
        if not serves and not self.batch_sizes:
            raise ConfigError("workload.batch_sizes: give at least one batch size")
        for i, bs in enumerate(self.batch_sizes):
            positive(f"workload.batch_sizes[{i}]", bs)
        for name in ("prompt_tokens", "new_tokens", "seq_len", "max_repeats"):
            positive(f"workload.{name}", getattr(self, name))
        for name in ("ci_target_pct", "max_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"workload.{name}: must be a positive number, got {value}")
        non_negative("workload.warmup", self.warmup)
        self._check_repeats()

    @property
    def points_text(self) -> str:
        """The run's points in words: "batch sizes [1, 8]", or "rates 1, 2, inf req/s"."""
        if self.serve is not None:
            return "rates " + ", ".join("inf" if math.isinf(r) else f"{r:g}" for r in self.serve.rates_per_s) + " req/s"
        return f"batch sizes {self.batch_sizes}"

    def _check_repeats(self) -> None:
        if self.repeats == "auto":
            need = min_repeats_for_median_interval(CI_LEVEL)
            if self.max_repeats < need:
                raise ConfigError(f"workload.max_repeats: repeats=auto needs at least {need} (the fewest repeats "
                                  f"with a {CI_LEVEL:.0%} interval of the median), got {self.max_repeats}")
            return
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int):
            raise ConfigError(f"workload.repeats: {self.repeats!r} is not valid; choose a positive integer or 'auto'")
        positive("workload.repeats", self.repeats)


AUTO_REPEAT_FIELDS = ("ci_target_pct", "max_repeats", "max_seconds")


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
    # A serving SLO in the --require syntax (runners.measure.serving.Slo), e.g. "ttft_p90<=500ms,tpot_p90<=50ms":
    # goodput, attainment and each backend's capacity under it.
    slo: str | None = None


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
    name: str = field(metadata=COORDINATE)
    engine: str = field(metadata=COORDINATE)
    options: Any  # the engine's own options dataclass
    description: str = field(default="", metadata=COORDINATE)
    expect: Expectation = field(default_factory=Expectation)


# Field metadata: `identity: False` marks a field that does not change what is measured (resume skips a
# run whose identity is done, whatever its value); `derived: True` one the builder sets, never a user.
NOT_IDENTITY = {"identity": False}


@dataclass(frozen=True)
class RunConfig:
    """What one run measures: one backend x one model x one workload (all its batch sizes)."""

    backend: BackendSpec
    model: ModelSpec
    workload: WorkloadSpec
    weights: Literal["pretrained", "synthetic"] = field(metadata=COORDINATE)
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata=COORDINATE)
    timeout_s: float = field(default=1800.0, metadata=NOT_IDENTITY)
    quality: QualitySpec = field(default_factory=QualitySpec)
    # One more pass of each batch size after its timed repeats, under the engine's profiler: where the
    # time goes (runners.measure.breakdown). Never mixed into the timed numbers.
    profile: bool = False
    # The head the workload kind needs (causal_lm | sequence_classification): set from the workload
    # registry when the config is built, so engines need not know workload kinds.
    task: str = field(default="causal_lm", metadata={**NOT_IDENTITY, "derived": True})

    @staticmethod
    def from_dict(cfg: dict, backend_name: str) -> "RunConfig":
        """Build and validate from the composed config (sweep settings are checked, then left to
        SweepSettings). `backend_name` is the selected YAML."""
        cfg = {k: v for k, v in cfg.items() if k != "hydra"}
        top = top_level_keys()
        unknown = sorted(set(cfg) - set(top))
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)}; valid top-level keys: {', '.join(sorted(top))}")
        backend, cls = backend_spec(cfg.get("backend"), backend_name)
        model = build(ModelSpec, cfg.get("model"), "model")
        workload = build(WorkloadSpec, cfg.get("workload"), "workload")
        weights = cfg.get("weights", "auto")
        if weights not in ("auto", "pretrained", "synthetic"):
            raise ConfigError(f"weights: {weights!r} is not valid; choose one of 'auto', 'pretrained', 'synthetic'")
        if weights == "auto":
            # A model we can load without a hub runs on its real weights; anything else measures speed
            # on random weights and says so, rather than failing on a hub the machine cannot reach.
            weights = "pretrained" if model.has_local_weights else "synthetic"
        kinds = workload_kinds()
        if workload.kind not in kinds:
            raise ConfigError(f"workload.kind: {workload.kind!r} is not valid; choose one of "
                              f"{', '.join(map(repr, kinds))}")
        given = {name: cfg[name] for name in _plain_fields(RunConfig) if name in cfg}
        run = build(RunConfig, {
            **given, "task": kinds[workload.kind].task, "backend": backend, "model": model, "workload": workload,
            "weights": weights, "quality": build(QualitySpec, cfg.get("quality"), "quality"),
        })
        run.check()
        check_engine(run, run.engine_view(run.device), cls)
        run.check_files()
        return run

    def calls(self) -> frozenset[str]:
        """The engine calls this run makes: its workload kind's, and quality's."""
        return frozenset(workload(self.workload.kind).calls) | quality_calls(self.quality.enabled, self.weights,
                                                                           self.task)

    def retokenize_slack(self) -> int:
        """Tokens a served text prompt may gain: cut at prompt_tokens tokens, it may tokenize a few tokens
        longer on the server (a word split at the cut merges differently): room for it, not a refused
        request. Token-id prompts and in-process workloads need none."""
        wl = self.workload
        return max(16, wl.prompt_tokens // 16) if wl.kind == "serve" and wl.serve.prompts == "bbc" else 0

    def max_sequence_tokens(self) -> int:
        """The longest sequence any call of the run holds (workload and quality): an engine's context."""
        wl, q = self.workload, self.quality
        need = wl.prompt_tokens + wl.new_tokens + self.retokenize_slack() if self.task == "causal_lm" else wl.seq_len
        # Sized for quality whenever it is on (as vLLM runs have always been sized: a context that does not
        # move with the weights mode keeps synthetic and real runs of one cell comparable).
        if q.enabled:
            need = max(need, q.eval_tokens + 8)  # scoring: the text plus one generated token, with slack
            need = max(need, 2 * q.generation_tokens)  # greedy generations: prompt + new tokens
        return int(need)

    def engine_view(self, device: str) -> EngineRun:
        """What the engine may know of this run (backends.contract.EngineRun)."""
        m = self.model
        return EngineRun(backend=self.backend.name,
                         model=ModelFacts(name=m.name, task=m.task, architecture=dict(m.architecture),
                                          num_labels=m.num_labels, trust_remote_code=m.trust_remote_code,
                                          allow_pickle=m.allow_pickle, checkpoints=dict(m.checkpoints)),
                         weights=self.weights, device=device, task=self.task, calls=self.calls(),
                         max_sequence_tokens=self.max_sequence_tokens(), profile=self.profile)

    def check(self) -> None:
        """Checks across sections, before any engine is asked."""
        if not math.isfinite(self.timeout_s) or self.timeout_s <= 0:
            raise ConfigError(f"timeout_s: must be a positive number of seconds, got {self.timeout_s}")
        model, wl = self.model, self.workload
        if self.weights == "pretrained" and not (model.has_local_weights or model.hub_id):
            raise ConfigError(f"model {model.name!r} has no hub_id, path or packaged source: use weights=synthetic")
        limit = model.architecture.get("max_position_embeddings")
        slack = self.retokenize_slack()
        need = wl.prompt_tokens + wl.new_tokens + slack if self.task == "causal_lm" else wl.seq_len
        what = (f"workload.prompt_tokens + workload.new_tokens{f' + {slack} (served text re-tokenized)' if slack else ''}"
                f" = {need}" if self.task == "causal_lm" else f"workload.seq_len = {need}")
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
        q = self.quality
        if decoder_quality_applies(q.enabled, self.weights, self.task) and q.text not in (None, EVAL_TEXT_DEFAULT):
            text = Path(q.text).expanduser()
            if not text.is_file():
                raise ConfigError(f"quality.text: {q.text} is not a file; give a UTF-8 text file, or leave it null "
                                  f"for the bundled BBC News text")
            if not text.read_bytes().strip():
                raise ConfigError(f"quality.text: {q.text} is empty; quality needs {q.eval_tokens} tokens of text")

    @staticmethod
    def from_plan(d: dict) -> "RunConfig":
        """Rebuild a config that `from_dict` already validated (serialised with `to_dict`)."""
        b = d["backend"]
        options = build(engine_class(b["engine"]).Options, b["options"], "backend.options")
        backend = BackendSpec(b["name"], b["engine"], options, b.get("description", ""),
                              build(Expectation, b.get("expect") or {}, "backend.expect"))
        # A record written before the sweep settings left the run config still holds them.
        run = {k: v for k, v in d.items() if k not in sweep_setting_names()}
        return build(RunConfig, {**run, "backend": backend})

    def to_dict(self) -> dict:
        d = as_dict(self)
        if self.workload.serve is None:
            d["workload"].pop("serve", None)  # offline runs keep the identity they had before serving existed
        if self.workload.repeats != "auto":
            # The stopping rule of repeats=auto means nothing to a fixed count: leaving it out keeps the
            # record (and the run's identity) what it was before the rule existed.
            for key in AUTO_REPEAT_FIELDS:
                d["workload"].pop(key, None)
        return d

    def identity(self) -> dict:
        """What makes two runs the same measurement (resume skips a run whose identity is done)."""
        d = self.to_dict()
        for f in fields(RunConfig):
            if not f.metadata.get("identity", True):
                d.pop(f.name, None)
        return d


@dataclass(frozen=True)
class SweepSettings:
    """How a sweep runs its cells, not what a cell measures: never part of a run's identity or record."""

    resume: bool = False
    # Each run in its own process (false: in this one; for debugging and tests).
    isolate: bool = True
    report: ReportSpec = field(default_factory=ReportSpec)
    # GPUs one cell leases for itself (null: what its engine needs, e.g. vLLM's tensor_parallel_size);
    # cells of a parallel sweep never share a GPU.
    gpus_per_job: int | None = None

    def __post_init__(self) -> None:
        positive("gpus_per_job", self.gpus_per_job)

    @staticmethod
    def from_dict(cfg: dict) -> "SweepSettings":
        return build(SweepSettings, {f.name: cfg[f.name] for f in fields(SweepSettings) if f.name in cfg})

    def to_dict(self) -> dict:
        return as_dict(self)


def _plain_fields(cls: type) -> list[str]:
    """Top-level fields a user sets directly (not sections with their own builder, not derived)."""
    sections = {"backend", "model", "workload", "quality"}
    return [f.name for f in fields(cls) if f.name not in sections and not f.metadata.get("derived")]


def top_level_keys() -> list[str]:
    """Every key a composed config may hold at its top level: the run's fields and the sweep's."""
    run = [f.name for f in fields(RunConfig) if not f.metadata.get("derived")]
    return [*run, *(f.name for f in fields(SweepSettings))]


def section_types() -> dict[str, type]:
    """Config sections whose keys are fields of a typed dataclass (`model` -> ModelSpec), from the type
    hints of RunConfig, SweepSettings and BackendYaml; `backend.options` depends on the engine."""
    out: dict[str, type] = {}
    for cls, prefix in ((RunConfig, ""), (SweepSettings, ""), (BackendYaml, "backend.")):
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp) and f.name != "backend":
                out[prefix + f.name] = tp
    return out


def backend_spec(yaml_data: dict | None, name: str) -> tuple[BackendSpec, type]:
    """A backend YAML's mapping -> its validated spec and engine class (for the run and its reference)."""
    if not yaml_data:
        raise ConfigError(f"backend {name!r} names no engine")
    backend = build(BackendYaml, yaml_data, "backend")
    cls = engine_class(backend.engine)
    options = build(cls.Options, backend.options, "backend.options")
    return BackendSpec(name, backend.engine, options, backend.description, backend.expect), cls


def check_engine(run: RunConfig, view: EngineRun, cls: type) -> None:
    """The engine implements every call the run makes (its workload's, quality's), and accepts its options
    on this run (Engine.validate). Raises ConfigError."""
    need = getattr(workload(run.workload.kind), "needs", frozenset())
    lacking = sorted(need - cls.capabilities)
    if lacking:
        able = sorted(name for name in engine_names() if set(need) <= engine_class(name).capabilities)
        raise ConfigError(f"backend {run.backend.name!r} ({run.backend.engine} engine) has no "
                          f"{' or '.join('server' if x == 'serve' else x for x in lacking)}: workload "
                          f"{run.workload.kind} needs one; engines that have: {', '.join(able) or 'none'}")
    missing = sorted(view.calls - cls.calls)
    if missing:
        raise ConfigError(f"backend {run.backend.name!r} ({run.backend.engine} engine) cannot {' or '.join(missing)}: "
                          f"it implements {', '.join(sorted(cls.calls))}; this run needs {', '.join(sorted(view.calls))} "
                          f"(workload {run.workload.kind}"
                          f"{', and quality' if quality_calls(run.quality.enabled, run.weights, run.task) else ''})")
    cls.validate(run.backend.options, view)


def coordinate_paths() -> set[str]:
    """Config paths that never make a table parameter: the fields marked `coordinate` (a block's own
    coordinates, names, descriptions; RunConfig, ModelSpec, WorkloadSpec, BackendSpec) and derived ones."""
    out: set[str] = set()

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if f.metadata.get("coordinate") or f.metadata.get("derived"):
                out.add(prefix + f.name)
            elif dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")

    walk(RunConfig, "")
    return out


def field_defaults() -> dict[str, Any]:
    """Dotted config path -> default, for every field with a default (RunConfig's and its typed sections'):
    what a record written before a field existed meant by leaving it out."""
    out: dict[str, Any] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
            elif f.default is not dataclasses.MISSING:
                out[prefix + f.name] = f.default
    walk(RunConfig, "")
    return out


def sweep_setting_names() -> set[str]:
    """Top-level keys that are sweep settings (records written before they left the run config hold them)."""
    return {f.name for f in fields(SweepSettings)}
