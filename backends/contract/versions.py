"""Installed package versions: what records show and what cache keys are made of."""
from __future__ import annotations

import importlib.metadata as md
from typing import Iterable


def installed_versions(names: Iterable[str], *, missing: str | None = None, local: bool = True) -> dict[str, str]:
    """{distribution: version} of `names`, in their order (duplicates once).

    missing: the value an absent distribution gets (None: it is left out). local=False drops a local
    version label (`2.11.0+cu130` -> `2.11.0`), for cache keys that a CPU and a CUDA build of the same
    release may share.
    """
    out: dict[str, str] = {}
    for name in dict.fromkeys(names):
        try:
            version = md.version(name)
        except md.PackageNotFoundError:
            if missing is not None:
                out[name] = missing
            continue
        out[name] = version if local else version.split("+")[0]
    return out
