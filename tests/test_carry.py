"""scripts/carry.py: folders (checkpoints) packed into transfer chunks and unpacked on the host,
byte for byte, with a damaged or missing part named rather than unpacked."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))  # carry.py imports its helpers from wheelhouse.py beside it
_spec = importlib.util.spec_from_file_location("carry", ROOT / "scripts" / "carry.py")
carry = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(carry)

CHUNK = 100 * 1024 + 64 * 1024  # parts of 100 KiB beside the manifest's reserve


def make_folders(tmp_path: Path) -> list[Path]:
    a, b = tmp_path / "src" / "gptq", tmp_path / "src" / "fp8"
    (a / "sub").mkdir(parents=True)
    b.mkdir(parents=True)
    (a / "model.safetensors").write_bytes(os.urandom(250_000))  # incompressible, like packed weights
    (a / "sub" / "config.json").write_text('{"quantization_config": {}}')
    (b / "model.safetensors").write_bytes(os.urandom(120_000))
    return [a, b]


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_chunks(chunks: list[Path], base: Path) -> None:
    """What the device calls do: one chunk folder each, into one BASE."""
    for c in chunks:
        shutil.copytree(c, base / c.name)


def test_round_trip_is_byte_identical_and_each_chunk_fits(tmp_path):
    folders = make_folders(tmp_path)
    chunks = carry.pack("ckpt", folders, CHUNK, tmp_path / "out")
    assert [c.name for c in chunks] == ["01", "02", "03", "04"]  # ~380 KB of tar in 100 KiB parts
    assert all(sum(f.stat().st_size for f in c.iterdir()) <= CHUNK for c in chunks)
    assert (chunks[0] / "ckpt.carry.json").is_file()
    copy_chunks(chunks, tmp_path / "base")
    (tmp_path / "dest" / "gptq").mkdir(parents=True)
    (tmp_path / "dest" / "gptq" / "stale.bin").write_bytes(b"from an earlier unpack")
    got = carry.unpack(tmp_path / "base", tmp_path / "dest")
    assert got == [tmp_path / "dest" / "gptq", tmp_path / "dest" / "fp8"]
    for src, dst in zip(folders, got):
        assert digests(dst) == digests(src)
    assert not list((tmp_path / "dest").glob(".*.tar*"))  # the joined tar is not left behind


@pytest.mark.parametrize("harm, word", [("damage", "damaged"), ("lose", "missing")])
def test_a_bad_part_is_named_and_nothing_is_unpacked(tmp_path, harm, word):
    chunks = carry.pack("ckpt", make_folders(tmp_path), CHUNK, tmp_path / "out")
    copy_chunks(chunks, tmp_path / "base")
    [part] = (tmp_path / "base" / "03").glob("ckpt.tar.part*")
    if harm == "damage":
        part.write_bytes(b"x" + part.read_bytes()[1:])
    else:
        part.unlink()
    with pytest.raises(carry.UsageError, match=rf"send chunk folder 03 \(ckpt\.tar\.part02 {word}\) again"):
        carry.unpack(tmp_path / "base", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_pack_refuses_what_would_collide(tmp_path):
    folders = make_folders(tmp_path)
    (tmp_path / "other" / "gptq").mkdir(parents=True)
    with pytest.raises(carry.UsageError, match="share a name"):
        carry.pack("ckpt", [folders[0], tmp_path / "other" / "gptq"], CHUNK, tmp_path / "out")
    carry.pack("ckpt", folders, CHUNK, tmp_path / "out")
    # A second set numbered from 01 would overfill the same chunk folders.
    with pytest.raises(carry.UsageError, match="already holds other files"):
        carry.pack("model", folders[1:], CHUNK, tmp_path / "out")
    # The same set again replaces its own chunks, shorter this time: no stale part or folder stays.
    chunks = carry.pack("ckpt", folders[1:], CHUNK, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [c.name for c in chunks] == ["01", "02"]


def test_campaign_unpack_phase_reads_the_carried_chunks(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    folders = make_folders(tmp_path)
    copy_chunks(carry.pack("ckpt", folders, CHUNK, tmp_path / "out"), tmp_path / "carry")
    env = {**os.environ, "CARRY": str(tmp_path / "carry"), "CARRY_DEST": str(tmp_path / "carried"),
           "RESULTS": str(tmp_path / "results" / "h200"), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "scripts/gpu_campaign.sh", "unpack"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert digests(tmp_path / "carried" / "gptq") == digests(folders[0])
    assert str(tmp_path / "carried" / "fp8") in proc.stdout


def test_a_folder_can_unpack_under_the_name_the_host_looks_for(tmp_path):
    # Cache folders are content keys; the host's campaign finds checkpoints by backend key.
    folders = make_folders(tmp_path)
    pairs = [carry.parse_folder(f"ct_gptq_w4a16={folders[0]}"), carry.parse_folder(str(folders[1]))]
    assert pairs == [("ct_gptq_w4a16", folders[0]), ("fp8", folders[1])]
    copy_chunks(carry.pack("ckpt", pairs, CHUNK, tmp_path / "out"), tmp_path / "base")
    got = carry.unpack(tmp_path / "base", tmp_path / "dest")
    assert [g.name for g in got] == ["ct_gptq_w4a16", "fp8"] and digests(got[0]) == digests(folders[0])
    with pytest.raises(carry.UsageError, match="folder name"):
        carry.pack("ckpt", [("../up", folders[0])], CHUNK, tmp_path / "out2")
