"""The console during a one-off export or quantization: a heartbeat for the user, quiet libraries.

The runner routes the `quantbench` logger to the user's console and everything else (libraries'
logs, warnings, prints) to run.log. An export takes a minute or more without a word from the
exporter, then the exporter and ONNX Runtime's quantizer log hundreds of INFO lines (a rewrite
rule applied, an initializer deduplicated, a tensor without quantization parameters); these say
nothing a reader of run.log can act on, so they are held at WARNING for the step's duration.
"""
from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import time
import warnings
from typing import Iterator

CONSOLE = logging.getLogger("quantbench")

# Loggers whose INFO lines are per-node progress of the exporter and the quantizers.
CHATTY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "onnxruntime.quantization")
# Lines that repeat every export and say nothing about this model, named so that any other warning
# of the same loggers still reaches run.log: torchvision's detection ops are not registered (we
# export no vision model); ORT's advice to pre-process (shape inference + ORT optimizations) before
# quantizing, which we skip on purpose so the quantizer sees the exported graph; transformers 5.24's
# rename of `past_key_values` to `cache`, which 5.17 (the GPU host's) does not know.
NOISE = re.compile(r"torchvision is not installed|Please consider to run pre-processing before quantization"
                   r"|`past_key_values`/`cache_params` are deprecated")
# Where those are logged (a logger's own filter sees only records logged on it, not its children's).
NOISY_LOGGERS = ("torch.onnx._internal.exporter._registration", "transformers.utils.generic")
# Exporter warnings about torch's own internals (LeafSpec deprecation, merged dynamic-axis names).
WARNING_NOISE = (
    (FutureWarning, r".*"), (DeprecationWarning, r".*"),
    (UserWarning, r"# The axis name: .* will not be used"),
)


class _Drop(logging.Filter):
    """Drops ONNX Runtime quantization's INFO lines (logged on the root logger itself) and known noise.

    Set on a logger, a filter sees only records logged to that logger, so records propagated up
    from `quantbench` or any other logger pass untouched."""

    def __init__(self, below: int):
        super().__init__()
        self.below = below

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.below and not NOISE.search(record.getMessage())


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Hold the exporter's and quantizers' chatter below WARNING; their prints go to stderr (run.log)."""
    loggers = [logging.getLogger(name) for name in CHATTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    noisy = [logging.getLogger()] + [logging.getLogger(name) for name in NOISY_LOGGERS]
    drops = [_Drop(logging.WARNING)] + [_Drop(logging.NOTSET) for _ in NOISY_LOGGERS]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    for lg, drop in zip(noisy, drops):
        lg.addFilter(drop)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            for category, message in WARNING_NOISE:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        for lg, drop in zip(noisy, drops):
            lg.removeFilter(drop)


class Heartbeat:
    """Tells the console every `every_s` seconds that a long step is still running:
    `exporting smollm2-135m to ONNX (first time only): 30 s`, then how long it took."""

    def __init__(self, what: str, every_s: float = 10.0):
        self.what = what
        self.every_s = every_s
        self.elapsed_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="qb-heartbeat", daemon=True)

    def _beat(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.wait(self.every_s):
            CONSOLE.info("%s: %.0f s", self.what, time.perf_counter() - t0)

    def __enter__(self) -> "Heartbeat":
        CONSOLE.info("%s ...", self.what)
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        self._thread.join()
        self.elapsed_s = time.perf_counter() - self._t0
        if exc_type is None:
            CONSOLE.info("%s: done in %.1f s", self.what, self.elapsed_s)
