"""vLLM engine package: the registry imports `backends.vllm` and reads ENGINE (see engine.py)."""
from backends.vllm.engine import ENGINE, VllmEngine

__all__ = ["ENGINE", "VllmEngine"]
