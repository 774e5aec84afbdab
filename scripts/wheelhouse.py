#!/usr/bin/env python3
"""Build a wheel set for an air-gapped GPU host and pack it into transfer-sized chunks.

The host has no network but already holds torch (and friends), so every extra that quantbench needs
(vLLM, bitsandbytes, onnxruntime-gpu, hydra) must travel as wheels built for *its* Python and
platform, not this machine's. Each wheel set is a pinned ``name==version`` list (scripts/wheelsets/,
or your own via --requirements) resolved against the host's preinstalled packages; wheels are fetched
with ``pip download --no-deps`` for the host's tags, so nothing on the host gets replaced.

Output (OUT, default ./.wheelhouse):
  pool/        every wheel (kept between runs: a rerun downloads only what is missing)
  parts/       wheels larger than the chunk size, cut into byte ranges <wheel>.partNN
  meta/        install.sh, SHA256SUMS, PARTS.sha256, MANIFEST.tsv, CONTENTS.txt
  chunks/NN/   transfer folders, each at most --chunk-size bytes; 01/ holds install.sh and meta

On the host: copy every chunks/NN folder into one folder BASE, then
  PYTHON=python3 bash BASE/01/install.sh BASE [TARGET...]
which rejoins split wheels, checks every sha256 (naming the chunk to send again) and runs
``pip install --no-index --no-deps --upgrade --target ${SITE_PREFIX:-/tmp/site}_TARGET``.

Example:
  python scripts/wheelhouse.py --python 3.12 --platform manylinux_2_39_x86_64 \\
      --torch 2.11.0 --sets vllm,bnb,ort_gpu,hydra --chunk-size 60M --out .wheelhouse
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

WHEELSETS = Path(__file__).resolve().parent / "wheelsets"
DEFAULT_SETS = ("vllm_min", "bnb", "ort_gpu", "hydra")
# quantbench extra names (and short forms) -> wheel-set file stems
SET_ALIASES = {
    "vllm": "vllm_min", "bnb": "bnb", "bitsandbytes": "bnb", "ort-gpu": "ort_gpu", "ort": "ort_gpu",
    "onnxruntime-gpu": "ort_gpu", "core": "hydra", "quant": "quantizers", "quantize": "quantizers",
    "llmc": "llmcompressor", "llm-compressor": "llmcompressor",
}
# Sets installed together share one --target dir, hence one PYTHONPATH. vllm and quantizers (or
# llmcompressor, the same without GPTQModel) pin different compressed-tensors versions, so they get
# separate targets; hydra and bnb go with each, because quantbench's own entry point (hydra) must
# import in the process that runs the backend, and the quality reference's cache key holds the
# bitsandbytes version (one reference for the rows of both targets).
TARGET_RULES = (
    ("vllm", ("vllm_min", "bnb", "hydra", "serve")),
    ("quant", ("quantizers", "bnb", "hydra")),
    ("llmc", ("llmcompressor", "bnb", "hydra")),
    ("ort", ("ort_gpu",)),
)
LEGACY_MANYLINUX = {"manylinux1": 5, "manylinux2010": 12, "manylinux2014": 17}
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PART_SUFFIX = ".part"


class UsageError(Exception):
    """A problem with what the user asked for; printed without a traceback."""


@dataclass(frozen=True)
class Req:
    name: str
    version: str
    optional: bool = False

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class Target:
    python: str  # "3.12"
    glibc_max: int
    arch: str

    @property
    def cp(self) -> str:
        return "cp" + self.python.replace(".", "")

    @property
    def minor(self) -> int:
        return int(self.python.split(".")[1])


# ---------------------------------------------------------------- argument parsing


def parse_size(text: str) -> int:
    """'60M' -> 62914560. K/M/G (with or without 'iB') are binary, KB/MB/GB decimal, 'B' bytes;
    a bare number means MiB, as in shared/gpu-wheels/stage.sh. Binary by default because transfer
    limits are usually stated in MiB, and reading 60M as 60 MB would waste 5% of every chunk."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:([KMG])(i?)(B?)|(B))?\s*", text, re.IGNORECASE)
    if not m:
        raise UsageError(f"bad size {text!r}: use e.g. 60M (=60 MiB), 500K, 1G, 60MB (decimal), 4096B")
    num, unit, binary, b, plain_bytes = m.groups()
    if plain_bytes:
        size = float(num)
    else:
        unit = (unit or "M").upper()
        base = 1000 if (b and not binary) else 1024
        size = float(num) * base ** ("KMG".index(unit) + 1)
    if size < 1:
        raise UsageError(f"size {text!r} is below one byte")
    return int(size)


def parse_python(text: str) -> str:
    if not re.fullmatch(r"3\.\d{1,2}", text):
        raise UsageError(f"bad --python {text!r}: give MAJOR.MINOR of the host's CPython, e.g. 3.12")
    return text


def parse_platform(text: str) -> tuple[int, str]:
    """'manylinux_2_39_x86_64' -> (39, 'x86_64'): the host's glibc caps which wheels run there."""
    m = re.fullmatch(r"manylinux_2_(\d+)_(x86_64|aarch64)", text)
    if m:
        return int(m.group(1)), m.group(2)
    m = re.fullmatch(r"(manylinux1|manylinux2010|manylinux2014)_(x86_64|aarch64)", text)
    if m:
        return LEGACY_MANYLINUX[m.group(1)], m.group(2)
    raise UsageError(
        f"bad --platform {text!r}: valid forms are manylinux_2_NN_x86_64 or manylinux_2_NN_aarch64 "
        "with NN the host's glibc minor version (`ldd --version`), e.g. manylinux_2_39_x86_64; "
        "or manylinux2014_x86_64")


def available_sets(folder: Path = WHEELSETS) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.txt"))


def resolve_sets(text: str, folder: Path = WHEELSETS) -> list[str]:
    valid = available_sets(folder)
    out: list[str] = []
    for raw in (t.strip() for t in text.split(",")):
        if not raw:
            continue
        name = raw if raw in valid else SET_ALIASES.get(raw.lower())
        if name not in valid:
            aliases = ", ".join(f"{k}={v}" for k, v in sorted(SET_ALIASES.items()))
            raise UsageError(f"unknown set {raw!r}; valid: {', '.join(valid)} (aliases: {aliases})")
        if name not in out:
            out.append(name)
    return out


def read_requirements(path: Path) -> list[Req]:
    """Pinned lists only: an unpinned name would make the set depend on the day it was built."""
    reqs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        body, _, comment = line.partition("#")
        body = body.strip()
        if not body:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9._+!-]+)", body)
        if not m:
            raise UsageError(f"{path}:{n}: {body!r} is not name==version (one pinned package per line)")
        reqs.append(Req(m.group(1), m.group(2), optional="optional" in comment))
    return reqs


def set_name_for(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)
    return name or "custom"


def parse_target_arg(text: str, sets: list[str]) -> tuple[str, tuple[str, ...]]:
    """'--target NAME=set1+set2' lets users choose which sets share one install dir."""
    name, eq, rest = text.partition("=")
    members = tuple(s for s in rest.split("+") if s)
    if not eq or not SAFE_NAME.match(name) or not members:
        raise UsageError(f"bad --target {text!r}: use NAME=SET+SET, e.g. serve=vllm_min+bnb+hydra")
    if name == "all":
        raise UsageError("--target all: 'all' is reserved (install.sh takes it to mean every target)")
    unknown = [s for s in members if s not in sets]
    if unknown:
        raise UsageError(f"--target {text!r}: {', '.join(unknown)} not staged; staged sets: {', '.join(sets)}")
    return name, members


def default_targets(sets: list[str]) -> dict[str, tuple[str, ...]]:
    targets: dict[str, tuple[str, ...]] = {}
    anchored = set()
    for name, members in TARGET_RULES:
        if members[0] in sets:
            targets[name] = tuple(s for s in members if s in sets)
            anchored.update(targets[name])
    # a set no rule anchors (custom --requirements, or bnb/hydra without vllm/quantizers) still
    # needs somewhere to go: 'core' for the built-in ones, its own name for a custom file
    builtin = {s for _, m in TARGET_RULES for s in m}
    loose = [s for s in sets if s not in anchored]
    core = tuple(s for s in loose if s in builtin)
    if core:
        targets["core"] = core
    for s in loose:
        if s not in builtin:
            targets[s] = (s,)
    return targets


def check_target_conflicts(targets: dict[str, tuple[str, ...]], reqs: dict[str, list[Req]]) -> None:
    """Two versions of one package in one --target dir: pip refuses, or the last one wins silently."""
    for tname, members in targets.items():
        seen: dict[str, tuple[str, str]] = {}
        for s in members:
            for r in reqs[s]:
                key = norm_name(r.name)
                if key in seen and seen[key][0] != r.version:
                    raise UsageError(
                        f"target {tname!r} would install {r.name} {seen[key][0]} (set {seen[key][1]}) "
                        f"and {r.version} (set {s}) into one folder; put these sets in different targets")
                seen.setdefault(key, (r.version, s))


# ---------------------------------------------------------------- wheel tags


def norm_name(name: str) -> str:
    """Names as they appear in wheel file names (PEP 503 + underscores)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_name_version(filename: str) -> tuple[str, str]:
    parts = filename[:-4].split("-")
    return norm_name(parts[0]), parts[1]


def pip_platforms(target: Target) -> list[str]:
    """pip does not widen an explicit --platform to older glibc tags, so list every one."""
    plats = [f"manylinux_2_{v}_{target.arch}" for v in range(target.glibc_max, 16, -1)]
    legacy = sorted(LEGACY_MANYLINUX.items(), key=lambda kv: -kv[1])
    if target.arch == "x86_64":
        plats += [f"{tag}_{target.arch}" for tag, v in legacy if v <= target.glibc_max]
    elif target.glibc_max >= 17:
        plats.append(f"manylinux2014_{target.arch}")
    return plats


def _py_tag_ok(tag: str, abis: list[str], target: Target) -> bool:
    if tag == "py3" or tag == target.cp:
        return True
    m = re.fullmatch(r"(py|cp)3(\d+)", tag)
    if not m or int(m.group(2)) > target.minor:
        return False
    # an older cpXY wheel only loads on a newer CPython through the stable ABI
    return m.group(1) == "py" or "abi3" in abis


def _plat_tag_ok(tag: str, target: Target) -> bool:
    if tag == "any":
        return True
    # locally built C extensions are tagged linux_ARCH; they run where the build glibc is not newer
    if tag == f"linux_{target.arch}":
        return True
    m = re.fullmatch(rf"manylinux_2_(\d+)_{target.arch}", tag)
    if m:
        return int(m.group(1)) <= target.glibc_max
    m = re.fullmatch(rf"(manylinux1|manylinux2010|manylinux2014)_{target.arch}", tag)
    return bool(m) and LEGACY_MANYLINUX[m.group(1)] <= target.glibc_max


def wheel_tag_ok(filename: str, target: Target) -> bool:
    """Would pip on the host accept this wheel? Checked again on every pool file, because a wheel
    left from a run for another host must not slip into this set."""
    if not filename.endswith(".whl") or filename.count("-") < 4:
        return False
    pys, abis, plats = (p.split(".") for p in filename[:-4].split("-")[-3:])
    if not any(a in ("none", "abi3", target.cp) for a in abis):
        return False
    return any(_py_tag_ok(p, abis, target) for p in pys) and any(_plat_tag_ok(p, target) for p in plats)


# ---------------------------------------------------------------- fetching


def find_in_pool(pool: Path, req: Req) -> Path | None:
    want = (norm_name(req.name), req.version)
    for p in sorted(pool.glob("*.whl")):
        if wheel_name_version(p.name) == want:
            return p
    return None


def run_quiet(cmd: list[str], log: Path) -> bool:
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT).returncode
    return rc == 0


def pip_download(req: Req, pool: Path, target: Target, work: Path, pip_python: str) -> bool:
    tmp = Path(tempfile.mkdtemp(prefix="dl.", dir=work))
    cmd = [pip_python, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
           "--only-binary=:all:", "--python-version", target.python, "--implementation", "cp",
           "--abi", target.cp, "-d", str(tmp), req.spec]
    for plat in pip_platforms(target):
        cmd += ["--platform", plat]
    ok = run_quiet(cmd, work / f"download_{norm_name(req.name)}.log")
    return _adopt_wheel(tmp, pool, target) if ok else _drop(tmp)


def find_build_python(version: str, explicit: str | None = None) -> str | None:
    """A C-extension sdist must be built by the host's Python minor version. Candidates are run,
    not just found: a pyenv shim exists on PATH even when that version is not active."""
    home = Path.home()
    candidates = [explicit, f"python{version}", sys.executable]
    candidates += sorted(str(p) for p in (home / ".pyenv" / "versions").glob(f"{version}*/bin/python{version}"))
    candidates += [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    probe = "import sys; print('%d.%d' % sys.version_info[:2])"
    for c in filter(None, candidates):
        try:
            got = subprocess.run([c, "-c", probe], capture_output=True, text=True, timeout=30).stdout.strip()
            has_pip = subprocess.run([c, "-m", "pip", "--version"], capture_output=True, timeout=60).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            continue
        if got == version and has_pip:
            return c
    return None


def build_sdist(req: Req, pool: Path, target: Target, work: Path, build_python: str) -> bool:
    # --no-cache-dir: pip's wheel cache would hand back a wheel built earlier for another Python
    tmp = Path(tempfile.mkdtemp(prefix="bw.", dir=work))
    cmd = [build_python, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-cache-dir",
           "--no-deps", "--no-binary", req.name, "-w", str(tmp), req.spec]
    env = dict(os.environ, SOURCE_DATE_EPOCH=os.environ.get("SOURCE_DATE_EPOCH", "1700000000"))
    with open(work / f"build_{norm_name(req.name)}.log", "w") as fh:
        ok = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                            env=env).returncode == 0
    return _adopt_wheel(tmp, pool, target) if ok else _drop(tmp)


def _adopt_wheel(tmp: Path, pool: Path, target: Target) -> bool:
    wheels = [w for w in tmp.glob("*.whl") if wheel_tag_ok(w.name, target)]
    for w in wheels:
        shutil.move(str(w), pool / w.name)
    shutil.rmtree(tmp, ignore_errors=True)
    return bool(wheels)


def _drop(tmp: Path) -> bool:
    shutil.rmtree(tmp, ignore_errors=True)
    return False


def fetch(req: Req, pool: Path, target: Target, work: Path, pip_python: str, build_python: str | None) -> Path | None:
    found = find_in_pool(pool, req)
    if found:
        return found
    log(f"fetch {req.spec}")
    if pip_download(req, pool, target, work, pip_python):
        return find_in_pool(pool, req)
    # sdist-only packages (antlr4-python3-runtime, gptqmodel, pypcre...) have no wheel on the index
    py = build_python or pip_python
    log(f"  no {target.cp}/{target.arch} wheel on the index: building {req.spec} from sdist with {py}")
    if build_sdist(req, pool, target, work, py):
        return find_in_pool(pool, req)
    log(f"  failed (logs in {work})")
    return None


# ---------------------------------------------------------------- preinstalled-version check


def _release(version: str) -> tuple[int, ...]:
    """Release numbers only: '2.11.0+cu130' -> (2, 11, 0). Enough to compare against pins."""
    m = re.match(r"\d+(?:\.\d+)*", version.strip())
    return tuple(int(x) for x in m.group().split(".")) if m else ()


def _cmp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = max(len(a), len(b))
    a, b = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    return (a > b) - (a < b)


def spec_allows(spec: str, have: str) -> bool:
    """A small PEP 440 subset (no pre-release ordering): a real resolver is not available offline
    in a stdlib-only tool, and pins on torch use only these forms."""
    h = _release(have)
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        m = re.fullmatch(r"(===|==|!=|~=|>=|<=|>|<)\s*(\S+)", clause)
        if not m:
            continue
        op, v = m.groups()
        if op == "===":
            ok = have == v
        elif v.endswith(".*"):
            want = _release(v[:-2])
            ok = (h[:len(want)] == want) == (op == "==")
        elif op == "~=":
            want = _release(v)
            ok = _cmp(h, want) >= 0 and h[:len(want) - 1] == want[:-1]
        else:
            c = _cmp(h, _release(v))
            ok = {"==": c == 0, "!=": c != 0, ">=": c >= 0, "<=": c <= 0, ">": c > 0, "<": c < 0}[op]
        if not ok:
            return False
    return True


def wheel_requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        meta = next((n for n in z.namelist() if n.endswith(".dist-info/METADATA")), None)
        text = z.read(meta).decode("utf-8", "replace") if meta else ""
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def preinstalled_conflicts(wheels: list[Path], preinstalled: dict[str, str]) -> tuple[list[str], list[str]]:
    """--no-deps installs never ask pip whether the host's torch fits, so ask here. Returns
    (errors, warnings): requirements behind an environment marker only warn, since markers are not
    evaluated."""
    errors, warnings = [], []
    for w in wheels:
        for req in wheel_requirements(w):
            m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*\(?([^;)]*)\)?\s*(?:;(.*))?$", req)
            if not m or norm_name(m.group(1)) not in preinstalled:
                continue
            name, spec, marker = norm_name(m.group(1)), m.group(2).strip(), (m.group(3) or "").strip()
            if "extra" in marker or spec_allows(spec, preinstalled[name]):
                continue
            msg = f"{w.name} requires {m.group(1)}{spec} but the host has {preinstalled[name]}"
            (warnings if marker else errors).append(msg + (f" (if {marker})" if marker else ""))
    return errors, warnings


# ---------------------------------------------------------------- chunking


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def split_file(path: Path, part_size: int, dest: Path) -> list[Path]:
    """Byte ranges <name>.part00, .part01...; zero-padded so that a sorted listing is join order."""
    n = -(-path.stat().st_size // part_size)
    width = max(2, len(str(n - 1)))
    dest.mkdir(parents=True, exist_ok=True)
    parts = []
    with open(path, "rb") as src:
        for i in range(n):
            part = dest / f"{path.name}{PART_SUFFIX}{i:0{width}d}"
            _copy_range(src, part, part_size)
            parts.append(part)
    return parts


def _copy_range(src, out: Path, size: int) -> None:
    with open(out, "wb") as dst:
        left = size
        while left:
            block = src.read(min(left, 1 << 20))
            if not block:
                break
            dst.write(block)
            left -= len(block)


def join_parts(parts: list[Path], out: Path, expected_sha256: str) -> Path:
    """The local twin of install.sh's rejoin, so the round trip can be tested without bash."""
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as dst:
        for p in sorted(parts, key=lambda p: p.name):
            with open(p, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    got = sha256_file(tmp)
    if got != expected_sha256:
        tmp.unlink()
        raise ValueError(f"rejoined {out.name}: sha256 {got} != expected {expected_sha256}")
    tmp.replace(out)
    return out


def pack(items: list[tuple[int, Path]], cap: int | None, reserved: int) -> list[list[Path]]:
    """First-fit decreasing into chunks of at most `cap` bytes; chunk 1 starts with `reserved` bytes
    of metadata. Sorted by (size, name) so that the same pool always gives the same chunks."""
    if cap is not None and reserved > cap:
        raise UsageError(f"the metadata alone ({reserved} bytes) exceeds the chunk size ({cap} bytes)")
    bins: list[list] = [[reserved, []]]
    for size, path in sorted(items, key=lambda it: (-it[0], it[1].name)):
        if cap is not None and size > cap:
            raise ValueError(f"{path.name} ({size} bytes) is larger than a chunk: split it first")
        for b in bins:
            if cap is None or b[0] + size <= cap:
                b[0] += size
                b[1].append(path)
                break
        else:
            bins.append([size, [path]])
    return [paths for _, paths in bins]


def chunk_name(i: int, count: int) -> str:
    return f"{i:0{max(2, len(str(count)))}d}"


def contents_bound(names: list[str], n_items: int) -> int:
    """CONTENTS.txt goes into chunk 01 but is written after packing: reserve its largest size."""
    width = max(2, len(str(n_items + 1)))
    return sum(width + 3 + len(n) for n in names)


# ---------------------------------------------------------------- install.sh


def render_install_sh(targets: dict[str, tuple[str, ...]], python: str) -> str:
    for name, members in targets.items():
        bad = [x for x in (name, *members) if not SAFE_NAME.match(x)]
        if bad:
            raise UsageError(f"target/set names must match {SAFE_NAME.pattern}: {bad}")
    array = " ".join(f'[{t}]="{" ".join(m)}"' for t, m in targets.items())
    doc = "\n".join(f"#   {t:<6} -> ${{SITE_PREFIX}}_{t}: {' + '.join(m)}" for t, m in targets.items())
    return (INSTALL_SH.replace("@@TARGET_ARRAY@@", array)
            .replace("@@TARGET_ORDER@@", " ".join(targets))
            .replace("@@TARGET_DOC@@", doc)
            .replace("@@PYVER@@", python))


INSTALL_SH = r'''#!/usr/bin/env bash
# install.sh - made by quantbench scripts/wheelhouse.py. Rejoins split wheels, checks every sha256 and
# installs the wheel set offline. It sits in chunk folder 01/ with SHA256SUMS, PARTS.sha256,
# MANIFEST.tsv (set, spec, wheel, req|opt) and CONTENTS.txt (which chunk holds which file).
#
# usage:  bash BASE/01/install.sh [BASE] [TARGET...]
#   BASE    folder holding the chunk folders 01/ 02/ ... (default: the parent of this script's folder)
#   TARGET  one of the targets below, or all (default)
# env:
#   PYTHON=python3          the interpreter whose pip installs; must be Python @@PYVER@@
#   SITE_PREFIX=/tmp/site   target T installs into ${SITE_PREFIX}_T
#   WHL=BASE/_wheels        where split wheels are rejoined
#   VERIFY_ONLY=1           rejoin and check only; exit 1 if a wheel a requested target needs is bad
# targets (pip install --no-index --no-deps --upgrade --target DIR):
@@TARGET_DOC@@
# afterwards: export PYTHONPATH=${SITE_PREFIX}_T (export it: vLLM's engine runs in child processes).
# onnxruntime-gpu in a --target dir does not find the CUDA libraries by itself: import torch first.
# Rerunning is safe: it checks again and reinstalls the same files (--upgrade).
set -euo pipefail

declare -A TARGET_SETS=(@@TARGET_ARRAY@@)
TARGET_ORDER="@@TARGET_ORDER@@"
PY_WANT="@@PYVER@@"

say() { printf '[install] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
is_target() { [ -n "$1" ] && { [ "$1" = all ] || [ -n "${TARGET_SETS[$1]:-}" ]; }; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE=$(dirname "$HERE")
if [ $# -gt 0 ] && ! is_target "$1"; then
  [ -d "$1" ] || die "'$1' is neither a folder nor a target (targets: $TARGET_ORDER all)"
  BASE=$(cd "$1" && pwd); shift
fi
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(all)
for t in "${TARGETS[@]}"; do is_target "$t" || die "unknown target '$t' (valid: $TARGET_ORDER all)"; done
if [[ " ${TARGETS[*]} " == *" all "* ]]; then read -r -a TARGETS <<< "$TARGET_ORDER"; fi
PYTHON=${PYTHON:-python3}
SITE_PREFIX=${SITE_PREFIX:-/tmp/site}
WHL=${WHL:-$BASE/_wheels}
META=$HERE
for m in SHA256SUMS PARTS.sha256 MANIFEST.tsv CONTENTS.txt; do
  [ -f "$META/$m" ] || die "$META/$m is missing: send chunk 01 again"
done

# Fail before hashing hundreds of MB: cpXY wheels cannot be installed by another Python.
if [ "${VERIFY_ONLY:-0}" != 1 ]; then
  have=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "cannot run PYTHON=$PYTHON"
  [ "$have" = "$PY_WANT" ] || die "PYTHON=$PYTHON is Python $have, but these wheels are for $PY_WANT"
fi

sha() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else "$PYTHON" -c 'import hashlib, sys
h = hashlib.sha256(); f = open(sys.argv[1], "rb")
for b in iter(lambda: f.read(1 << 20), b""): h.update(b)
print(h.hexdigest())' "$1"; fi
}

declare -A SUM=() CHUNK_OF=() BAD=() PATH_OF=()
while read -r s f; do [ -z "${f:-}" ] || SUM[$f]=$s; done < "$META/SHA256SUMS"
while read -r s f; do [ -z "${f:-}" ] || SUM[$f]=$s; done < "$META/PARTS.sha256"
RESEND=()

# 1. every file CONTENTS.txt lists is in its chunk folder, with the right checksum
while read -r c f; do
  [ -n "${f:-}" ] || continue
  CHUNK_OF[$f]=$c
  [ -n "${SUM[$f]:-}" ] || continue        # the meta files themselves carry no checksum
  p=$BASE/$c/$f
  if [ ! -f "$p" ]; then BAD[$f]="missing from chunk $c"; RESEND+=("$c")
  elif [ "$(sha "$p")" != "${SUM[$f]}" ]; then BAD[$f]="checksum mismatch in chunk $c"; RESEND+=("$c")
  fi
done < "$META/CONTENTS.txt"

# 2. whole wheels are used in place; split ones are rejoined once all their parts check out
mkdir -p "$WHL"
while read -r s f; do
  [ -n "${f:-}" ] || continue
  if [ -n "${CHUNK_OF[$f]:-}" ]; then
    [ -n "${BAD[$f]:-}" ] || PATH_OF[$f]=$BASE/${CHUNK_OF[$f]}/$f
    continue
  fi
  parts=$(awk -v w="$f.part" 'substr($2, 1, length(w)) == w && substr($2, length(w) + 1) ~ /^[0-9]+$/ {print $2}' \
          "$META/PARTS.sha256" | sort)
  [ -n "$parts" ] || { BAD[$f]="neither in CONTENTS.txt nor split: chunk 01 does not match this set"; continue; }
  why=""
  for p in $parts; do
    if [ -z "${CHUNK_OF[$p]:-}" ]; then why="$why $p: not in CONTENTS.txt;"
    elif [ -n "${BAD[$p]:-}" ]; then why="$why $p: ${BAD[$p]};"; fi
  done
  [ -z "$why" ] || { BAD[$f]="part(s) unusable:$why"; continue; }
  : > "$WHL/$f.tmp"
  for p in $parts; do cat "$BASE/${CHUNK_OF[$p]}/$p" >> "$WHL/$f.tmp"; done
  if [ "$(sha "$WHL/$f.tmp")" != "$s" ]; then
    rm -f "$WHL/$f.tmp"; BAD[$f]="rejoined file has the wrong checksum"; continue
  fi
  mv -f "$WHL/$f.tmp" "$WHL/$f"
  PATH_OF[$f]=$WHL/$f
  say "rejoined $f from $(echo $parts | wc -w) parts"
done < "$META/SHA256SUMS"

# 3. FILES/LACKING for one target, from MANIFEST.tsv (set, spec, wheel, req|opt)
collect() {
  local sets=" ${TARGET_SETS[$1]} " set spec f req
  local -A seen=()
  FILES=(); LACKING=()
  while IFS=$'\t' read -r set spec f req; do
    [[ $sets == *" $set "* ]] || continue
    if [ "$f" != MISSING ] && [ -n "${PATH_OF[$f]:-}" ]; then
      [ -n "${seen[$f]:-}" ] || FILES+=("${PATH_OF[$f]}"); seen[$f]=1
    elif [ "$req" = opt ]; then say "target $1: optional $spec unavailable, installing without it"
    else LACKING+=("$spec ($f): ${BAD[$f]:-not staged}"); fi
  done < "$META/MANIFEST.tsv"
}

fail=0
for t in "${TARGETS[@]}"; do
  collect "$t"
  if [ ${#LACKING[@]} -gt 0 ]; then
    fail=1; say "target $t cannot be installed, it lacks:"; printf '    %s\n' "${LACKING[@]}" >&2
  fi
done
if [ ${#RESEND[@]} -gt 0 ]; then
  say "send these chunk folders again: $(printf '%s\n' "${RESEND[@]}" | sort -u | paste -sd' ' -)"
fi
[ $fail = 0 ] || exit 1
if [ "${VERIFY_ONLY:-0}" = 1 ]; then say "VERIFY_ONLY=1: wheels for ${TARGETS[*]} check out; nothing installed"; exit 0; fi

# 4. install
for t in "${TARGETS[@]}"; do
  collect "$t"
  say "target $t -> ${SITE_PREFIX}_$t (${#FILES[@]} wheels)"
  "$PYTHON" -m pip install --disable-pip-version-check --no-index --no-deps --upgrade \
      --target "${SITE_PREFIX}_$t" "${FILES[@]}"
done
for t in "${TARGETS[@]}"; do say "use: export PYTHONPATH=${SITE_PREFIX}_$t"; done
'''


# ---------------------------------------------------------------- writing the set


@dataclass
class Staged:
    set_name: str
    req: Req
    wheel: Path | None  # None: optional and unavailable


def write_meta(meta: Path, staged: list[Staged], wheels: list[Path], parts: dict[str, list[Path]],
               targets: dict[str, tuple[str, ...]], python: str) -> list[Path]:
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "SHA256SUMS").write_text("".join(f"{sha256_file(w)}  {w.name}\n" for w in wheels))
    (meta / "PARTS.sha256").write_text(
        "".join(f"{sha256_file(p)}  {p.name}\n" for name in sorted(parts) for p in parts[name]))
    (meta / "MANIFEST.tsv").write_text("".join(
        f"{s.set_name}\t{s.req.spec}\t{s.wheel.name if s.wheel else 'MISSING'}\t"
        f"{'opt' if s.req.optional else 'req'}\n" for s in staged))
    install = meta / "install.sh"
    install.write_text(render_install_sh(targets, python))
    install.chmod(0o755)
    return [install, meta / "SHA256SUMS", meta / "PARTS.sha256", meta / "MANIFEST.tsv"]


def link_or_copy(src: Path, dst: Path) -> None:
    # hard links: the chunks cost no extra disk space next to the pool
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build_chunks(out: Path, staged: list[Staged], targets: dict[str, tuple[str, ...]], python: str,
                 chunk_size: int | None) -> list[Path]:
    """Everything after the download: split, checksum, install.sh, pack, link into chunks/NN."""
    wheels = sorted({s.wheel for s in staged if s.wheel}, key=lambda p: p.name)
    parts_dir = out / "parts"
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts: dict[str, list[Path]] = {}
    items: list[tuple[int, Path]] = []
    for w in wheels:
        size = w.stat().st_size
        if chunk_size is not None and size > chunk_size:
            parts[w.name] = split_file(w, chunk_size, parts_dir)
            items += [(p.stat().st_size, p) for p in parts[w.name]]
        else:
            items.append((size, w))
    meta = out / "meta"
    meta_files = write_meta(meta, staged, wheels, parts, targets, python)
    contents = meta / "CONTENTS.txt"
    names = [p.name for p in meta_files] + [contents.name] + [p.name for _, p in items]
    reserved = sum(p.stat().st_size for p in meta_files) + contents_bound(names, len(items))
    bins = pack(items, chunk_size, reserved)
    bins[0][:0] = meta_files + [contents]
    lines = [f"{chunk_name(i, len(bins))}  {p.name}\n" for i, b in enumerate(bins, 1) for p in b]
    contents.write_text("".join(lines))
    return _materialize(out / "chunks", bins)


def _materialize(chunks: Path, bins: list[list[Path]]) -> list[Path]:
    # build beside, then swap: an interrupted run must not leave half a chunk set looking complete
    tmp = chunks.with_name(chunks.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dirs = []
    for i, b in enumerate(bins, 1):
        d = tmp / chunk_name(i, len(bins))
        d.mkdir(parents=True)
        for p in b:
            link_or_copy(p, d / p.name)
        dirs.append(chunks / d.name)
    shutil.rmtree(chunks, ignore_errors=True)
    tmp.rename(chunks)
    return dirs


# ---------------------------------------------------------------- CLI


def log(msg: str) -> None:
    print(f"[wheelhouse] {msg}", file=sys.stderr, flush=True)


def keep_out_of_git(out: Path) -> None:
    """Hundreds of MB of wheels must never be committed by accident."""
    try:
        top = Path(subprocess.run(["git", "-C", str(out), "rev-parse", "--show-toplevel"], capture_output=True,
                                  text=True, check=True).stdout.strip())
        rel = out.resolve().relative_to(top.resolve())
    except (OSError, subprocess.CalledProcessError, ValueError):
        return
    if str(rel) == "." or subprocess.run(["git", "-C", str(top), "check-ignore", "-q", f"{rel}/"]).returncode == 0:
        return
    excl = Path(subprocess.run(["git", "-C", str(top), "rev-parse", "--absolute-git-dir"], capture_output=True,
                               text=True, check=True).stdout.strip()) / "info" / "exclude"
    excl.parent.mkdir(parents=True, exist_ok=True)
    with open(excl, "a") as fh:
        fh.write(f"/{rel}/\n")
    log(f"added /{rel}/ to {excl}")


def build_parser() -> argparse.ArgumentParser:
    sets = ", ".join(available_sets())
    p = argparse.ArgumentParser(
        prog="wheelhouse.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build an offline wheel set for an air-gapped GPU host, split into transfer chunks.",
        epilog=__doc__[__doc__.index("Output"):])
    p.add_argument("--python", default="3.12", type=parse_python, help="host CPython MAJOR.MINOR (default 3.12)")
    p.add_argument("--platform", default="manylinux_2_39_x86_64",
                   help="host platform with its glibc: manylinux_2_NN_{x86_64,aarch64} (default manylinux_2_39_x86_64)")
    p.add_argument("--torch", default="2.11.0",
                   help="torch version preinstalled on the host; wheels whose metadata pins another fail "
                        "(default 2.11.0, 'none' to skip)")
    p.add_argument("--preinstalled", action="append", default=[], metavar="NAME==VERSION",
                   help="another package already on the host to check pins against (repeatable)")
    p.add_argument("--sets", default=None,
                   help=f"comma list of wheel sets from scripts/wheelsets: {sets}; aliases "
                        f"vllm, ort-gpu, core=hydra, quant. Default: {','.join(DEFAULT_SETS)} "
                        "(none when --requirements is given)")
    p.add_argument("--requirements", action="append", default=[], type=Path, metavar="FILE",
                   help="extra pinned list (name==version per line, '# optional' to tolerate a miss); "
                        "its set and default target are named after the file stem (repeatable)")
    p.add_argument("--target", action="append", default=[], metavar="NAME=SET+SET",
                   help="install target: sets that share one --target dir (repeatable; replaces the "
                        "defaults vllm=vllm_min+bnb+hydra+serve, quant=quantizers+bnb+hydra, "
                        "llmc=llmcompressor+bnb+hydra, ort=ort_gpu)")
    p.add_argument("--chunk-size", type=parse_size, default=None,
                   help="largest transfer folder, e.g. 60M (=60 MiB). Default: one folder, no splitting")
    p.add_argument("--out", type=Path, default=Path(".wheelhouse"), help="output folder (default .wheelhouse)")
    p.add_argument("--build-python", default=None,
                   help="interpreter for sdist builds (default: auto-detect python<--python> incl. pyenv)")
    p.add_argument("--pip-python", default=sys.executable, help="interpreter whose pip downloads (default: this one)")
    return p


def parse_preinstalled(args) -> dict[str, str]:
    pins = {}
    if args.torch.lower() != "none":
        pins["torch"] = args.torch
    for text in args.preinstalled:
        name, eq, ver = text.partition("==")
        if not eq or not name or not ver:
            raise UsageError(f"bad --preinstalled {text!r}: use NAME==VERSION, e.g. torchvision==0.26.0")
        pins[norm_name(name)] = ver
    return pins


def load_sets(args) -> dict[str, list[Req]]:
    chosen = resolve_sets(args.sets) if args.sets is not None else ([] if args.requirements else list(DEFAULT_SETS))
    reqs = {s: read_requirements(WHEELSETS / f"{s}.txt") for s in chosen}
    for path in args.requirements:
        if not path.is_file():
            raise UsageError(f"--requirements {path}: no such file")
        name = set_name_for(path)
        if name in reqs:
            raise UsageError(f"--requirements {path}: set name {name!r} is taken; rename the file")
        reqs[name] = read_requirements(path)
    if not reqs:
        raise UsageError(f"nothing to stage: pass --sets (valid: {', '.join(available_sets())}) or --requirements")
    return reqs


def stage(reqs: dict[str, list[Req]], out: Path, target: Target, args, preinstalled: dict[str, str]) -> list[Staged]:
    for s, lst in reqs.items():
        hit = [r.spec for r in lst if norm_name(r.name) in preinstalled]
        if hit:
            raise UsageError(f"set {s} lists {', '.join(hit)}, which the host already has: remove it")
    pool, work = out / "pool", out / "build"
    pool.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    build_python = find_build_python(target.python, args.build_python)
    if not build_python:
        log(f"no Python {target.python} with pip here: sdists with C extensions cannot be built")
    staged, done = [], {}
    for s, lst in reqs.items():
        for r in lst:
            if r.spec not in done:
                done[r.spec] = fetch(r, pool, target, work, args.pip_python, build_python)
            staged.append(Staged(s, r, done[r.spec]))
    return staged


def check_staged(staged: list[Staged], target: Target, preinstalled: dict[str, str]) -> None:
    missing = sorted({s.req.spec for s in staged if s.wheel is None and not s.req.optional})
    if missing:
        raise UsageError(f"no wheel could be downloaded or built for: {', '.join(missing)}")
    skipped = sorted({s.req.spec for s in staged if s.wheel is None})
    if skipped:
        log(f"WARNING: optional, left out: {', '.join(skipped)}")
    wheels = sorted({s.wheel for s in staged if s.wheel})
    misfit = [w.name for w in wheels if not wheel_tag_ok(w.name, target)]
    if misfit:
        raise UsageError(f"in the pool but not installable on the host (delete and rerun): {', '.join(misfit)}")
    errors, warnings = preinstalled_conflicts(wheels, preinstalled)
    for w in warnings:
        log(f"WARNING: {w}")
    if errors:
        raise UsageError("the host's preinstalled packages do not fit:\n  " + "\n  ".join(errors))


def report(dirs: list[Path], chunk_size: int | None, targets: dict[str, tuple[str, ...]]) -> None:
    total = 0
    for d in dirs:
        size = sum(p.stat().st_size for p in d.iterdir())
        total += size
        print(f"  {d.name}  {size:>11d} bytes  {size / 2**20:7.2f} MiB  {len(list(d.iterdir())):3d} files")
    limit = f" (limit {chunk_size} bytes)" if chunk_size else ""
    print(f"total: {len(dirs)} chunk(s), {total / 2**20:.1f} MiB in {dirs[0].parent}{limit}")
    print("on the host: copy every chunk folder into one folder BASE, then")
    print(f"  PYTHON=python3 bash BASE/{dirs[0].name}/install.sh BASE [{'|'.join(targets)}|all]")
    for t, members in targets.items():
        print(f"  target {t}: {' + '.join(members)} -> /tmp/site_{t}  (export PYTHONPATH=/tmp/site_{t})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        glibc_max, arch = parse_platform(args.platform)
        target = Target(args.python, glibc_max, arch)
        preinstalled = parse_preinstalled(args)
        reqs = load_sets(args)
        targets = dict(parse_target_arg(t, list(reqs)) for t in args.target) or default_targets(list(reqs))
        check_target_conflicts(targets, reqs)
        unused = [s for s in reqs if not any(s in m for m in targets.values())]
        if unused:
            log(f"WARNING: staged but in no --target, so install.sh will not install: {', '.join(unused)}")
        out = args.out.resolve()
        out.mkdir(parents=True, exist_ok=True)
        keep_out_of_git(out)
        staged = stage(reqs, out, target, args, preinstalled)
        check_staged(staged, target, preinstalled)
        dirs = build_chunks(out, staged, targets, target.python, args.chunk_size)
    except UsageError as e:
        print(f"wheelhouse: error: {e}", file=sys.stderr)
        return 2
    report(dirs, args.chunk_size, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
