"""vLLM engine package (see engine.py)."""
from backends.vllm.engine import ENGINE

__all__ = ["ENGINE"]
