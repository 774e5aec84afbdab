"""The quality reference: which backend it is, where its outputs are cached, how they are computed.

Decoders are compared with a reference backend of the same model (`quality.reference`: `auto` =
fp32 on CPU, fp16 on GPU; else any backend YAML on the config search path, a user's own included).
The planner builds the reference's validated run config beside the measured one (the measured run's
config with its backend replaced: runners.plan.planner.reference_run); its outputs
(evaluation token ids, log-probs, greedy generations) are computed once and cached under
`<cache>/reference/<key>`, keyed by the model and its weight files, the reference backend and its
options, the device, the evaluation text's hash and sizes, and the versions of the packages the
reference engine declares. Every backend of a sweep, each in its own process, compares with the
same numbers.

Who computes them (the simplest shape that never disturbs a measurement):
- a run of the reference backend itself computes them with its own engine after its speed runs
  (or loads them) and compares with itself: KL 0, agreement 100%;
- for any other run, the launcher runs the reference in a process of its own before the measured
  run starts (kind `reference`), unless the cache has them. So the reference never shares memory
  with the measured model (two models in one GPU would not fit next to vLLM's preallocation, and
  would inflate measured peaks), never runs during a timed region, and its cost shows as
  `reference_compute_s`, outside load and speed.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backends import engine_class
from backends.contract import HostClock, LogProbs, StepTimer, build_once, cache_path
from backends.contract.artefacts import damage
from runners.evaldata import eval_text
from runners.measure.env import package_versions
from runners.open.files import ModelFiles
from runners.plan.config import RunConfig
from runners.plan.strict import as_dict

# Bumped when what a cached reference holds (or how it is computed) changes.
REFERENCE_FORMAT = 2
REFERENCE_FILE = "reference.npz"


@dataclass
class Outputs:
    """What one engine produced on the evaluation inputs (the reference's is cached)."""

    tokens: np.ndarray  # [T] evaluation token ids
    prompts: np.ndarray  # [G, P] generation prompts
    logprobs: LogProbs  # rows 0..T-2: distributions of tokens 1..T-1
    generations: np.ndarray  # [G, N] greedy new tokens
    meta: dict[str, Any] = field(default_factory=dict)


def is_self(run: RunConfig, ref: RunConfig) -> bool:
    return (ref.backend.engine, ref.backend.options) == (run.backend.engine, run.backend.options)


def reference_path(ref: RunConfig, device: str) -> Path:
    """The cache folder of `ref`'s outputs (computed without materialising any model file)."""
    m, q = ref.model, ref.quality
    files = ModelFiles(m, ref.weights, ref.task, m.num_labels, device)
    key = {
        "format": REFERENCE_FORMAT,
        "model": {k: as_dict(getattr(m, k)) for k in ("name", "hub_id", "path", "source", "architecture",
                                                       "tokenizer", "trust_remote_code")},
        "weights": ref.weights,
        "files": files.identity(),
        "reference": {"name": ref.backend.name, "engine": ref.backend.engine, "options": as_dict(ref.backend.options)},
        "device": device,
        "text_sha256": hashlib.sha256(eval_text(q.text).encode()).hexdigest(),
        "eval_tokens": q.eval_tokens,
        "generations": [q.generations, q.generation_tokens],
        "versions": package_versions(engine_class(ref.backend.engine).packages),
    }
    return cache_path("reference", key)


def ready(path: Path) -> bool:
    return damage(path) is None


def eval_inputs(text: str, tokenizer: Any, eval_tokens: int, generations: int,
                generation_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """(evaluation tokens [eval_tokens], generation prompts [generations, generation_tokens]) from the
    start of `text`; only as much text as needed is tokenized."""
    need = max(eval_tokens, generations * generation_tokens)
    chars = need * 8
    while True:
        ids = list(tokenizer(text[:chars])["input_ids"])
        if len(ids) > need or chars >= len(text):
            break
        chars *= 2
    if len(ids) < need:
        raise ValueError(f"the evaluation text has {len(ids)} tokens; quality needs {need}")
    ids_arr = np.asarray(ids[:need], dtype=np.int64)
    return ids_arr[:eval_tokens], ids_arr[:generations * generation_tokens].reshape(generations, generation_tokens)


def evaluate(engine, tokens: np.ndarray, prompts: np.ndarray, new_tokens: int) -> Outputs:
    """Score the evaluation tokens and generate greedily from the prompts with `engine`."""
    lp = engine.score([int(t) for t in tokens])
    rows = len(tokens) - 1
    values = np.asarray(lp.values, dtype=np.float32)
    if values.ndim != 2 or values.shape[0] < rows:
        raise ValueError(f"score returned log-probs of shape {values.shape} for {len(tokens)} tokens")
    logprobs = LogProbs(values[:rows],
                        None if lp.indices is None else np.asarray(lp.indices, dtype=np.int64)[:rows],
                        None if lp.next_token_values is None
                        else np.asarray(lp.next_token_values, dtype=np.float32)[:rows])
    timer = StepTimer(HostClock())  # generate wants a timer; these calls are not timed
    timer.begin()
    gens = engine.generate([[int(t) for t in p] for p in prompts], new_tokens, timer)
    timer.end()
    if len(gens) != len(prompts) or {len(g) for g in gens} != {new_tokens}:
        raise ValueError(f"generate returned {len(gens)} sequences of lengths {sorted({len(g) for g in gens})}")
    return Outputs(tokens, prompts, logprobs, np.asarray(gens, dtype=np.int64))


def compute_reference(engine, run: RunConfig) -> Outputs:
    """The reference's outputs on the evaluation inputs, cut with the model's tokenizer."""
    q = run.quality
    tokenizer = engine.ctx.files.load_tokenizer()
    if tokenizer is None:
        raise ValueError(f"model {run.model.name} has no tokenizer to cut the evaluation text")
    tokens, prompts = eval_inputs(eval_text(q.text), tokenizer, q.eval_tokens, q.generations, q.generation_tokens)
    out = evaluate(engine, tokens, prompts, q.generation_tokens)
    out.meta = {"reference": run.backend.name, "engine": run.backend.engine, "eval_text": q.text or "bbc-news",
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return out


def save_outputs(folder: Path, out: Outputs) -> None:
    arrays = {"tokens": out.tokens, "prompts": out.prompts, "generations": out.generations,
              "values": out.logprobs.values}
    if out.logprobs.indices is not None:
        arrays["indices"] = out.logprobs.indices
    if out.logprobs.next_token_values is not None:
        arrays["next_token_values"] = out.logprobs.next_token_values
    np.savez(folder / REFERENCE_FILE, **arrays)
    (folder / "meta.json").write_text(json.dumps(out.meta, indent=1, default=str))


def load_outputs(folder: Path) -> Outputs:
    with np.load(folder / REFERENCE_FILE) as z:
        lp = LogProbs(z["values"], z["indices"] if "indices" in z else None,
                      z["next_token_values"] if "next_token_values" in z else None)
        out = Outputs(z["tokens"], z["prompts"], lp, z["generations"])
    out.meta = json.loads((folder / "meta.json").read_text())
    return out


def ensure_reference(path: Path, engine, run: RunConfig) -> tuple[Outputs, bool]:
    """(reference outputs, whether they came from the cache): computed with `engine` on a miss."""
    hit = build_once(path, lambda tmp: save_outputs(tmp, compute_reference(engine, run)))
    return load_outputs(path), hit
