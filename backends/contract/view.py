"""What an engine may know of a run: a small typed view the planner builds, and the two services the
runner hands it (model files, texts) behind Protocols.

An engine never sees the runner's config classes, sweep settings or workload kinds: it sees the model's
facts, the weights mode, the device, the head it must provide, which of its calls the run will make,
and the longest sequence any call will hold. That is everything `validate`, `check`, `prepare` and
`load` may depend on; the rest of the contract (`Engine`) says what it must return.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Protocol, runtime_checkable

Task = Literal["causal_lm", "sequence_classification"]
# The engine methods a run can call. A workload kind names the ones it drives; quality adds its own.
Call = Literal["generate", "classify", "score"]
CALLS: tuple[str, ...] = ("generate", "classify", "score")


@dataclass(frozen=True)
class ModelFacts:
    """The model as an engine may know it (no file is read to make this)."""

    name: str
    task: Task  # the model's own head (what its YAML says it is)
    architecture: Mapping[str, Any] = field(default_factory=dict)  # HF config kwargs, model_type included
    num_labels: int = 2
    trust_remote_code: bool = False
    allow_pickle: bool = False
    # Pre-quantized checkpoints by method (awq, gptq, ct_gptq_w4a16, ...), for weights=pretrained.
    checkpoints: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineRun:
    """One run, as its engine sees it."""

    backend: str  # the backend's name (for messages: `backend 'awq': ...`)
    model: ModelFacts
    weights: Literal["pretrained", "synthetic"]
    # Where the run executes: "cpu" or "cuda" once planned; in `Engine.validate`, which runs before the host
    # is asked, the device as given ("auto", "cpu" or "cuda").
    device: str
    task: Task  # the head the run needs (the workload kind's)
    calls: frozenset[str]  # the engine methods this run will call
    # The longest sequence (prompt + new tokens, or input length) any call of the run will hold,
    # quality's scoring and generations included: what an engine sizes its context for.
    max_sequence_tokens: int = 0
    # A profiled pass will follow the timed repeats (Engine.profile): an engine whose profiler must be
    # configured before load (vLLM's engine core) sets it up; the others need not look.
    profile: bool = False


@runtime_checkable
class ModelFiles(Protocol):
    """The model's files, materialised on demand (real weights, converted once; or synthetic ones)."""

    def materialise(self) -> None:
        """Make the weights folder exist (a GGUF conversion, synthetic weights): one-off preparation."""

    def folder(self) -> str:
        """Local folder holding the weights (a hub id when only a hub has them)."""

    def config_folder(self, extra: dict | None = None) -> Path:
        """A folder holding config.json only (plus `extra` merged in): enough for dummy-weight loaders."""

    def hf_config(self) -> Any:
        """The transformers config of the model (with the run's head)."""

    def tokenizer_source(self) -> str | None:
        """Where a tokenizer loads from, or None when the model has none."""

    def load_tokenizer(self) -> Any | None:
        """The tokenizer, or None."""

    def identity(self) -> Any:
        """What the files hold, without materialising them: part of every cache key built from them."""

    def forget_built(self) -> list[Path]:
        """Drop the cache entries these files came from (a load failed on them); their paths."""


@runtime_checkable
class Texts(Protocol):
    """Text an engine may need: calibration data for quantizers that calibrate."""

    def calibration_texts(self) -> tuple[list[str], str]:
        """(texts, what they are): never the text quality is evaluated on."""
