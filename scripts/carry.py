#!/usr/bin/env python3
"""Carry folders (quantized checkpoints, converted models) to an offline GPU host in transfer-sized
chunks, as scripts/wheelhouse.py carries wheels.

  python scripts/carry.py pack NAME [AS=]DIR [...] --chunk-size 45M [--out .wheelhouse/carry]
      one uncompressed tar of the folders (each under AS, or its own base name), cut into parts:
      OUT/NN/NAME.tar.partKK, one part per chunk folder, and OUT/01/NAME.carry.json (sizes, sha256s)
  python scripts/carry.py unpack BASE DEST
      on the host, after every OUT/NN folder was copied into BASE: checks each part (naming the chunk
      folder to send again), rejoins, checks the whole, and extracts into DEST/<folder>

Safetensors and packed int4 weights do not compress, so the tar is not compressed: the parts are as
many as the bytes need and unpacking costs no CPU.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wheelhouse import PART_SUFFIX, SAFE_NAME, UsageError, chunk_name, join_parts, parse_size  # noqa: E402
from wheelhouse import sha256_file, split_file  # noqa: E402

MANIFEST = ".carry.json"


def parse_folder(text: str) -> tuple[str, Path]:
    """`DIR` or `NAME=DIR`: the folder and the name it unpacks under (default: its own base name)."""
    name, eq, path = text.partition("=")
    folder = Path(path if eq else text)
    return (name if eq else folder.name), folder


def pack(name: str, folders: list[Path] | list[tuple[str, Path]], chunk_size: int, out: Path) -> list[Path]:
    """Write the chunk folders; return them in order. The manifest sits in the first. `folders`:
    paths, or (name on the host, path) pairs."""
    if not SAFE_NAME.match(name):
        raise UsageError(f"name {name!r}: use letters, digits, '.', '_' and '-'")
    named = [f if isinstance(f, tuple) else (f.name, f) for f in folders]
    bases = [b for b, _ in named]
    for base, f in named:
        if not SAFE_NAME.match(base):
            raise UsageError(f"folder name {base!r}: use letters, digits, '.', '_' and '-'")
        if not f.is_dir():
            raise UsageError(f"{f}: not a folder")
    if len(set(bases)) != len(bases):
        raise UsageError(f"two folders share a name ({', '.join(bases)}): they would unpack onto each other")
    # Room for the manifest beside the first part (it is a few hundred bytes).
    part_size = chunk_size - 64 * 1024
    if part_size <= 0:
        raise UsageError(f"chunk size {chunk_size} bytes leaves no room for a part")
    # One set per OUT: two sets numbered from 01 would share chunk folders and overfill them.
    others = sorted({f.name for f in out.glob("*/*") if not f.name.startswith(f"{name}.")})
    if others:
        raise UsageError(f"{out} already holds other files ({', '.join(others[:3])}): pack every folder "
                         f"into one set, or use another --out")
    for stale in out.glob(f"*/{name}.*"):
        stale.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    # Beside OUT, so that the parts move into place instead of being copied across filesystems.
    with tempfile.TemporaryDirectory(prefix=".qb_carry_", dir=out.parent) as tmp:
        archive = Path(tmp) / f"{name}.tar"
        with tarfile.open(archive, "w") as tar:
            for base, f in named:
                tar.add(f, arcname=base)
        parts = split_file(archive, part_size, Path(tmp) / "parts")
        manifest = {"name": name, "folders": bases, "tar_bytes": archive.stat().st_size,
                    "tar_sha256": sha256_file(archive),
                    "parts": {p.name: sha256_file(p) for p in parts}}
        chunks = []
        for i, part in enumerate(parts, 1):
            chunk = out / chunk_name(i, len(parts))
            chunk.mkdir(parents=True, exist_ok=True)
            shutil.move(part, chunk / part.name)
            chunks.append(chunk)
        (chunks[0] / f"{name}{MANIFEST}").write_text(json.dumps(manifest, indent=1) + "\n")
    for left in out.glob("*"):  # chunk folders of an earlier, longer pack of this set
        if left.is_dir() and not any(left.iterdir()):
            left.rmdir()
    return chunks


def unpack(base: Path, dest: Path) -> list[Path]:
    """Check, rejoin and extract every carried set whose manifest is in BASE/*/; return the folders."""
    manifests = sorted(base.glob(f"*/*{MANIFEST}"))
    if not manifests:
        raise UsageError(f"no *{MANIFEST} under {base}/*/: copy chunk folder 01 there")
    out = []
    for path in manifests:
        manifest = json.loads(path.read_text())
        found = {p.name: p for p in base.glob(f"*/{manifest['name']}.tar{PART_SUFFIX}*")}
        bad = []
        for i, (part, digest) in enumerate(manifest["parts"].items(), 1):  # part i sits in chunk folder i
            if part not in found or sha256_file(found[part]) != digest:
                bad.append(f"{chunk_name(i, len(manifest['parts']))} ({part} "
                           f"{'missing' if part not in found else 'damaged'})")
        if bad:
            raise UsageError(f"{manifest['name']}: send chunk folder {', '.join(bad)} again")
        dest.mkdir(parents=True, exist_ok=True)
        for folder in manifest["folders"]:  # an earlier unpack's files must not outlive this one
            shutil.rmtree(dest / folder, ignore_errors=True)
        archive = join_parts([found[p] for p in manifest["parts"]], dest / f".{manifest['name']}.tar",
                             manifest["tar_sha256"])
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(dest, filter="data")  # no absolute paths, links out of DEST or devices
        finally:
            archive.unlink()
        out += [dest / f for f in manifest["folders"]]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="folders -> chunk folders")
    pk.add_argument("name")
    pk.add_argument("folders", nargs="+", type=parse_folder, metavar="[NAME=]DIR",
                    help="a folder, unpacked under its base name or under NAME")
    pk.add_argument("--chunk-size", required=True, help="largest chunk folder, e.g. 45M")
    pk.add_argument("--out", type=Path, default=Path(".wheelhouse/carry"))
    up = sub.add_parser("unpack", help="chunk folders -> folders (on the host)")
    up.add_argument("base", type=Path)
    up.add_argument("dest", type=Path)
    args = p.parse_args(argv)
    try:
        if args.cmd == "pack":
            chunks = pack(args.name, args.folders, parse_size(args.chunk_size), args.out)
            for c in chunks:
                print(f"  {c}  {sum(f.stat().st_size for f in c.iterdir()) / 2**20:.2f} MiB")
            print(f"{len(chunks)} chunk folder(s); on the host, after copying each into BASE: "
                  f"python3 scripts/carry.py unpack BASE DEST")
        else:
            for folder in unpack(args.base, args.dest):
                print(folder)
    except (UsageError, ValueError) as exc:
        print(f"carry: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
