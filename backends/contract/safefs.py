"""Writing into folders quantbench owns (results, the cache) without being turned against the user.

Results folders are shared and kept in git, which keeps symbolic links: a `table.md` that is a link
to a file elsewhere must not make a report overwrite that file, and a cache entry that links outside
the cache must not make a run delete files there. So every file quantbench writes under a folder it
owns goes through here:
- written to a temporary file in the same folder, flushed, then renamed into place: a reader (or a
  full disk, or a kill) sees the old file or the new one, never half of one;
- never through a symbolic link: a link at the file's own path, or at any folder between the owned
  folder and the file, is refused with one line naming it (`UnsafePath`), and nothing is written;
- deletions stay inside the owned folder (`remove_tree` refuses a link rather than follow it).
The owned folder itself may be a link (a results folder on another disk is the user's choice).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class UnsafePath(OSError):
    """A path quantbench will not write or delete through; the message is one line naming it."""


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def check_path(path: Path, root: Path | None = None) -> None:
    """Refuse `path` when it, or a folder between `root` (exclusive) and it, is a symbolic link."""
    path = Path(path)
    stops = [path]
    if root is not None:
        root = Path(root)
        try:
            rel = path.relative_to(root)
        except ValueError:
            rel = None
        if rel is not None:
            parts = rel.parts[:-1]
            stops += [root.joinpath(*parts[:i + 1]) for i in range(len(parts))]
    else:
        stops.append(path.parent)
    for p in stops:
        if p.is_symlink():
            raise UnsafePath(f"refusing to write {path}: {p} is a symbolic link (to {_link_target(p)}); quantbench "
                             "never writes through a link: remove it, or give the run a folder of its own")


def write_bytes(path: Path, data: bytes, root: Path | None = None) -> None:
    """`data` to `path` atomically, never through a link (see the module doc)."""
    path = Path(path)
    check_path(path, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_path(path, root)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        check_path(path, root)  # a link made while this wrote is refused too
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, root: Path | None = None) -> None:
    write_bytes(path, text.encode("utf-8"), root)


def open_append(path: Path, root: Path | None = None):
    """A log file opened for appending (binary), refusing a link at its path."""
    path = Path(path)
    check_path(path, root)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if path.is_symlink():
            raise UnsafePath(f"refusing to write {path}: it is a symbolic link (to {_link_target(path)}); quantbench "
                             "never writes through a link") from exc
        raise
    return os.fdopen(fd, "ab")


def open_lock(path: Path) -> int:
    """A lock file's descriptor (created if missing), refusing a link at its path."""
    path = Path(path)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if path.is_symlink():
            raise UnsafePath(f"refusing to use {path}: it is a symbolic link (to {_link_target(path)}); quantbench "
                             "never writes through a link: remove it") from exc
        raise


def remove_tree(path: Path) -> None:
    """Delete a folder quantbench made; a link is refused (what it points to is not ours)."""
    path = Path(path)
    if path.is_symlink():
        raise UnsafePath(f"refusing to delete through {path}: it is a symbolic link (to {_link_target(path)}); "
                         "quantbench deletes nothing outside the folders it owns: remove the link")
    shutil.rmtree(path, ignore_errors=True)
