"""Real quantized checkpoints made with llm-compressor, in compressed-tensors format (what vLLM loads).

Shared by the engines that run them (transformers on CPU decompresses them; vLLM runs its kernels on
them): `Recipe` is the typed `compress:` block of a backend YAML, `checkpoint()` builds the folder
once (cached, keyed by model identity, recipe, calibration set and versions), `checkpoint_census()`
says what the checkpoint holds and whether the loaded layers carry its quantized values.
"""
from backends.compress.build import CheckpointBuild, build_facts, checkpoint
from backends.compress.census import checkpoint_census, checkpoint_summary
from backends.compress.recipe import Recipe

__all__ = ["CheckpointBuild", "build_facts", "Recipe", "checkpoint", "checkpoint_census", "checkpoint_summary"]
