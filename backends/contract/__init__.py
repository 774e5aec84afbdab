"""The contract between quantbench's runner and its engines: all an engine module may import of ours.

Engines (`backends/<engine>.py` or `backends/<engine>/`) depend on this package and on nothing in
`runners/`; the runner reaches engines only through `Engine`. Read here what an engine may touch and
must return:
- `view`: what it may know of a run (`EngineRun`, `ModelFacts`) and the services it gets (`ModelFiles`,
  `Texts`), through `EngineContext`;
- `engine`: the calls it implements (`generate`, `classify`, `score`), the evidence it returns
  (`describe`, `census`, `memory_facts`, `artefact_stats`) and its class facts (`Options`, `calls`,
  `devices`, `packages`, `extra`, `metrics`);
- `metrics`: how it declares a number it reports; `errors`: how it refuses (ConfigError) or fails
  (RunFailure); `clocks`, `artefacts` (cache entries), `census`, `versions`: helpers it may use.
"""
from backends.contract.artefacts import (DamagedArtefact, build_once, builder_lock, cache_dir, cache_path,
                                         content_key, folder_identity, invalidate)
from backends.contract.census import WeightCensus
from backends.contract.clocks import CudaClock, GenerateSample, HostClock, StepTimer
from backends.contract.engine import Engine, EngineContext, LogProbs
from backends.contract.errors import ConfigError, RunFailure
from backends.contract.profiling import Activity, Trace, torch_profile
from backends.contract.metrics import (CHECKPOINT_MIB, EXPORT_S, KV_CACHE_MIB, QUANTIZE_S, WEIGHTS_MIB, Catalogue,
                                       Metric, MetricError)
from backends.contract.versions import installed_versions
from backends.contract.view import CALLS, EngineRun, ModelFacts, ModelFiles, Texts

__all__ = ["Activity", "Trace", "torch_profile", "CALLS", "CHECKPOINT_MIB", "Catalogue", "ConfigError", "CudaClock", "DamagedArtefact", "EXPORT_S",
           "Engine", "EngineContext", "EngineRun", "GenerateSample", "HostClock", "KV_CACHE_MIB", "LogProbs",
           "Metric", "MetricError", "ModelFacts", "ModelFiles", "QUANTIZE_S", "RunFailure", "StepTimer", "Texts",
           "WEIGHTS_MIB", "WeightCensus", "build_once", "builder_lock", "cache_dir", "cache_path", "content_key",
           "folder_identity", "installed_versions", "invalidate"]
