"""A non-editable install works: the wheel holds every package and the configs (as `runners.conf`),
and its console script composes, helps and runs a cell from a folder that is not the checkout."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib needs Python 3.11")


def _declared_packages() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def test_every_code_and_config_folder_is_a_declared_package():
    declared = _declared_packages()
    wanted = set()
    for top in ("runners", "backends"):
        for d in [ROOT / top, *(ROOT / top).rglob("*")]:
            if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py")):
                wanted.add(".".join(d.relative_to(ROOT).parts))
    for d in [ROOT / "conf", *(ROOT / "conf").rglob("*")]:
        if d.is_dir():
            wanted.add(".".join(("runners", *d.relative_to(ROOT).parts)))
    missing = sorted(wanted - declared)
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks {missing}: a wheel would not ship them"


def _setuptools_version() -> tuple[int, ...]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return tuple(int(p) for p in version("setuptools").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return (0,)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools leaves build/ in the source tree, and a stale build/lib there
    # would put files into the wheel that the checkout no longer has.
    src = tmp_path_factory.mktemp("src")
    for name in ("runners", "backends", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    # Without build isolation when this environment's setuptools can build the wheel itself (>= 70.1 has
    # bdist_wheel; no download needed); a fresh venv's older one lets pip fetch what pyproject requires.
    no_isolation = ["--no-build-isolation"] if _setuptools_version() >= (70, 1) else []
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *no_isolation, "-q",
                           "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [whl] = out.glob("quantbench-*.whl")
    return whl


def test_wheel_ships_the_configs_and_every_engine(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "runners/conf/config.yaml" in names and "runners/conf/hydra/launcher/gpus.yaml" in names
    shipped = {n.removeprefix("runners/conf/") for n in names if n.startswith("runners/conf/")}
    assert shipped == {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    assert {"backends/vllm/engine.py", "backends/onnxruntime/engine.py", "backends/contract/engine.py",
            "runners/report/cli.py"} <= names
    assert not any(n.startswith(("tests/", "conf/", "results/")) for n in names)


def test_installed_wheel_runs_from_another_folder(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    # The packages of the interpreter running the tests (torch & co.: a venv's own when the tests run in
    # one, the system's otherwise) come after the new venv's own site-packages (the wheel). A .pth line
    # adds them to sys.path without running their .pth files: the checkout's editable install stays out.
    venv.EnvBuilder(system_site_packages=False, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = dict.fromkeys(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    Path(site, "quantbench-test-parent.pth").write_text("".join(f"{p}\n" for p in ours))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # The checkout's editable install must not be what answers: clear any path pointing back at it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(py), "-c", "import runners, backends; print(runners.__file__, backends.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert str(ROOT) not in where and site in where

    script = env_dir / "bin" / "quantbench"
    if not script.exists():  # pip --target puts scripts under the target's bin/
        script = Path(site) / "bin" / "quantbench"
    cmd = [str(py), str(script)] if script.exists() else [str(py), "-m", "runners.bench"]
    helped = subprocess.run([*cmd, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert helped.stdout.startswith("quantbench: which quantization backend")
    assert re.search(r"backend: .*bnb_int8.*ort_int8", helped.stdout.replace("\n", " "))

    run = subprocess.run([*cmd, "model=tiny", "backend=fp32", "weights=synthetic", "workload.prompt_tokens=8",
                          "workload.new_tokens=4", "workload.batch_sizes=[1]", "workload.warmup=1",
                          "workload.repeats=2", "quality.enabled=false", "report.html=false",
                          f"hydra.run.dir={tmp_path / 'out'}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "out" / "table.md").read_text().count("fp32") >= 1
