"""Build a compressed-tensors checkpoint once: load the run's model folder, run llm-compressor's
`oneshot` with the recipe on held-out calibration text, save compressed (cached under
`<cache>/compressed/<key>`)."""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from backends.contract import RunFailure, build_once, cache_dir, content_key, installed_versions
from backends.compress.census import checkpoint_summary
from backends.compress.recipe import Recipe

CONSOLE = logging.getLogger("quantbench")
# Bumped when what a build writes changes.
FORMAT = 1
BUILD_INFO = "quantbench_build.json"
PACKAGES = ("llmcompressor", "compressed-tensors", "torch", "transformers")
CALIBRATION_SEED = 0


@dataclass
class CheckpointBuild:
    folder: Path
    # Declared costs (backends.contract QUANTIZE_S, CHECKPOINT_MIB): quantize_s only when built this run.
    stats: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # the build's record (quantbench_build.json)
    cache_hit: bool = False


def build_facts(build: CheckpointBuild, recipe: Recipe) -> dict[str, Any]:
    """What every engine running a built checkpoint reports in describe()."""
    return {"recipe": recipe.key(), "checkpoint": str(build.folder),
            "checkpoint_quantization": checkpoint_summary(build.folder), "calibration": build.info.get("calibration"),
            "built_with": build.info.get("versions"), "built_quantize_s": build.info.get("quantize_s"),
            "cache_hit": build.cache_hit}


def versions() -> dict[str, str]:
    return installed_versions(PACKAGES, missing="absent", local=False)


def calibration_ids(ctx: Any, recipe: Recipe) -> tuple[list[list[int]], str]:
    """Token ids of the calibration samples and what they are (recorded, and part of the cache key)."""
    if not recipe.calibrated:
        return [], "none (fp8_dynamic needs no calibration)"
    tok = ctx.files.load_tokenizer()
    n, length = recipe.calibration_samples, recipe.calibration_seq_len
    if tok is None:
        # Synthetic weights without a tokenizer: random ids are as meaningful as the weights.
        import numpy as np

        vocab = int(ctx.files.hf_config().vocab_size)
        rng = np.random.default_rng(CALIBRATION_SEED)
        return rng.integers(1, vocab, size=(n, length)).tolist(), f"random token ids (seed {CALIBRATION_SEED})"
    texts, what = ctx.texts.calibration_texts()
    ids: list[list[int]] = []
    for text in texts:
        row = tok(text, add_special_tokens=True)["input_ids"][:length]
        if len(row) >= min(length, 32):
            ids.append(row)
        if len(ids) == n:
            break
    if len(ids) < n:
        raise RunFailure("invalid_config", f"calibration: only {len(ids)} usable texts of {n} wanted ({what})")
    return ids, what


@contextlib.contextmanager
def routed_chatter() -> Iterator[None]:
    """llm-compressor logs through loguru to the console's stderr by default: send it to stderr at INFO
    with no colours (the runner's stderr is run.log), and tell the console how long the step runs."""
    from loguru import logger

    logger.remove()
    sink = logger.add(sys.stderr, level="INFO", colorize=False)
    stop = threading.Event()

    def beat(t0: float) -> None:
        while not stop.wait(15.0):
            CONSOLE.info("  quantizing: %.0f s (llm-compressor's progress bars: run.log)", time.perf_counter() - t0)

    thread = threading.Thread(target=beat, args=(time.perf_counter(),), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        logger.remove(sink)
        logger.add(sys.stderr, level="INFO", colorize=False)


@contextlib.contextmanager
def cpu_only_awq() -> Iterator[None]:
    """llm-compressor 0.14.0.1's AWQ pins its cached activations before every grid search
    (modifiers/transform/awq/base.py: `cache.pin_memory(...)`), and pinning needs an accelerator: on a
    CPU-only host AWQ dies with "Cannot access accelerator device". Pinning only speeds host-to-GPU
    copies, so without an accelerator it is skipped (patched for this step only)."""
    import torch

    if torch.accelerator.is_available():
        yield
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *a, **k: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original


def _ids_only_tokenizer() -> Any:
    """oneshot wants a processor even for a tokenized dataset; a model without a tokenizer gets this one."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<unk>": 0}, unk_token="<unk>")),
                                   unk_token="<unk>", pad_token="<unk>")


def checkpoint(ctx: Any, recipe: Recipe) -> CheckpointBuild:
    """The compressed-tensors folder for the run's model and this recipe, built once."""
    files = ctx.files
    source = files.folder()
    ids, calibration = calibration_ids(ctx, recipe)
    key_parts = ["compressed-tensors", FORMAT, files.identity(), ctx.run.weights, ctx.run.task, recipe.key(),
                 calibration, content_key(ids), versions()]
    final = Path(cache_dir()) / "compressed" / content_key(*key_parts)
    stats: dict[str, Any] = {}

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from llmcompressor import oneshot

        CONSOLE.info("quantizing %s with llm-compressor %s (%s, first time only; cached in %s)",
                     ctx.run.model.name, recipe.method, calibration, final)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        tok = files.load_tokenizer()
        t0 = time.perf_counter()
        with routed_chatter(), cpu_only_awq():
            kwargs: dict[str, Any] = {}
            if ids:
                from datasets import Dataset

                kwargs = dict(dataset=Dataset.from_dict({"input_ids": ids}), num_calibration_samples=len(ids),
                              max_seq_length=recipe.calibration_seq_len, processor=tok or _ids_only_tokenizer())
            oneshot(model=model, recipe=recipe.modifier(), **kwargs)
            stats["quantize_s"] = round(time.perf_counter() - t0, 3)
            model.save_pretrained(tmp, save_compressed=True)
        if tok is not None:
            tok.save_pretrained(tmp)
        info = {"recipe": recipe.key(), "calibration": calibration, "calibration_samples": len(ids),
                "calibration_tokens": sum(map(len, ids)), "source": str(source), "model": ctx.run.model.name,
                "weights": ctx.run.weights, "versions": versions(), "quantize_s": stats["quantize_s"],
                "built_on": "cuda" if torch.cuda.is_available() else "cpu", "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (tmp / BUILD_INFO).write_text(json.dumps(info, indent=1))
        CONSOLE.info("quantized %s (%s) in %.1f s", ctx.run.model.name, recipe.method, stats["quantize_s"])

    hit = build_once(final, build)
    info = json.loads((final / BUILD_INFO).read_text())
    stats["checkpoint_mib"] = round(sum(f.stat().st_size for f in final.iterdir() if f.is_file()) / 2**20, 2)
    return CheckpointBuild(final, stats, info, cache_hit=hit)
