"""The README's `Use` commands run from a fresh clone and change no tracked file.

Each command runs as the README prints it, in a fresh `git clone` of this checkout, with two kinds of
additions so the test stays a CPU test: a workload small enough for seconds (prompt, new tokens,
repeats), and, for the commands that name a large synthetic model, `model=tiny` in its place (the
command's shape, backends and report steps are what is checked; the big models' own runs are GPU
results). The report command that rebuilds a dated sweep folder gets the folder the sweep command just
made. `git status` must be clean afterwards: outputs go to the ignored `multirun/` and `outputs/`.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

# The quality settings of tests/test_e2e_smollm.py: the two share the reference's cached outputs.
SMALL = ["workload.warmup=0", "workload.repeats=1", "workload.prompt_tokens=8", "workload.new_tokens=2",
         "workload.batch_sizes=[1]", "quality.eval_tokens=32", "quality.generations=2",
         "quality.generation_tokens=4", "report.html=false"]
LARGE = re.compile(r"^model=(qwen|llama)")


def use_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Use", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [ln.split("  #", 1)[0].strip() for ln in block.strip().splitlines() if ln.strip()]


def test_the_use_section_lists_runs_and_reports():
    cmds = use_commands()
    assert sum(c.startswith("python -m runners.bench") for c in cmds) >= 3
    assert sum(c.startswith("python -m runners.report") for c in cmds) >= 2


@pytest.mark.slow
def test_readme_use_commands_change_no_tracked_file(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    # The working tree as it is (the test checks this change, not only the last commit).
    for part in ("runners", "backends", "conf", "results"):
        shutil.copytree(ROOT / part, clone / part, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("README.md", "pyproject.toml"):
        shutil.copy(ROOT / name, clone / name)
    subprocess.run(["git", "add", "-A"], cwd=clone, check=True)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tree", "--allow-empty"],
                   cwd=clone, check=True)
    made: Path | None = None
    for cmd in use_commands():
        args = shlex.split(cmd)
        if args[:3] == ["python", "-m", "runners.bench"]:
            args = [sys.executable, *args[1:]]
            args = ["model=tiny" if LARGE.match(a) else a for a in args] + SMALL
        else:
            args = [sys.executable, *args[1:]]
            args = [str(made) if a.startswith("multirun/20") and made else a for a in args]
        proc = subprocess.run(args, cwd=clone, capture_output=True, text=True, timeout=600)
        assert proc.returncode in (0, 1), (cmd, proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, (cmd, proc.stderr[-3000:])
        if "-m" in args and "runners.bench" in " ".join(args) and made is None:
            found = sorted((clone / "multirun").glob("*/*/sweep.json"))
            made = found[-1].parent if found else None
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout
    assert status == "", status
