#!/usr/bin/env python3
"""Which compressed-tensors folder a vLLM llm-compressor backend runs (scripts/gpu_campaign.sh ct-vllm).

    python scripts/ct_checkpoint.py BACKEND --model MODEL [--carried DIR] [--cache DIR]

prints `KEY=FOLDER`, KEY being the backend YAML's `checkpoint:` (e.g. vllm_ct_gptq_w4a16 -> ct_gptq_w4a16):
- DIR/KEY when a folder with a config.json was carried there (scripts/carry.py unpack), else
- the newest folder under <cache>/compressed/ whose quantbench_build.json says llm-compressor made it
  for MODEL's pretrained weights with exactly the backend's own `compress:` recipe: the checkpoint
  that the transformers twin (ct_*) built on this machine and ran.
Exit 1 with the reason on stderr when there is none (the campaign then does not start the row, which
would otherwise try to build it in vLLM's process, where llm-compressor's compressed-tensors is not
the one that imports).

Why not let the vLLM engine build it: llm-compressor 0.14 pins compressed-tensors 0.19.0 and vLLM 0.26
pins 0.17.0, so the campaign quantizes in a process with llm-compressor's target only, and hands the
folder to vLLM's process as `+model.checkpoints.KEY=FOLDER`. A folder made by 0.19 loads in 0.17: the
quantization_config's fields are the same in both, and 4-bit `pack-quantized` packing is bit-identical.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends.compress.build import BUILD_INFO  # noqa: E402  (no heavy imports: llm-compressor loads lazily)
from backends.compress.recipe import Recipe  # noqa: E402


def backend_options(backend: str, conf: Path) -> dict:
    import yaml

    path = conf / "backend" / f"{backend}.yaml"
    if not path.is_file():
        raise LookupError(f"no backend {backend!r} in {conf / 'backend'}")
    return (yaml.safe_load(path.read_text()) or {}).get("options") or {}


def built(cache: Path, model: str, recipe: Recipe) -> list[tuple[str, Path]]:
    """(built_at, folder) of every finished build of `recipe` for `model`'s pretrained weights."""
    want = json.loads(json.dumps(recipe.key()))
    found = []
    for info_file in sorted((cache / "compressed").glob(f"*/{BUILD_INFO}")):
        try:
            info = json.loads(info_file.read_text())
        except (OSError, ValueError):
            continue
        folder = info_file.parent
        if (info.get("model") == model and info.get("weights") == "pretrained" and info.get("recipe") == want
                and (folder / "config.json").is_file()):
            found.append((str(info.get("built_at", "")), folder))
    return sorted(found)


def find(backend: str, model: str, carried: Path, cache: Path, conf: Path = ROOT / "conf") -> tuple[str, Path]:
    opts = backend_options(backend, conf)
    key, compress = opts.get("checkpoint"), opts.get("compress")
    if not key or not compress:
        raise LookupError(f"backend {backend!r} names no `checkpoint:` with a `compress:` recipe")
    if (carried / key / "config.json").is_file():
        return key, carried / key
    builds = built(cache, model, Recipe(**compress))
    if not builds:
        raise LookupError(f"no {key} checkpoint: none carried ({carried / key}) and none built for {model} with "
                          f"{backend}'s recipe under {cache / 'compressed'} (its transformers row {key} builds it)")
    return key, builds[-1][1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("backend")
    p.add_argument("--model", required=True)
    p.add_argument("--carried", type=Path, default=Path(os.environ.get("CARRY_DEST", "/tmp/carried")))
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("QUANTBENCH_CACHE", "/tmp/qbcache")))
    args = p.parse_args(argv)
    try:
        key, folder = find(args.backend, args.model, args.carried, args.cache)
    except LookupError as exc:
        print(f"ct_checkpoint: {exc}", file=sys.stderr)
        return 1
    print(f"{key}={folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
