"""One cache directory for everything quantbench derives (converted models, exports, reference logits).

An entry is a folder built once through a temp sibling and a rename, with a manifest of what it holds
(file sizes and sampled hashes). A later use checks the manifest first: a truncated or damaged file
under a completion marker (a full disk, a killed copy, a user's edit) is detected and rebuilt once,
instead of making every later run crash.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)

MANIFEST = ".complete"
# Hash this much from the start, middle and end of each file: catches truncation and most damage
# without reading tens of gigabytes of synthetic weights on every run.
_SAMPLE_BYTES = 1 << 20


class DamagedArtefact(RuntimeError):
    """A cache entry that failed its check again after a rebuild; the message names its path."""


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


def _sampled_hash(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, size // 2 - _SAMPLE_BYTES // 2), max(0, size - _SAMPLE_BYTES)}):
            f.seek(offset)
            h.update(f.read(_SAMPLE_BYTES))
    return h.hexdigest()[:16]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path) -> None:
    entries = {str(p.relative_to(folder)): [p.stat().st_size, _sampled_hash(p, p.stat().st_size)]
               for p in _files(folder)}
    (folder / MANIFEST).write_text(json.dumps({"format": 1, "files": entries}, indent=0))


def damage(folder: Path) -> str | None:
    """Why a built entry cannot be trusted (missing marker, a file missing, resized or changed), or None."""
    marker = folder / MANIFEST
    if not marker.exists():
        return "not built"
    try:
        manifest = json.loads(marker.read_text())
        entries = manifest["files"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        # Entries from before manifests held the word "ok": trust them as before, rather than rebuild
        # every cache once; damage in them still shows as a failed load, which rebuilds too.
        return None if marker.read_bytes().strip() == b"ok" else "damaged completion marker"
    for name, (size, digest) in entries.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        actual = path.stat().st_size
        if actual != size:
            return f"{name} is {actual} bytes, was {size} when built"
        if _sampled_hash(path, actual) != digest:
            return f"{name} changed since it was built"
    return None


def invalidate(final: Path) -> None:
    """Forget an entry (its marker goes first, so a crash half-way leaves it 'not built')."""
    (final / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(final, ignore_errors=True)


@contextlib.contextmanager
def builder_lock(final: Path) -> Iterator[None]:
    """One builder per entry across processes (`<entry>.lock`, flock: released when a process dies).

    Why: cells of a parallel sweep (or parallel test workers) that need the same export would each
    build it, and the last one's rename would delete the folder another is already loading from.
    """
    try:
        import fcntl
    except ImportError:  # no flock here (Windows): builds stay safe, only not deduplicated
        yield
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.with_name(final.name + ".lock"), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process building %s", final)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(final: Path, build: Callable[[Path], object]) -> bool:
    """Build `final/` through a temp sibling and a rename; True when a sound entry was already there.

    A build killed half-way (timeout, OOM, Ctrl-C) never leaves a half folder that a later run would
    take for a finished one: only a completed build is renamed into place. A damaged entry is
    rebuilt once; if the rebuilt one fails its check too, DamagedArtefact names the path. Processes
    asking for the same entry at once build it once: the others wait and take the finished one.
    """
    if damage(final) is None:
        return True
    with builder_lock(final):
        return _build_locked(final, build)


def _build_locked(final: Path, build: Callable[[Path], object]) -> bool:
    why = damage(final)
    if why is None:  # another process built it while this one waited for the lock
        return True
    if why != "not built":
        log.warning("cache entry %s is damaged (%s): rebuilding it", final, why)
        invalidate(final)
    tmp = final.with_name(f"{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        write_manifest(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    again = damage(final)
    if again is not None:
        raise DamagedArtefact(f"cache entry {final} is damaged right after a rebuild ({again}); "
                              f"delete it or point QUANTBENCH_CACHE elsewhere")
    return False
