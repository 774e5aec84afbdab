"""Offline tests for scripts/wheelhouse.py: sizes, tags, splitting, packing and the generated
install.sh, on small fake wheels. No pip download, no network."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("wheelhouse", ROOT / "scripts" / "wheelhouse.py")
wh = importlib.util.module_from_spec(_spec)
sys.modules["wheelhouse"] = wh  # dataclasses look their module up by name
_spec.loader.exec_module(wh)

needs_bash = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None,
                                reason="install.sh needs bash and sha256sum")
HOST = wh.Target(python="3.12", glibc_max=39, arch="x86_64")
CHUNK = 16384  # must hold install.sh (~7 KiB) and the other meta files in chunk 01


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_file(path: Path, size: int, seed: int = 0) -> Path:
    # deterministic, incompressible-looking bytes so that a misplaced byte range changes the hash
    data = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(size // 32 + 1))
    path.write_bytes(data[:size])
    return path


# ---------------------------------------------------------------- argument parsing


@pytest.mark.parametrize("text, expected", [
    ("60M", 60 * 2**20), ("60", 60 * 2**20), ("60MiB", 60 * 2**20), ("60MB", 60_000_000),
    ("500K", 500 * 1024), ("1G", 2**30), ("4096B", 4096), ("1.5M", 3 * 2**19),
])
def test_parse_size(text, expected):
    assert wh.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "60X", "M", "-5M", "0B"])
def test_parse_size_rejects(text):
    with pytest.raises(wh.UsageError):
        wh.parse_size(text)


def test_parse_platform_and_errors():
    assert wh.parse_platform("manylinux_2_39_x86_64") == (39, "x86_64")
    assert wh.parse_platform("manylinux2014_aarch64") == (17, "aarch64")
    with pytest.raises(wh.UsageError, match="manylinux_2_NN_x86_64"):
        wh.parse_platform("win_amd64")


def test_resolve_sets_aliases_and_valid_choices():
    assert wh.resolve_sets("vllm,bnb,ort-gpu,core,vllm") == ["vllm_min", "bnb", "ort_gpu", "hydra"]
    with pytest.raises(wh.UsageError) as e:
        wh.resolve_sets("vllm,nope")
    assert "'nope'" in str(e.value) and "vllm_min" in str(e.value) and "ort_gpu" in str(e.value)


def test_read_requirements_optional_and_unpinned(tmp_path):
    good = tmp_path / "x.txt"
    good.write_text("# header\nfoo==1.0\nBar_baz==2.0.post1  # optional\n\n")
    assert wh.read_requirements(good) == [wh.Req("foo", "1.0"), wh.Req("Bar_baz", "2.0.post1", True)]
    bad = tmp_path / "y.txt"
    bad.write_text("foo==1.0\nbar>=2\n")
    with pytest.raises(wh.UsageError, match=r"y\.txt:2"):
        wh.read_requirements(bad)


def test_bundled_wheelsets_are_pinned_and_keep_sdist_knowledge():
    sets = wh.available_sets()
    assert {"vllm_min", "bnb", "ort_gpu", "hydra", "quantizers"} <= set(sets)
    reqs = {s: wh.read_requirements(wh.WHEELSETS / f"{s}.txt") for s in sets}
    # without antlr4's locally built wheel, a binary-only resolve falls back to hydra-core 0.11
    assert wh.Req("antlr4-python3-runtime", "4.9.3") in reqs["hydra"]
    assert any(r.name == "vllm" and r.version == "0.26.0" for r in reqs["vllm_min"])
    assert all(r.optional for r in reqs["quantizers"] if r.name in ("gptqmodel", "pypcre"))


def test_default_targets_keep_vllm_and_quantizers_apart():
    t = wh.default_targets(["vllm_min", "bnb", "ort_gpu", "hydra", "quantizers", "mine"])
    assert t["vllm"] == ("vllm_min", "bnb", "hydra")
    assert t["quant"] == ("quantizers", "bnb", "hydra")
    assert t["ort"] == ("ort_gpu",) and t["mine"] == ("mine",)
    assert wh.default_targets(["bnb", "hydra"]) == {"core": ("bnb", "hydra")}


def test_llmcompressor_set_gets_its_own_target_beside_vllm():
    # ct-vllm's set: llm-compressor's compressed-tensors 0.19 must not land in vLLM's folder (0.17).
    sets = wh.resolve_sets("vllm,bnb,hydra,serve,realdata,llmc")
    assert sets[-1] == "llmcompressor" and wh.resolve_sets("llm-compressor") == ["llmcompressor"]
    t = wh.default_targets(sets)
    assert t == {"vllm": ("vllm_min", "bnb", "hydra", "serve"), "llmc": ("llmcompressor", "bnb", "hydra"),
                 "realdata": ("realdata",)}
    reqs = {s: wh.read_requirements(wh.WHEELSETS / f"{s}.txt") for s in sets}
    wh.check_target_conflicts(t, reqs)
    ct = {s: r.version for s in sets for r in reqs[s] if wh.norm_name(r.name) == "compressed_tensors"}
    assert ct == {"vllm_min": "0.17.0", "llmcompressor": "0.19.0"}
    with pytest.raises(wh.UsageError, match="0.17.0.*0.19.0"):
        wh.check_target_conflicts({"x": ("vllm_min", "llmcompressor")}, reqs)
    # quantizers.txt without GPTQModel: nothing optional, nothing built from source
    quant = {wh.norm_name(r.name): r for r in reqs["llmcompressor"]}
    assert quant["llmcompressor"].version == "0.14.0.1" and not any(r.optional for r in quant.values())
    full = {wh.norm_name(r.name): r.version for r in wh.read_requirements(wh.WHEELSETS / "quantizers.txt")
            if not r.optional}
    assert full == {k: r.version for k, r in quant.items()}


def test_target_conflict_is_refused():
    reqs = {"a": [wh.Req("compressed-tensors", "0.17.0")], "b": [wh.Req("compressed_tensors", "0.19.0")]}
    wh.check_target_conflicts({"x": ("a",), "y": ("b",)}, reqs)  # separate dirs: fine
    with pytest.raises(wh.UsageError, match="0.17.0.*0.19.0"):
        wh.check_target_conflicts({"x": ("a", "b")}, reqs)
    with pytest.raises(wh.UsageError, match="reserved"):
        wh.parse_target_arg("all=a", ["a"])
    with pytest.raises(wh.UsageError, match="staged sets: a"):
        wh.parse_target_arg("x=a+zz", ["a"])


# ---------------------------------------------------------------- tags and pins


@pytest.mark.parametrize("name, ok", [
    ("vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl", True),
    ("x-1-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", True),
    ("x-1-py3-none-any.whl", True),
    ("multiprocess-0.70.19-py312-none-any.whl", True),
    ("pypcre-0.6.4-cp312-cp312-linux_x86_64.whl", True),
    ("x-1-cp311-cp311-manylinux_2_17_x86_64.whl", False),    # other CPython ABI
    ("x-1-cp313-abi3-manylinux_2_17_x86_64.whl", False),     # needs a newer Python
    ("x-1-py313-none-any.whl", False),
    ("x-1-cp312-cp312-manylinux_2_40_x86_64.whl", False),    # glibc newer than the host
    ("x-1-cp312-cp312-manylinux_2_28_aarch64.whl", False),
    ("x-1-cp312-cp312-macosx_11_0_arm64.whl", False),
    ("x-1.tar.gz", False),
])
def test_wheel_tag_ok(name, ok):
    assert wh.wheel_tag_ok(name, HOST) is ok


def test_pip_platforms_cover_every_glibc_down_to_2_17():
    plats = wh.pip_platforms(HOST)
    assert plats[0] == "manylinux_2_39_x86_64" and "manylinux_2_17_x86_64" in plats
    assert "manylinux2014_x86_64" in plats and "manylinux_2_40_x86_64" not in plats


@pytest.mark.parametrize("spec, have, ok", [
    ("==2.11.0", "2.11.0+cu130", True), ("==2.11.0", "2.10.0", False), ("==2.11.*", "2.11.3", True),
    ("<3,>=2.4", "2.11.0", True), (">=2.12", "2.11.0", False), ("~=2.9", "2.11.0", True),
    ("!=2.11.0", "2.11.0", False), ("", "2.11.0", True),
])
def test_spec_allows(spec, have, ok):
    assert wh.spec_allows(spec, have) is ok


def fake_wheel_with_requires(path: Path, requires: list[str]) -> Path:
    name = path.name.split("-")[0]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}-1.0.dist-info/METADATA",
                   "Metadata-Version: 2.1\nName: x\n" + "".join(f"Requires-Dist: {r}\n" for r in requires))
    return path


def test_preinstalled_conflicts(tmp_path):
    w = fake_wheel_with_requires(tmp_path / "eng-1.0-py3-none-any.whl", [
        "torch==2.11.0", "torch>=9; extra == 'dev'", "torch>=3 ; sys_platform == 'darwin'", "numpy"])
    errors, warnings = wh.preinstalled_conflicts([w], {"torch": "2.10.0"})
    assert len(errors) == 1 and "torch==2.11.0" in errors[0] and "2.10.0" in errors[0]
    assert len(warnings) == 1 and "darwin" in warnings[0]   # marker not evaluated: warn only
    assert wh.preinstalled_conflicts([w], {"torch": "2.11.0+cu130"})[0] == []


# ---------------------------------------------------------------- split / join / pack


def test_split_and_join_round_trip(tmp_path):
    src = fake_file(tmp_path / "big-1.0-py3-none-any.whl", 10_000)
    parts = wh.split_file(src, 3000, tmp_path / "parts")
    assert [p.name[-7:] for p in parts] == [".part00", ".part01", ".part02", ".part03"]
    assert [p.stat().st_size for p in parts] == [3000, 3000, 3000, 1000]
    out = wh.join_parts(list(reversed(parts)), tmp_path / "joined.whl", sha(src))  # order from names
    assert out.read_bytes() == src.read_bytes()


def test_join_refuses_corrupt_part(tmp_path):
    src = fake_file(tmp_path / "big-1.0-py3-none-any.whl", 5000)
    parts = wh.split_file(src, 2048, tmp_path / "parts")
    parts[1].write_bytes(b"\0" + parts[1].read_bytes()[1:])
    with pytest.raises(ValueError, match="sha256"):
        wh.join_parts(parts, tmp_path / "joined.whl", sha(src))
    assert not (tmp_path / "joined.whl").exists() and not (tmp_path / "joined.whl.tmp").exists()


def test_pack_first_fit_respects_cap_and_reserve(tmp_path):
    sizes = [900, 700, 600, 500, 400, 300, 100, 100]
    items = [(s, tmp_path / f"f{i}") for i, s in enumerate(sizes)]
    bins = wh.pack(items, 1000, reserved=250)
    by_path = dict((p, s) for s, p in items)
    assert sorted(p for b in bins for p in b) == sorted(p for _, p in items)
    assert sum(by_path[p] for p in bins[0]) + 250 <= 1000
    assert all(sum(by_path[p] for p in b) <= 1000 for b in bins)
    assert len(bins) == 4   # 3900 bytes + 250 reserved cannot fit in fewer than 4 x 1000
    assert wh.pack(list(reversed(items)), 1000, 250) == bins   # same pool, same chunks


def test_pack_errors(tmp_path):
    with pytest.raises(ValueError, match="split it first"):
        wh.pack([(2000, tmp_path / "x")], 1000, 0)
    with pytest.raises(wh.UsageError, match="metadata alone"):
        wh.pack([], 100, 200)
    assert len(wh.pack([(5, tmp_path / "a"), (10**9, tmp_path / "b")], None, 10)) == 1


# ---------------------------------------------------------------- full chunk set + install.sh


@pytest.fixture
def chunk_set(tmp_path):
    """Two sets in two targets; one wheel spans several chunks."""
    pool = tmp_path / "pool"
    pool.mkdir()
    big = fake_file(pool / "big-1.0-py3-none-any.whl", 3 * CHUNK + 123, seed=1)
    small = fake_file(pool / "small-2.0-py3-none-any.whl", 700, seed=2)
    other = fake_file(pool / "other-3.0-py3-none-any.whl", 1500, seed=3)
    staged = [wh.Staged("s1", wh.Req("big", "1.0"), big), wh.Staged("s1", wh.Req("small", "2.0"), small),
              wh.Staged("s1", wh.Req("gone", "9.9", optional=True), None),
              wh.Staged("s2", wh.Req("other", "3.0"), other)]
    out = tmp_path / "wh"
    dirs = wh.build_chunks(out, staged, {"main": ("s1",), "extra": ("s2",)}, "3.12", CHUNK)
    return out, dirs, {"big": big, "small": small, "other": other}


def contents(out: Path) -> dict[str, str]:
    lines = (out / "meta" / "CONTENTS.txt").read_text().split("\n")
    return {f: c for c, f in (line.split() for line in lines if line)}


def test_build_chunks_layout(chunk_set):
    out, dirs, wheels = chunk_set
    assert [d.name for d in dirs] == [f"{i:02d}" for i in range(1, len(dirs) + 1)]
    for d in dirs:
        assert sum(p.stat().st_size for p in d.iterdir()) <= CHUNK, d.name
    first = {p.name for p in dirs[0].iterdir()}
    assert {"install.sh", "SHA256SUMS", "PARTS.sha256", "MANIFEST.tsv", "CONTENTS.txt"} <= first
    where = contents(out)
    on_disk = {p.name: d.name for d in dirs for p in d.iterdir()}
    assert where == on_disk   # CONTENTS.txt tells the truth about every file
    big = wheels["big"].name
    assert big not in on_disk and sum(1 for f in on_disk if f.startswith(big + ".part")) == 4
    assert (out / "meta" / "SHA256SUMS").read_text().count(sha(wheels["big"])) == 1
    manifest = (out / "meta" / "MANIFEST.tsv").read_text()
    assert "s1\tgone==9.9\tMISSING\topt\n" in manifest


def test_parts_checksums_match_files(chunk_set):
    out, dirs, _ = chunk_set
    where = contents(out)
    lines = (out / "meta" / "PARTS.sha256").read_text().split("\n")
    sums = dict(reversed(line.split()) for line in lines if line)
    assert len(sums) == 4
    for name, digest in sums.items():
        assert sha(out / "chunks" / where[name] / name) == digest


def test_install_sh_is_valid_bash(chunk_set):
    out, dirs, _ = chunk_set
    script = dirs[0] / "install.sh"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert '[main]="s1"' in text and '[extra]="s2"' in text and 'PY_WANT="3.12"' in text
    assert "@@" not in text
    if shutil.which("bash"):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def fake_python(tmp_path: Path, version: str = "3.12") -> tuple[Path, Path]:
    """Stands in for the host's python: answers the version probe, records every pip call."""
    log = tmp_path / "pip.log"
    stub = tmp_path / "python-stub"
    stub.write_text(f"""#!/bin/sh
if [ "$1" = "-c" ]; then echo {version}; exit 0; fi
printf '%s\\n' "CALL" "$@" >> "{log}"
""")
    stub.chmod(0o755)
    return stub, log


def run_install(base: Path, *targets: str, python: Path, env_extra: dict | None = None):
    env = dict(os.environ, PYTHON=str(python), SITE_PREFIX=str(base.parent / "site"), **(env_extra or {}))
    return subprocess.run(["bash", str(base / "01" / "install.sh"), str(base), *targets],
                          capture_output=True, text=True, env=env, timeout=60)


def transfer(out: Path, dest: Path) -> Path:
    """What reaches the host: the chunk folders only (no pool, parts or meta)."""
    shutil.copytree(out / "chunks", dest)
    return dest


@needs_bash
def test_install_sh_rejoins_verifies_and_installs(chunk_set, tmp_path):
    out, _, wheels = chunk_set
    base = transfer(out, tmp_path / "host" / "BASE")
    py, log = fake_python(tmp_path)
    r = run_install(base, python=py)
    assert r.returncode == 0, r.stderr
    rejoined = base / "_wheels" / wheels["big"].name
    assert rejoined.read_bytes() == wheels["big"].read_bytes()
    calls = [c.strip().split("\n") for c in log.read_text().split("CALL\n") if c.strip()]
    assert len(calls) == 2
    main = calls[0]
    assert main[:8] == ["-m", "pip", "install", "--disable-pip-version-check", "--no-index", "--no-deps",
                        "--upgrade", "--target"]
    assert main[8] == str(tmp_path / "host" / "site_main")
    assert sorted(Path(p).name for p in main[9:]) == sorted([wheels["big"].name, wheels["small"].name])
    assert str(rejoined) in main
    assert [Path(p).name for p in calls[1][9:]] == [wheels["other"].name]
    assert "optional gone==9.9 unavailable" in r.stderr
    assert f"export PYTHONPATH={tmp_path / 'host' / 'site_main'}" in r.stderr


@needs_bash
def test_install_sh_names_missing_chunk(chunk_set, tmp_path):
    out, _, wheels = chunk_set
    base = transfer(out, tmp_path / "BASE")
    lost = contents(out)[wheels["big"].name + ".part01"]
    shutil.rmtree(base / lost)
    py, log = fake_python(tmp_path)
    r = run_install(base, python=py)
    assert r.returncode == 1
    assert f"send these chunk folders again: {lost}" in r.stderr
    assert f"missing from chunk {lost}" in r.stderr and "big==1.0" in r.stderr
    assert not log.exists()   # nothing installed from an incomplete set
    # a target that does not need the lost chunk still installs
    r = run_install(base, "extra", python=py)
    assert r.returncode == 0, r.stderr
    assert wheels["other"].name in log.read_text() and wheels["big"].name not in log.read_text()


@needs_bash
def test_install_sh_names_corrupt_chunk(chunk_set, tmp_path):
    out, _, wheels = chunk_set
    base = transfer(out, tmp_path / "BASE")
    chunk = contents(out)[wheels["small"].name]
    victim = base / chunk / wheels["small"].name
    victim.write_bytes(victim.read_bytes()[:-1] + b"!")
    py, _ = fake_python(tmp_path)
    r = run_install(base, "main", python=py, env_extra={"VERIFY_ONLY": "1"})
    assert r.returncode == 1
    assert f"checksum mismatch in chunk {chunk}" in r.stderr
    assert f"send these chunk folders again: {chunk}" in r.stderr


@needs_bash
def test_install_sh_verify_only_installs_nothing(chunk_set, tmp_path):
    out, _, _ = chunk_set
    base = transfer(out, tmp_path / "BASE")
    py, log = fake_python(tmp_path)
    r = run_install(base, python=py, env_extra={"VERIFY_ONLY": "1"})
    assert r.returncode == 0, r.stderr
    assert "nothing installed" in r.stderr and not log.exists()


@needs_bash
def test_install_sh_refuses_wrong_python_and_unknown_target(chunk_set, tmp_path):
    out, _, _ = chunk_set
    base = transfer(out, tmp_path / "BASE")
    py311, log = fake_python(tmp_path, version="3.11")
    r = run_install(base, python=py311)
    assert r.returncode == 1 and "is Python 3.11, but these wheels are for 3.12" in r.stderr
    py, _ = fake_python(tmp_path)
    r = run_install(base, "vllm", python=py)
    assert r.returncode == 1 and "unknown target 'vllm' (valid: main extra all)" in r.stderr
    assert not log.exists()
