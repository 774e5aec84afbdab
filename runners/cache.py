"""One cache directory for everything quantbench derives (converted models, exports, reference logits)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable


def cache_dir() -> Path:
    """`QUANTBENCH_CACHE`, else the user's cache dir; created on first use."""
    root = os.environ.get("QUANTBENCH_CACHE")
    if root:
        path = Path(root).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "quantbench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def content_key(*parts: object) -> str:
    """A short stable hash of JSON-able parts: cache entries are keyed by what made them."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_path(kind: str, *parts: object) -> Path:
    """`<cache>/<kind>/<key>`: the folder for one derived artefact (not created)."""
    return cache_dir() / kind / content_key(*parts)


def folder_identity(folder: str) -> Any:
    """What distinguishes one model folder's contents without hashing gigabytes: names, sizes, mtimes."""
    path = Path(folder)
    if not path.is_dir():
        return folder  # a hub id: from_pretrained resolves it; its revision is the hub's business
    return [str(path.resolve())] + sorted(
        (f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file())


def build_once(final: Path, build: Callable[[Path], object]) -> bool:
    """Build `final/` through a temp sibling and a rename; True when it was already there.

    A build killed half-way (timeout, OOM, Ctrl-C) never leaves a half folder that a later run
    would take for a finished one: only a completed build is renamed into place.
    """
    if (final / ".complete").exists():
        return True
    tmp = final.with_name(f"{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return False
