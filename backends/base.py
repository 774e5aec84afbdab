"""The adapter contract every engine module implements.

An engine module (`backends/<engine>.py`) defines one `Engine` subclass and exposes it as `ENGINE`.
Its top level imports nothing heavy (no torch, vllm, onnxruntime): the runner imports it to
validate options before it decides to load anything. The runner never names an engine; it only
calls this interface.
"""
from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np

    from runners.config import RunConfig
    from runners.models import ModelFiles
    from runners.timing import CudaClock, HostClock, StepTimer


class RunFailure(Exception):
    """A run that cannot (or could not) be measured, with its classified status.

    status: oom | missing_dependency | unsupported_hardware | timeout | crash | invalid_config
    """

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class LogProbs:
    """Next-token log-probabilities at each position of a scored text.

    Full distributions: `values` is [T, V] and `indices` is None. Engines that only return the top
    k (vLLM) give `values` [T, k] and `indices` [T, k]; quality metrics then say they are top-k.
    Row t is the distribution of token t + 1. Top-k engines may also give `next_token_values` [T - 1]:
    the log-prob of each actual next token, which can rank below k (NaN where unknown), for perplexity.
    """

    values: "np.ndarray"
    indices: "np.ndarray | None" = None
    next_token_values: "np.ndarray | None" = None


@dataclass
class EngineContext:
    """What the runner hands an engine: the resolved run and the helpers it may need."""

    run: "RunConfig"
    device: str  # resolved: "cpu" or "cuda"
    files: "ModelFiles"  # materialises model folders (pretrained or synthetic) on demand
    cache_dir: Path
    num_labels: int
    extra: dict[str, Any] = field(default_factory=dict)


class Engine(ABC):
    """One inference engine. One instance serves one run in one process."""

    name: ClassVar[str]
    # The pyproject extra that installs this engine's packages, named in missing_dependency.
    extra: ClassVar[str]
    # Import names that must be importable before `load` (checked without importing them).
    requires: ClassVar[tuple[str, ...]] = ()
    # The engine's typed options dataclass (the `options:` mapping of a backend YAML).
    Options: ClassVar[type]
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    def __init__(self, options: Any, ctx: EngineContext):
        self.options = options
        self.ctx = ctx

    # -- checks, before anything heavy --------------------------------------------------------
    @classmethod
    def validate(cls, run: "RunConfig") -> None:
        """Static checks on the combination (raise runners.typed.ConfigError). No imports of engines."""

    def check(self) -> RunFailure | None:
        """Why this run cannot happen here (missing package, hardware), or None."""
        # Hardware first: installing a package would not help a run this device cannot do.
        if self.ctx.device not in self.devices:
            return RunFailure(
                "unsupported_hardware",
                f"{self.name} runs on {' or '.join(self.devices)}, not {self.ctx.device}",
            )
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            return RunFailure(
                "missing_dependency",
                f"{self.name} needs {', '.join(missing)}: pip install 'quantbench[{self.extra}]'",
            )
        return None

    # -- the work ------------------------------------------------------------------------------
    def prepare(self) -> None:
        """One-off preparation, not timed as load: materialise the files `load` will read (a GGUF
        conversion, synthetic weights). Engines that need less (vLLM's dummy loading reads only a
        config) override this, so a 32B synthetic model is never written to disk for nothing."""
        if self.ctx.run.weights == "synthetic" or self.ctx.run.model.source:
            self.ctx.files.folder()

    @abstractmethod
    def load(self) -> None:
        """Load (and quantize / export / compile) the model. Timed as load_s."""

    def generate(self, prompts: list[list[int]], new_tokens: int, timer: "StepTimer") -> list[list[int]]:
        """Greedy, exactly `new_tokens` new tokens per prompt; returns only the new tokens.

        Call `timer.token()` each time a step's logits for the whole batch are ready, or, where the
        engine measures itself, `timer.external(...)`.
        """
        raise RunFailure("invalid_config", f"{self.name} does not implement generate")

    def classify(self, input_ids: "np.ndarray", attention_mask: "np.ndarray") -> "np.ndarray":
        """Logits [batch, num_labels] as a float32 numpy array (the copy to host is part of the work)."""
        raise RunFailure("invalid_config", f"{self.name} does not implement classify")

    def score(self, token_ids: list[int]) -> LogProbs:
        """Next-token log-probs for each position of one sequence (quality metrics)."""
        raise RunFailure("invalid_config", f"{self.name} does not implement score")

    def synchronize(self) -> None:
        """Wait for queued device work (timing boundaries)."""

    def make_clock(self) -> "HostClock | CudaClock":
        """The clock that times this engine's work. Host clock + synchronize unless overridden:
        CUDA events only see the stream they are recorded on, so only a torch engine may use them."""
        from runners.timing import HostClock

        return HostClock(self.synchronize)

    def describe(self) -> dict[str, Any]:
        """What actually ran: engine version, kernels / providers used, memory settings."""
        return {}

    def memory_facts(self) -> dict[str, float]:
        """Engine-reported memory in MiB (e.g. weights, KV cache), keys ending in _mib."""
        return {}

    def close(self) -> None:
        """Release the model (the process ends after a run anyway; this frees memory in-process)."""
