"""`quantbench cache`: lists a fake cache (sizes, totals, states, a link shown as a link), clears by kind,
by key (with its lock) and everything, never deletes through a link or outside the cache, and is wired
into `python -m runners.bench cache`."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backends.contract.artefacts import MANIFEST
from runners import cachecmd, sweep

from .conftest import ROOT

MIB = 1 << 20
CONVERTED_A = "3f9a1c0e5b7d2a41"   # complete, 3 MiB, has a lock
CONVERTED_B = "77e0c1d2a3b4c5d6"   # incomplete (no manifest), 1 MiB
CONVERTED_TMP = "77e0c1d2a3b4c5d6.tmp1234"  # a killed build's leftover, 2 MiB
ONNX_A = "8c21d4e07a9f3b56"        # complete, 5 MiB
LINK = "my-export"                 # onnx/my-export -> a folder outside the cache


def _file(path: Path, size_bytes: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size_bytes)


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    _file(root / "converted" / CONVERTED_A / "model.safetensors", 3 * MIB - 100)
    _file(root / "converted" / CONVERTED_A / MANIFEST, 100)
    _file(root / "converted" / f"{CONVERTED_A}.lock", 0)
    _file(root / "converted" / CONVERTED_B / "model.safetensors", 1 * MIB)
    _file(root / "converted" / CONVERTED_TMP / "part.bin", 2 * MIB)
    _file(root / "onnx" / ONNX_A / "model.onnx", 5 * MIB - 50)
    _file(root / "onnx" / ONNX_A / MANIFEST, 50)
    _file(outside(tmp_path) / "keep.bin", 7 * MIB)
    os.symlink(outside(tmp_path), root / "onnx" / LINK)
    monkeypatch.setenv("QUANTBENCH_CACHE", str(root))
    return root


def outside(tmp_path: Path) -> Path:
    return tmp_path / "elsewhere"


def _rows(out: str) -> dict[str, list[str]]:
    """`kind/key` -> the row's fields after the key, from the listing's entry lines."""
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0] in ("converted", "onnx"):
            rows[f"{parts[0]}/{parts[1]}"] = parts[2:]
    return rows


def _totals(out: str) -> dict[str, tuple[int, float]]:
    totals = {}
    for line in out.split("\n\n", 1)[1].splitlines()[1:]:
        kind, count, mib = line.split()
        totals[kind] = (int(count), float(mib))
    return totals


def test_list_shows_sizes_states_links_and_totals(cache, capsys):
    assert cachecmd.main([]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"cache: {cache} ($QUANTBENCH_CACHE)"
    rows = _rows(out)
    assert rows[f"converted/{CONVERTED_A}"][0] == "3.00" and rows[f"converted/{CONVERTED_A}"][-1] == "complete"
    assert rows[f"converted/{CONVERTED_B}"][0] == "1.00" and rows[f"converted/{CONVERTED_B}"][-1] == "incomplete"
    assert rows[f"converted/{CONVERTED_TMP}"][0] == "2.00" and "temp" in rows[f"converted/{CONVERTED_TMP}"]
    assert rows[f"converted/{CONVERTED_A}.lock"][-1] == "lock"
    assert rows[f"onnx/{ONNX_A}"][0] == "5.00" and rows[f"onnx/{ONNX_A}"][-1] == "complete"
    # The link is shown as a link, and what it points to is neither entered nor counted.
    assert rows[f"onnx/{LINK}"][0] == "0.00" and rows[f"onnx/{LINK}"][-3:-1] == ["link", "->"]
    assert f"link -> {outside(cache.parent)}" in out
    assert _totals(out) == {"converted": (4, 6.0), "onnx": (2, 5.0), "all": (6, 11.0)}
    # Sorted by kind, then size, largest first.
    keys = list(rows)
    assert keys[:4] == [f"converted/{CONVERTED_A}", f"converted/{CONVERTED_TMP}", f"converted/{CONVERTED_B}",
                        f"converted/{CONVERTED_A}.lock"]
    assert cachecmd.main(["list"]) == 0 and capsys.readouterr().out == out


def test_scan_entries_are_typed_with_their_sizes(cache):
    entries = {e.name: e for e in cachecmd.scan(cache)}
    assert entries[f"converted/{CONVERTED_A}"].size_bytes == 3 * MIB
    assert entries[f"converted/{CONVERTED_A}"].size_mib == 3.0
    assert entries[f"onnx/{LINK}"].state == "link" and entries[f"onnx/{LINK}"].link_target == str(outside(cache.parent))


def test_clear_a_kind_removes_exactly_that_kind(cache, capsys):
    assert cachecmd.main(["clear", "converted"]) == 0
    out = capsys.readouterr().out
    assert f"removed converted/{CONVERTED_A}  3.00 MiB" in out and f"removed converted/{CONVERTED_TMP}  2.00 MiB" in out
    assert "freed 6.00 MiB in 4 entries" in out
    assert not (cache / "converted").exists()
    assert (cache / "onnx" / ONNX_A / "model.onnx").is_file() and (cache / "onnx" / LINK).is_symlink()


def test_clear_a_key_removes_that_entry_and_its_lock(cache, capsys):
    assert cachecmd.main(["clear", CONVERTED_A]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == [f"removed converted/{CONVERTED_A}  3.00 MiB",
                                    f"removed converted/{CONVERTED_A}.lock  0.00 MiB"]
    left = sorted(p.name for p in (cache / "converted").iterdir())
    assert left == [CONVERTED_B, CONVERTED_TMP]
    assert (cache / "onnx" / ONNX_A).is_dir()
    # kind/key names one entry too.
    assert cachecmd.main(["clear", f"onnx/{ONNX_A}"]) == 0
    assert not (cache / "onnx" / ONNX_A).exists() and (cache / "onnx" / LINK).is_symlink()


def test_clear_all_keeps_the_link_and_what_it_points_to(cache, capsys):
    assert cachecmd.main(["clear", "--all"]) == 1
    captured = capsys.readouterr()
    refused = [line for line in captured.err.splitlines() if line]
    assert len(refused) == 1 and refused[0].startswith(f"left onnx/{LINK}: ") and "symbolic link" in refused[0]
    assert "freed 11.00 MiB in 5 entries" in captured.out
    assert [p.name for p in cache.rglob("*")] == ["onnx", LINK]
    assert (outside(cache.parent) / "keep.bin").stat().st_size == 7 * MIB


def test_an_unknown_name_is_one_line_naming_the_kinds_and_removes_nothing(cache, capsys):
    before = sorted(cache.rglob("*"))
    assert cachecmd.main(["clear", CONVERTED_A, "convertd"]) == sweep.EXIT_USAGE == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'convertd'" in err and "kinds here: converted, onnx" in err
    assert sorted(cache.rglob("*")) == before


def test_usage_errors_name_the_valid_choices(cache, capsys):
    assert cachecmd.main(["purge"]) == 2
    assert capsys.readouterr().err.strip() == \
        "quantbench cache: unknown subcommand 'purge'; valid: list, clear, path (see --help)"
    assert cachecmd.main(["clear"]) == 2 and "--all" in capsys.readouterr().err
    assert cachecmd.main(["clear", "--everything"]) == 2 and "valid: --all" in capsys.readouterr().err
    assert cachecmd.main(["path", "x"]) == 2
    capsys.readouterr()
    assert cachecmd.main(["--help"]) == 0 and capsys.readouterr().out.startswith("usage: quantbench cache")
    assert (cachecmd.EXIT_OK, cachecmd.EXIT_NOT_OK, cachecmd.EXIT_USAGE) == \
        (sweep.EXIT_OK, sweep.EXIT_NOT_OK, sweep.EXIT_USAGE)


def test_path_prints_the_folder_only(cache, capsys):
    assert cachecmd.main(["path"]) == 0
    assert capsys.readouterr().out == f"{cache}\n"


def test_an_entry_being_built_is_left_alone(cache, capsys):
    with open(cache / "converted" / f"{CONVERTED_A}.lock", "r+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what builder_lock holds during a build
        assert cachecmd.main(["clear", CONVERTED_A]) == 1
    assert "being built by another process" in capsys.readouterr().err
    assert (cache / "converted" / CONVERTED_A / "model.safetensors").is_file()


def test_deletions_are_checked_by_name_not_by_link_target(tmp_path):
    root = tmp_path / "cache"
    assert cachecmd.lexically_inside(root / "onnx" / "x", root)
    assert not cachecmd.lexically_inside(root / "onnx" / ".." / ".." / "elsewhere", root)
    assert not cachecmd.lexically_inside(root, root)
    assert not cachecmd.lexically_inside(tmp_path / "cache-other" / "x", root)


def test_python_m_runners_bench_cache_is_wired(cache):
    env = dict(os.environ, QUANTBENCH_CACHE=str(cache))
    proc = subprocess.run([sys.executable, "-m", "runners.bench", "cache"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"cache: {cache} ") and f"converted  {CONVERTED_A} " in proc.stdout
    path = subprocess.run([sys.executable, "-m", "runners.bench", "cache", "path"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert path.stdout == f"{cache}\n"
