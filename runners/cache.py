"""One cache directory for everything quantbench derives (converted models, exports, reference logits)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


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
