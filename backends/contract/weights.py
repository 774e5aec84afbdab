"""Pickle checkpoints: refused the same way by every engine, before any of them loads a file.

`from_pretrained` (and `torch.load`) unpickle `.bin`/`.pt` checkpoints, which runs code from the file.
A folder that holds only such files is refused unless the model opts in (`model.allow_pickle=true`).
"""
from __future__ import annotations

from pathlib import Path

from backends.contract.errors import RunFailure

# Files from_pretrained would unpickle (arbitrary code) when no safetensors file is there.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
PICKLE_HINT = "set model.allow_pickle=true to allow it (unpickling runs code from the checkpoint)"


def pickle_only(folder: str) -> list[str]:
    """The pickle checkpoints of a local model folder that holds no safetensors weights; else []."""
    path = Path(folder)
    if not path.is_dir():
        return []
    names = sorted(f.name for f in path.iterdir() if f.is_file())
    if any(n.endswith(".safetensors") for n in names):
        return []
    return [n for n in names if n.endswith(PICKLE_SUFFIXES) and not n.startswith(("training_args", "optimizer"))]


def refuse_pickle(folder: str) -> None:
    """RunFailure (invalid_config) when the folder's weights are pickle-only."""
    found = pickle_only(folder)
    if found:
        raise RunFailure("invalid_config", f"model folder {folder} holds only pickle checkpoints "
                                           f"({', '.join(found)}), not safetensors: {PICKLE_HINT}")
