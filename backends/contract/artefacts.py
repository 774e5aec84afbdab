"""One cache directory for everything quantbench derives (converted models, exports, reference logits).

An entry is a folder built once through a temp sibling and a rename, with a manifest of what it holds
(each file's size and the SHA-256 of its whole content). Every use checks the manifest first: a
truncated, resized or edited file under a completion marker (a full disk, a killed copy, a user's
edit, 16 MiB zeroed inside a weights file) is detected and the entry rebuilt once, instead of a run
measuring damaged weights and calling them ok. A temp folder a killed build left behind is removed by
the next build of that entry. An entry that is a symbolic link is refused, never followed: nothing
outside the cache is deleted or changed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from backends.contract.safefs import UnsafePath, open_lock, remove_tree, write_text

log = logging.getLogger(__name__)

MANIFEST = ".complete"
MANIFEST_FORMAT = 2  # 1: sampled hashes (start, middle, end), which missed damage in between
_CHUNK = 1 << 22


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


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's whole content (read in 4 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and p.name != MANIFEST)


def write_manifest(folder: Path) -> None:
    entries = {str(p.relative_to(folder)): [p.stat().st_size, file_sha256(p)] for p in _files(folder)}
    write_text(folder / MANIFEST, json.dumps({"format": MANIFEST_FORMAT, "files": entries}, indent=0), folder)


def check_entry(folder: Path) -> None:
    """Refuse an entry that is a symbolic link, or that holds one: quantbench follows no link out of its cache."""
    folder = Path(folder)
    if folder.is_symlink():
        raise UnsafePath(f"cache entry {folder} is a symbolic link (to {os.readlink(folder)}); quantbench never "
                         "writes or deletes through a link: remove the link (the next run rebuilds the entry)")
    if folder.is_dir():
        links = [p for p in folder.rglob("*") if p.is_symlink()]
        if links:
            raise UnsafePath(f"cache entry {folder} holds a symbolic link ({links[0]}); quantbench never follows "
                             "one out of its cache: delete the entry (the next run rebuilds it)")


def damage(folder: Path) -> str | None:
    """Why a built entry cannot be trusted (missing marker, a file missing, resized or changed), or None.
    Reads every byte of the entry: the whole-content check the manifest was built for."""
    check_entry(folder)
    marker = folder / MANIFEST
    if not marker.exists():
        return "not built"
    try:
        manifest = json.loads(marker.read_text())
        entries = manifest["files"]
        fmt = manifest.get("format")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
        return "damaged completion marker"
    if fmt != MANIFEST_FORMAT:
        return (f"built by an older quantbench (manifest format {fmt}, without whole-content checksums): "
                "rebuilt once to record them")
    for name, (size, digest) in entries.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        actual = path.stat().st_size
        if actual != size:
            return f"{name} is {actual} bytes, was {size} when built"
        if file_sha256(path) != digest:
            return f"{name} changed since it was built (its SHA-256 differs)"
    return None


def invalidate(final: Path) -> None:
    """Forget an entry (its marker goes first, so a crash half-way leaves it 'not built')."""
    check_entry(final)
    (final / MANIFEST).unlink(missing_ok=True)
    remove_tree(final)


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
    with os.fdopen(open_lock(final.with_name(final.name + ".lock")), "r+b") as handle:
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
    # Temp folders of builds that were killed (their process is gone: this one holds the entry's lock).
    for stale in final.parent.glob(f"{final.name}.tmp*"):
        remove_tree(stale)
    tmp = final.with_name(f"{final.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        write_manifest(tmp)
        remove_tree(final)
        tmp.rename(final)
    finally:
        remove_tree(tmp)
    again = damage(final)
    if again is not None:
        raise DamagedArtefact(f"cache entry {final} is damaged right after a rebuild ({again}); "
                              f"delete it or point QUANTBENCH_CACHE elsewhere")
    return False
