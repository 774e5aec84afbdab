"""The contract between quantbench's runner and its engines: all an engine module may import of ours.

Engines (`backends/<engine>.py` or `backends/<engine>/`) depend on this package and on nothing in
`runners/`; the runner reaches engines only through `Engine`.
"""
from backends.contract.artefacts import (DamagedArtefact, build_once, builder_lock, cache_dir, cache_path,
                                         content_key, folder_identity, invalidate)
from backends.contract.census import WeightCensus
from backends.contract.clocks import CudaClock, GenerateSample, HostClock, StepTimer
from backends.contract.engine import Engine, EngineContext, LogProbs
from backends.contract.errors import ConfigError, RunFailure
from backends.contract.versions import installed_versions

__all__ = ["ConfigError", "CudaClock", "DamagedArtefact", "Engine", "EngineContext", "GenerateSample",
           "HostClock", "LogProbs", "RunFailure", "StepTimer", "WeightCensus", "build_once", "builder_lock",
           "cache_dir", "cache_path", "content_key", "folder_identity", "installed_versions", "invalidate"]
