"""A test engine that fails on purpose: proves a sweep keeps every row whatever a backend does.

Selected by dotted engine name (`engine: tests.fault_engine`), so the product ships no test engine.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from backends.contract import Engine, LogProbs, RunFailure


@dataclass(frozen=True)
class Options:
    fault: Literal["none", "oom_above_batch", "missing", "unsupported", "segfault", "hang", "segfault_after_first",
                   "interrupt_after_first", "fill_disk", "native_exit_after_first"] = "none"
    oom_above_batch: int = 1
    step_ms: float = 2.0
    # serve: `scripted` runs tests/fake_server.py (TTFT and gaps below); `exit_at_start` a server that dies
    # before it is healthy, saying why; `never_healthy` one that never answers its health check.
    server: Literal["scripted", "exit_at_start", "never_healthy"] = "scripted"
    server_ttft_ms: float = 150.0
    server_gap_ms: float = 20.0


class FaultEngine(Engine):
    name = "fault"
    extra = "dev"
    Options = Options
    capabilities = frozenset({"serve"})

    def __init__(self, options, ctx):
        super().__init__(options, ctx)
        if options.fault == "missing":
            self.requires = ("quantbench_no_such_package",)
        self._calls = 0
        self._first_batch: int | None = None  # the first batch size the workload drove

    def check(self):
        if self.options.fault == "unsupported":
            return RunFailure("unsupported_hardware", "fault engine needs compute capability >= 8.9 (test)")
        return super().check()

    def load(self) -> None:
        if self.options.fault == "fill_disk":
            _fill(os.environ["QB_TEST_FILL_PATH"])
        if self.options.fault == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        if self.options.fault == "hang":
            time.sleep(3600)

    def _step(self, batch_size: int) -> None:
        self._calls += 1
        if self._first_batch is None:
            self._first_batch = batch_size
        if self.options.fault == "oom_above_batch" and batch_size > self.options.oom_above_batch:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (fault engine)")
        if self.options.fault == "segfault_after_first" and batch_size > self._first_batch:
            os.kill(os.getpid(), signal.SIGSEGV)
        if self.options.fault == "native_exit_after_first" and batch_size > self._first_batch:
            # What a native library does on a bad argument (bitsandbytes' csrc/ops.cu): print, then exit.
            print("Error invalid argument at line 421 in file /src/csrc/ops.cu", file=sys.stderr, flush=True)
            os._exit(1)
        if self.options.fault == "interrupt_after_first" and batch_size > self._first_batch:
            raise KeyboardInterrupt  # what Ctrl-C or a scheduler's SIGINT does mid-run
        time.sleep(self.options.step_ms / 1e3)

    def generate(self, prompts, new_tokens, timer):
        for _ in range(new_tokens):
            self._step(len(prompts))
            timer.token()
        return [[1] * new_tokens for _ in prompts]

    def classify(self, input_ids, attention_mask):
        self._step(len(input_ids))
        return np.zeros((len(input_ids), self.ctx.num_labels), dtype=np.float32)

    def score(self, token_ids):
        return LogProbs(np.full((len(token_ids), 8), -np.log(8), dtype=np.float32))

    def describe(self):
        return {"engine": "fault", "fault": self.options.fault}

    def server(self, log_path):
        from backends.contract.server import ServerProcess

        o = self.options
        if o.server == "exit_at_start":
            code = "import sys; print('loading...'); print('torch.OutOfMemoryError: CUDA out of memory (fault server)'); sys.exit(1)"
            cmd = [sys.executable, "-c", code]
        elif o.server == "never_healthy":
            cmd = [sys.executable, "-c", "import time; print('warming up forever', flush=True); time.sleep(3600)"]
        else:
            cmd = [sys.executable, "-m", "tests.fake_server", "--port", "{port}", "--ttft-ms", str(o.server_ttft_ms),
                   "--gap-ms", str(o.server_gap_ms)]
        return ServerProcess(cmd, log_path, model="fault")


def _fill(path: str) -> None:
    """Write zeros until the file system holding `path` is full (a small tmpfs in the test)."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError:
            pass


ENGINE = FaultEngine
