"""vLLM's log lines: capture them from every vLLM process, read facts from them, classify failures.

Logs of the engine-core and worker processes never reach a handler in this process; they are
captured through `VLLM_LOGGING_CONFIG_PATH` (a config that adds a file handler), which every vLLM
process reads at import. Line formats are those of vLLM 0.26.0's logger calls.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

_RE_KERNEL_USING = re.compile(r"\bUsing (\w*Kernel\w*) for (\w[\w ]*?)\s*$")
_RE_KERNEL_SELECTED = re.compile(r"\bSelected (\w+) for (\w+)")
_RE_ATTN_AUTO = re.compile(r"Using (?:AttentionBackendEnum\.)?(\w+) attention backend out of potential backends")
_RE_ATTN_FORCED = re.compile(r"Using (?:AttentionBackendEnum\.)?([A-Z0-9_]+) backend\.")
_RE_MODEL_LOAD = re.compile(r"Model loading took ([\d.]+) GiB(?: memory)? and ([\d.]+) seconds")
_RE_KV_MEMORY = re.compile(r"Available KV cache memory: (-?[\d.]+) GiB")
_RE_KV_TOKENS = re.compile(r"GPU KV cache size: ([\d,]+) tokens")
_RE_CONCURRENCY = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
_FP8_MARLIN = "Weight-only FP8 compression will be used leveraging the Marlin kernel"


def parse_vllm_log(text: str) -> dict[str, Any]:
    """Facts vLLM logs while loading: kernels, attention backend, weights and KV cache memory."""
    facts: dict[str, Any] = {"linear_kernels": {}, "lines": []}
    for line in text.splitlines():
        line = line.rstrip()
        hit = False
        m = _RE_KERNEL_USING.search(line) or _RE_KERNEL_SELECTED.search(line)
        if m:
            facts["linear_kernels"].setdefault(m.group(2).strip(), [])
            if m.group(1) not in facts["linear_kernels"][m.group(2).strip()]:
                facts["linear_kernels"][m.group(2).strip()].append(m.group(1))
            hit = True
        if m := (_RE_ATTN_AUTO.search(line) or _RE_ATTN_FORCED.search(line)):
            facts["attention_backend"] = m.group(1)
            hit = True
        if m := _RE_MODEL_LOAD.search(line):
            facts["model_load_gib"] = float(m.group(1))
            facts["model_load_s"] = float(m.group(2))
            hit = True
        if m := _RE_KV_MEMORY.search(line):
            facts["kv_cache_gib"] = float(m.group(1))
            hit = True
        if m := _RE_KV_TOKENS.search(line):
            facts["kv_cache_tokens"] = int(m.group(1).replace(",", ""))
            hit = True
        if m := _RE_CONCURRENCY.search(line):
            facts["max_concurrency"] = float(m.group(2))
            hit = True
        if _FP8_MARLIN in line:
            facts["fp8_weight_only_marlin"] = True
            hit = True
        if hit:
            facts["lines"].append(line[-300:])
    return facts


_ERROR_PATTERNS: tuple[tuple[str, str], ...] = (
    ("out of memory", "oom"),
    ("No available memory for the cache blocks", "oom"),
    ("which is larger than the available KV cache memory", "oom"),
    ("not enough GPU memory", "oom"),
    ("is not supported for the current GPU", "unsupported_hardware"),
    ("requires compute capability", "unsupported_hardware"),
    ("requires capability", "unsupported_hardware"),
    ("No valid attention backend found", "unsupported_hardware"),
    ("Please install bitsandbytes", "missing_dependency"),
    ("No module named", "missing_dependency"),
    ("does not match the quantization method specified", "invalid_config"),
    ("Cannot find the config file for", "invalid_config"),
    ("is not supported for quantization method", "invalid_config"),
    ("Unknown quantization method", "invalid_config"),
    ("Failed to find a kernel that can implement", "invalid_config"),
    ("was requested but no", "invalid_config"),
)


def classify_error(*texts: str) -> tuple[str, str] | None:
    """(status, the line that says why) for a vLLM failure, searching the exception then the log."""
    for text in texts:
        for line in reversed(text.splitlines()):
            for needle, status in _ERROR_PATTERNS:
                if needle.lower() in line.lower():
                    return status, line.strip()[-500:]
    return None


class LogCapture:
    """Every vLLM process's log records, appended to one file, also echoed to stdout as usual."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="quantbench-vllm-"))
        self.path = self.dir / "vllm.log"
        self.path.touch()
        self._handler: logging.Handler | None = None
        self.via_env = False
        self._env_set: list[str] = []

    def set_env(self, name: str, value: str) -> None:
        """Set an environment variable for vLLM's processes, undone by close()."""
        if name not in os.environ:
            os.environ[name] = value
            self._env_set.append(name)

    def install(self) -> None:
        """Before vLLM is imported (and before it starts processes): point its logging config here."""
        if os.environ.get("VLLM_LOGGING_CONFIG_PATH") or os.environ.get("VLLM_CONFIGURE_LOGGING", "1") == "0":
            return  # the user configured vLLM logging: only this process's records are captured
        level = os.environ.get("VLLM_LOGGING_LEVEL", "INFO").upper()
        config = {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "vllm": {"class": "vllm.logging_utils.NewLineFormatter", "datefmt": "%m-%d %H:%M:%S",
                         "format": "%(levelname)s %(asctime)s [%(fileinfo)s:%(lineno)d] %(message)s"},
                "capture": {"format": "%(process)d %(levelname)s %(name)s: %(message)s"},
            },
            "handlers": {
                "vllm": {"class": "logging.StreamHandler", "formatter": "vllm", "level": level,
                         "stream": os.environ.get("VLLM_LOGGING_STREAM", "ext://sys.stdout")},
                "capture": {"class": "logging.FileHandler", "formatter": "capture", "level": "INFO",
                            "filename": str(self.path), "mode": "a", "encoding": "utf-8"},
            },
            "loggers": {"vllm": {"handlers": ["vllm", "capture"], "level": "INFO" if level != "DEBUG" else level,
                                 "propagate": False}},
        }
        cfg_path = self.dir / "logging.json"
        cfg_path.write_text(json.dumps(config))
        self.set_env("VLLM_LOGGING_CONFIG_PATH", str(cfg_path))
        self.via_env = True

    def attach(self) -> None:
        """After import: make sure this process's vLLM logger writes here (vLLM may have been imported first)."""
        logger = logging.getLogger("vllm")
        for h in logger.handlers:
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == self.path:
                return
        self._handler = logging.FileHandler(self.path, mode="a", encoding="utf-8")
        self._handler.setLevel(logging.INFO)
        self._handler.setFormatter(logging.Formatter("%(process)d %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(self._handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)

    def text(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        logger = logging.getLogger("vllm")
        for h in list(logger.handlers):
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == self.path:
                logger.removeHandler(h)
                h.close()
        self._handler = None
        for name in self._env_set:
            os.environ.pop(name, None)
        self._env_set = []
        shutil.rmtree(self.dir, ignore_errors=True)
