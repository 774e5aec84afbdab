"""The README's `Use` commands run from a fresh clone and change no tracked file.

The commands run once per session (tests/readme_use.py, which says how they are sized for a CPU);
tests/test_e2e_smollm.py checks the numbers of the CPU speed + quality sweep among them. `git status`
must be clean afterwards: outputs go to the ignored `multirun/` and `outputs/`.
"""
from __future__ import annotations

import subprocess

import pytest

from .readme_use import use_commands


def test_the_use_section_lists_runs_and_reports():
    cmds = use_commands()
    assert sum(c.startswith("python -m runners.bench") for c in cmds) >= 3
    assert sum(c.startswith("python -m runners.report") for c in cmds) >= 2


@pytest.mark.slow
@pytest.mark.xdist_group("readme_use")
def test_readme_use_commands_change_no_tracked_file(readme_use):
    assert "error" not in readme_use, readme_use.get("error")
    runs = readme_use["runs"]
    assert [r["cmd"] for r in runs] == use_commands()
    for r in runs:
        assert r["rc"] in (0, 1), (r["cmd"], r["rc"], r["stderr"][-2000:])
        assert "Traceback" not in r["stderr"], (r["cmd"], r["stderr"][-3000:])
    for r in runs:  # every sweep command made its dated sweep folder
        assert (r["sweep"] is not None) == r["cmd"].startswith("python -m runners.bench -m "), r
    status = subprocess.run(["git", "status", "--porcelain"], cwd=readme_use["clone"], capture_output=True,
                            text=True).stdout
    assert status == "", status
