"""The adapter contract every engine module implements.

An engine module (`backends/<engine>.py`, or a package `backends/<engine>/`) defines one `Engine`
subclass and exposes it as `ENGINE`.
Its top level imports nothing heavy (no torch, vllm, onnxruntime): the runner imports it to
validate options before it decides to load anything. The runner never names an engine; it only
calls this interface.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from backends.contract.census import WeightCensus
from backends.contract.clocks import CudaClock, HostClock, StepTimer
from backends.contract.errors import RunFailure
from backends.contract.metrics import Metric
from backends.contract.profiling import Trace
from backends.contract.server import ServerProcess
from backends.contract.view import EngineRun, ModelFiles, Texts

if TYPE_CHECKING:
    import numpy as np


def install_hint(extra: str, packages: tuple[str, ...]) -> str:
    """`pip install 'quantbench[ort]'` when this install of quantbench offers that extra, else the packages
    themselves: an engine kept outside the project needs no edit of pyproject to say what it needs."""
    try:
        extras = importlib.metadata.metadata("quantbench").get_all("Provides-Extra") or []
    except importlib.metadata.PackageNotFoundError:
        extras = []
    if extra and extra in extras:
        return f"pip install 'quantbench[{extra}]'"
    return "pip install " + " ".join(packages)


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
    """What the runner hands an engine: the run as the engine may see it, and the services it may use.

    `run`: the typed view (backends.contract.view.EngineRun); `files`: the model's files on demand
    (ModelFiles); `texts`: calibration text (Texts); `cache_dir`: where an engine caches what it builds
    (through build_once); `extra`: facts the runner already knows of the host (e.g. the GPU's
    compute capability), so an engine need not probe them twice.
    """

    run: EngineRun
    files: ModelFiles
    texts: Texts
    cache_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> str:
        return self.run.device

    @property
    def num_labels(self) -> int:
        return self.run.model.num_labels


class Engine(ABC):
    """One inference engine. One instance serves one run in one process."""

    name: ClassVar[str]
    # The pyproject extra that installs this engine's packages, named in missing_dependency.
    extra: ClassVar[str] = ""
    # Distributions whose versions shape this engine's results: recorded in every record's
    # environment and in the keys of the cache entries it builds.
    packages: ClassVar[tuple[str, ...]] = ()
    # Import names that must be importable before `load` (checked without importing them).
    requires: ClassVar[tuple[str, ...]] = ()
    # The engine's typed options dataclass (the `options:` mapping of a backend YAML).
    Options: ClassVar[type]
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    # The calls this engine implements (backends.contract.view.CALLS); a run that needs another one is
    # refused before anything loads, naming what the engine can do.
    calls: ClassVar[frozenset[str]] = frozenset({"generate", "classify", "score"})
    # What else it can do beside the calls, for the stages that build on it (e.g. "serve", "profile").
    capabilities: ClassVar[frozenset[str]] = frozenset()
    # The metrics this engine writes into a record (memory_facts, artefact_stats): declared here, next
    # to the code that measures them; a key it writes and does not declare fails the run's record.
    metrics: ClassVar[tuple[Metric, ...]] = ()

    def __init__(self, options: Any, ctx: EngineContext):
        self.options = options
        self.ctx = ctx

    # -- checks, before anything heavy --------------------------------------------------------
    @classmethod
    def validate(cls, options: Any, run: EngineRun) -> None:
        """Static checks of these options on this run (raise ConfigError). Nothing heavy is imported here."""

    @classmethod
    def gpus_needed(cls, options: Any) -> int:
        """How many GPUs one run of these options takes (a tensor-parallel engine says more than one)."""
        return 1

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
            return RunFailure("missing_dependency",
                              f"{self.name} needs {', '.join(missing)}: {install_hint(self.extra, self.packages or tuple(missing))}")
        return None

    # -- the work ------------------------------------------------------------------------------
    def prepare(self) -> None:
        """One-off preparation, not timed as load: materialise the files `load` will read (a GGUF
        conversion, synthetic weights). Engines that need less (vLLM's dummy loading reads only a
        config) override this, so a 32B synthetic model is never written to disk for nothing."""
        self.ctx.files.materialise()

    @abstractmethod
    def load(self) -> None:
        """Load (and quantize / export / compile) the model. Timed as load_s."""

    def generate(self, prompts: list[list[int]], new_tokens: int, timer: StepTimer) -> list[list[int]]:
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

    def make_clock(self) -> HostClock | CudaClock:
        """The clock that times this engine's work. Host clock + synchronize unless overridden:
        CUDA events only see the stream they are recorded on, so only a torch engine may use them."""
        return HostClock(self.synchronize)

    def profile(self, run_once: Callable[[], int], trace_path: Path) -> Trace | None:
        """Run `run_once` (one pass of the workload; it returns the output tokens or examples it produced)
        under this engine's profiler, keep the trace at `trace_path` (a compressed Chrome trace), and
        return what it saw (backends.contract.profiling.Trace). None: this engine has no profiler hook
        (the record says so). Engines that can, list "profile" in `capabilities`."""
        return None

    def server(self, log_path: Path) -> "ServerProcess | None":
        """This backend as a real OpenAI-compatible server (not started yet: the `serve` workload starts
        and always stops it), with the fields its requests need (`request_extra`). None: this engine has
        no server (the record says so). Engines that can, list "serve" in `capabilities`."""
        return None

    def server_census(self, server: "ServerProcess") -> WeightCensus | None:
        """After the server stopped: the weight census of the model the server itself loaded (from what it
        wrote or logged), or None when it does not tell; the record then proves the run by the in-process
        load of the same files and arguments, and says so."""
        return None

    def describe(self) -> dict[str, Any]:
        """What actually ran: engine version, kernels / providers used, memory settings."""
        return {}

    def census(self) -> WeightCensus | None:
        """After load: the linear layers by kind, which are quantized, and the bytes they hold.
        None means the engine cannot tell; a backend that expects quantization then fails its check."""
        return None

    def artefact_stats(self) -> dict[str, float]:
        """One-off preparation this run paid for (e.g. `export_s`, `quantize_s`), reported apart from load.
        Numbers only, each a key of `metrics`; facts about the build belong in describe()."""
        return {}

    def memory_facts(self) -> dict[str, float]:
        """Engine-reported memory in MiB (e.g. weights, KV cache), each a key of `metrics`."""
        return {}

    def close(self) -> None:
        """Release the model (the process ends after a run anyway; this frees memory in-process)."""
