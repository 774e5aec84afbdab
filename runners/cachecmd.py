"""`quantbench cache`: where the cache is, what it holds, and clearing it.

    quantbench cache [list]              every entry: kind, key, size, state, last change; totals
    quantbench cache clear KIND|KEY ...  remove those entries (and their `.lock` files)
    quantbench cache clear --all         remove every entry
    quantbench cache path                the cache folder only (for scripts)

The cache (`$QUANTBENCH_CACHE`, else `~/.cache/quantbench`) is `<cache>/<kind>/<key>`: one folder per
derived artefact, built through a temp sibling and marked complete by its manifest (see
backends.contract.artefacts). Listing never reads file contents (the whole-content check, `damage()`,
would hash gigabytes): an entry is "complete" when its manifest file exists. Clearing deletes nothing
outside the cache and nothing through a symbolic link: a link is reported and left alone.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from backends.contract.artefacts import MANIFEST, cache_dir
from backends.contract.safefs import UnsafePath, remove_tree

# The same codes as runners.sweep (kept here so that this command loads without Hydra).
EXIT_OK, EXIT_NOT_OK, EXIT_USAGE = 0, 1, 2
SUBCOMMANDS = ("list", "clear", "path")
_MIB = 1 << 20
# `<entry>.tmp<pid>`: the temp folder of a build; one that is still there after its build is a killed
# build's leftover (the next build of that entry removes it too).
_TEMP = re.compile(r"^(?P<stem>.+)\.tmp\d+$")
_LOCK = ".lock"
# Where the entry sits: a kind folder's child, or something at the cache's top level that is no kind folder.
_TOP = "-"

HELP = f"""usage: quantbench cache [list | path | clear (KIND|KEY|KIND/KEY ... | --all)]

  list (default)   the cache folder, then one line per entry: kind, key, size in MiB, state, last change;
                   totals per kind and overall. state: complete (its {MANIFEST} manifest exists),
                   incomplete, temp (a killed build's leftover), lock, link (never followed), file
  clear NAME ...   remove the entries of a kind (converted, onnx, ...), or one entry by its key, with
                   the entry's .lock file; a link is reported, not deleted through (exit 1)
  clear --all      remove every entry
  path             print the cache folder only

The cache is $QUANTBENCH_CACHE, else $XDG_CACHE_HOME/quantbench (~/.cache/quantbench). Everything in it
is rebuilt on demand by the next run that needs it. Exit 0 ok, 1 something was left (a link, a
build in progress), 2 usage error."""


@dataclass(frozen=True)
class Entry:
    """One thing in the cache: `<cache>/<kind>/<key>`, or `<cache>/<kind>` itself when that is no folder."""
    kind: str
    key: str
    path: Path
    state: str          # complete | incomplete | temp | lock | link | file
    size_bytes: int     # lstat sizes of everything under it; links are counted, never followed
    modified: float     # newest lstat mtime under it (s since the epoch)
    link_target: str = ""

    @property
    def size_mib(self) -> float:
        return self.size_bytes / _MIB

    @property
    def name(self) -> str:
        return self.kind if self.key == _TOP else f"{self.kind}/{self.key}"


@dataclass(frozen=True)
class KindTotal:
    kind: str
    entries: int
    size_bytes: int

    @property
    def size_mib(self) -> float:
        return self.size_bytes / _MIB


@dataclass(frozen=True)
class Removal:
    """What `clear` did with one entry: removed (with its size), or why not."""
    entry: Entry
    removed: bool
    why_not: str = ""


def _tree_size_and_mtime(path: Path) -> tuple[int, float]:
    """Sum of lstat sizes of every non-folder under `path`, and the newest lstat mtime (path included)."""
    top = os.lstat(path)
    if not stat.S_ISDIR(top.st_mode):
        return top.st_size, top.st_mtime
    size_bytes, newest = 0, top.st_mtime
    # os.walk lists a link to a folder among the folders but, with followlinks=False, never enters it.
    for folder, dirs, files in os.walk(path, followlinks=False):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except FileNotFoundError:  # removed while this walked (a build finishing): not there any more
                continue
            newest = max(newest, st.st_mtime)
            if not stat.S_ISDIR(st.st_mode):
                size_bytes += st.st_size
    return size_bytes, newest


def _entry(kind: str, key: str, path: Path) -> Entry:
    size_bytes, modified = _tree_size_and_mtime(path)
    if path.is_symlink():
        return Entry(kind, key, path, "link", size_bytes, modified, os.readlink(path))
    if path.is_dir():
        if _TEMP.match(path.name):
            state = "temp"
        else:
            state = "complete" if (path / MANIFEST).is_file() else "incomplete"
    else:
        state = "lock" if path.name.endswith(_LOCK) else "file"
    return Entry(kind, key, path, state, size_bytes, modified)


def scan(root: Path) -> list[Entry]:
    """Every entry under the cache `root`, sorted by kind, then size (largest first), then key."""
    entries: list[Entry] = []
    for top in sorted(root.iterdir()):
        if top.is_symlink() or not top.is_dir():
            entries.append(_entry(top.name, _TOP, top))
            continue
        entries += [_entry(top.name, child.name, child) for child in top.iterdir()]
    return sorted(entries, key=lambda e: (e.kind, -e.size_bytes, e.key))


def totals(entries: list[Entry]) -> list[KindTotal]:
    by_kind: dict[str, list[Entry]] = {}
    for e in entries:
        by_kind.setdefault(e.kind, []).append(e)
    return [KindTotal(kind, len(es), sum(e.size_bytes for e in es)) for kind, es in sorted(by_kind.items())]


def _where(root: Path) -> str:
    source = "$QUANTBENCH_CACHE" if os.environ.get("QUANTBENCH_CACHE") else "default; set QUANTBENCH_CACHE to move it"
    return f"cache: {root} ({source})"


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")


def _state_text(e: Entry) -> str:
    if e.state == "link":
        return f"link -> {e.link_target}"
    return "temp (a killed build's leftover)" if e.state == "temp" else e.state


def format_listing(root: Path, entries: list[Entry]) -> str:
    lines = [_where(root)]
    if not entries:
        return "\n".join(lines + ["(empty)"])
    kind_w = max(len("kind"), *(len(e.kind) for e in entries), len("all"))
    key_w = max(len("key"), *(len(e.key) for e in entries))
    lines.append(f"{'kind':<{kind_w}}  {'key':<{key_w}}  {'size_mib':>10}  {'modified':<16}  state")
    for e in entries:
        lines.append(f"{e.kind:<{kind_w}}  {e.key:<{key_w}}  {e.size_mib:>10.2f}  {_when(e.modified):<16}  "
                     f"{_state_text(e)}")
    lines.append("")
    lines.append(f"{'kind':<{kind_w}}  {'entries':>7}  {'size_mib':>10}")
    kinds = totals(entries)
    for t in kinds:
        lines.append(f"{t.kind:<{kind_w}}  {t.entries:>7}  {t.size_mib:>10.2f}")
    all_bytes = sum(t.size_bytes for t in kinds)
    lines.append(f"{'all':<{kind_w}}  {len(entries):>7}  {all_bytes / _MIB:>10.2f}")
    return "\n".join(lines)


def lexically_inside(path: Path, root: Path) -> bool:
    """`path` strictly inside `root`, by the names alone: `..` is folded, no link is resolved (a link's
    target is exactly what must not decide where a deletion lands)."""
    p = Path(os.path.normpath(os.path.abspath(path)))
    r = Path(os.path.normpath(os.path.abspath(root)))
    return p != r and p.is_relative_to(r)


def _build_in_progress(lock: Path) -> bool:
    """Another process holds `<entry>.lock` (builder_lock): its build owns the entry and its temp folder."""
    try:
        import fcntl
    except ImportError:  # no flock here (Windows): builder_lock takes none either
        return False
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # missing, or a link (reported as such by its own entry)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the probe's lock too
    return False


def _lock_of(e: Entry) -> Path:
    """The lock a build of this entry holds: `<key>.lock` next to it (a temp folder's is its entry's)."""
    if e.state == "lock":
        return e.path
    temp = _TEMP.match(e.path.name)
    stem = temp.group("stem") if temp else e.path.name
    return e.path.with_name(stem + _LOCK)


def remove(e: Entry, root: Path) -> Removal:
    if not lexically_inside(e.path, root):
        return Removal(e, False, f"{e.path} is not inside the cache {root}: left alone")
    if e.state == "link":
        return Removal(e, False, f"{e.path} is a symbolic link (to {e.link_target}); quantbench deletes nothing "
                                 "through a link: remove the link yourself")
    if e.key != _TOP and _build_in_progress(_lock_of(e)):
        return Removal(e, False, f"{e.path} is being built by another process: run clear again when it is done")
    try:
        if e.path.is_dir():
            remove_tree(e.path)
        else:
            e.path.unlink(missing_ok=True)
    except UnsafePath as exc:  # it became a link since the scan
        return Removal(e, False, str(exc))
    except OSError as exc:
        return Removal(e, False, f"cannot remove {e.path}: {exc.strerror or exc}")
    # remove_tree ignores errors (a read-only file, a folder another process is filling): say so
    if os.path.lexists(e.path):
        return Removal(e, False, f"{e.path} could not be removed completely")
    return Removal(e, True)


def _select(entries: list[Entry], names: list[str]) -> tuple[list[Entry], list[str]]:
    """Entries named by kind, key or kind/key, in listing order; and the names that matched nothing."""
    chosen: dict[Path, Entry] = {}
    unmatched = []
    for name in names:
        hits = [e for e in entries if name in (e.kind, e.key, e.name)]
        if not hits:
            unmatched.append(name)
        for e in hits:
            chosen[e.path] = e
    return [e for e in entries if e.path in chosen], unmatched


def _with_locks(chosen: list[Entry], entries: list[Entry]) -> list[Entry]:
    """The chosen entries, each followed by its `<key>.lock` when that is there and not chosen already."""
    locks = {e.path: e for e in entries if e.state == "lock"}
    seen = {e.path for e in chosen}
    out = []
    for e in chosen:
        out.append(e)
        lock = e.path.with_name(e.path.name + _LOCK)
        if e.state != "lock" and lock in locks and lock not in seen:
            out.append(locks[lock])
            seen.add(lock)
    return out


def _drop_empty_kind_folders(root: Path, removed: list[Entry]) -> None:
    """A kind folder emptied by clear goes too (the next build makes it again)."""
    for kind in sorted({e.kind for e in removed if e.key != _TOP}):
        folder = root / kind
        if lexically_inside(folder, root) and not folder.is_symlink():
            try:
                folder.rmdir()
            except OSError:  # not empty: entries were left, or a build started meanwhile
                pass


def clear(root: Path, argv: list[str]) -> int:
    everything = "--all" in argv
    names = [a for a in argv if a != "--all"]
    if everything and names:
        print("quantbench cache clear: give --all or names of kinds/entries, not both", file=sys.stderr)
        return EXIT_USAGE
    entries = scan(root)
    kinds = sorted({e.kind for e in entries if e.key != _TOP})
    valid = f"kinds here: {', '.join(kinds) or '(none: the cache is empty)'}, or a key from `quantbench cache list`"
    if not everything and not names:
        print(f"quantbench cache clear: name what to remove (KIND, KEY or KIND/KEY), or --all; {valid}",
              file=sys.stderr)
        return EXIT_USAGE
    options = [n for n in names if n.startswith("-")]
    if options:
        print(f"quantbench cache clear: unknown option {options[0]!r}; valid: --all", file=sys.stderr)
        return EXIT_USAGE
    if everything:
        chosen = entries
    else:
        # All names are checked before anything is deleted: a typo must not leave half a clear done.
        chosen, unmatched = _select(entries, names)
        if unmatched:
            print(f"quantbench cache clear: nothing named {', '.join(map(repr, unmatched))} in {root}; {valid}",
                  file=sys.stderr)
            return EXIT_USAGE
    results = [remove(e, root) for e in _with_locks(chosen, entries)]
    removed = [r.entry for r in results if r.removed]
    for r in results:
        if r.removed:
            print(f"removed {r.entry.name}  {r.entry.size_mib:.2f} MiB")
        else:
            print(f"left {r.entry.name}: {r.why_not}", file=sys.stderr)
    _drop_empty_kind_folders(root, removed)
    freed_mib = sum(e.size_bytes for e in removed) / _MIB
    print(f"freed {freed_mib:.2f} MiB in {len(removed)} entries of {root}")
    return EXIT_OK if all(r.removed for r in results) else EXIT_NOT_OK


def main(argv: list[str]) -> int:
    """`quantbench cache ...` (argv after `cache`); returns the exit code."""
    if "-h" in argv or "--help" in argv or argv[:1] == ["help"]:
        print(HELP)
        return EXIT_OK
    sub, rest = (argv[0], argv[1:]) if argv else ("list", [])
    if sub not in SUBCOMMANDS:
        print(f"quantbench cache: unknown subcommand {sub!r}; valid: {', '.join(SUBCOMMANDS)} (see --help)",
              file=sys.stderr)
        return EXIT_USAGE
    if sub != "clear" and rest:
        print(f"quantbench cache {sub}: takes no arguments, got {' '.join(rest)!r}; valid subcommands: "
              f"{', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return EXIT_USAGE
    root = cache_dir()
    if sub == "path":
        print(root)
        return EXIT_OK
    if sub == "list":
        print(format_listing(root, scan(root)))
        return EXIT_OK
    return clear(root, rest)
