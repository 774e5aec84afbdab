"""`vllm serve` for the `serve` workload: the offline path's exact engine arguments, as the server's flags.

Nothing here imports vllm: the server is another process, started by the workload through ServerProcess.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from backends.contract import EngineContext
from backends.contract.server import ServerProcess
from backends.vllm.args import llm_kwargs, model_source, vllm_environment
from backends.vllm.cli import kwargs_to_cli
from backends.vllm.logs import parse_vllm_log
from backends.vllm.options import Options


def served_log_facts(text: str) -> dict[str, Any]:
    """The kernels, attention backend and memory `vllm serve` logged while loading (backends.vllm.logs)."""
    facts = parse_vllm_log(text)
    facts.pop("lines", None)
    return facts


def server_process(options: Options, ctx: EngineContext, built: Any, log_path: Path) -> ServerProcess:
    """The same EngineArgs as `vllm.LLM(...)` of the offline path (backends.vllm.cli names them as flags),
    with the tokenizer on where the model has one, so that text prompts stream text back (without one,
    e.g. synthetic weights, prompts are token ids: `workload.serve.prompts=random`). Every request decodes
    exactly max_tokens (`ignore_eos`, `min_tokens`), as the offline path does, and streams its token ids
    (`return_token_ids`), so a chunk counts its tokens whether or not it carries text."""
    source = model_source(options, ctx, built)
    kwargs = {k: v for k, v in llm_kwargs(options, ctx, source).items() if k not in ("model", "seed")}
    kwargs["skip_tokenizer_init"] = ctx.files.tokenizer_source() is None
    model = source[0]
    cmd = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", model, "--host", "127.0.0.1",
           "--port", "{port}", *kwargs_to_cli(kwargs)]
    env = {"VLLM_WORKER_MULTIPROC_METHOD": "spawn", **vllm_environment()}
    return ServerProcess(cmd, log_path, health_path="/health", env=env, model=model,
                         request_extra=lambda req: {"ignore_eos": True, "min_tokens": req.max_tokens,
                                                    "return_token_ids": True},
                         log_facts=served_log_facts)
