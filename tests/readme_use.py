"""The README's `Use` commands, run once per test session in a fresh clone of this checkout.

Two tests read the one run (tests/test_readme_use.py: they run from a clone and change no tracked
file; tests/test_e2e_smollm.py: the CPU speed + quality sweep among them, SmolLM2 real weights through
fp32, LLM.int8 and ORT int8, gives every row its numbers). Parallel workers share it: the first to ask
runs the commands under a file lock and writes what happened; a later one waits and reads it.

Each command runs as the README prints it, with two kinds of additions so it stays a CPU test: a
workload small enough for seconds (prompt, new tokens, repeats), and, for the commands that name a large
synthetic model, `model=tiny` in its place (the command's shape, backends and report steps are what is
checked; the big models' own runs are GPU results). The report command that rebuilds a dated sweep
folder gets the folder the first sweep command made.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from backends.contract import builder_lock

ROOT = Path(__file__).resolve().parents[1]

# Sizes of the sweep that tests/test_e2e_smollm.py checks (median of 2 after a warm-up; its quality
# settings are those of tests/test_serve.py's LLM.int8 server, so all of them share one fp32 reference).
SMALL = ["workload.warmup=1", "workload.repeats=2", "workload.prompt_tokens=16", "workload.new_tokens=4",
         "workload.batch_sizes=[1]", "quality.eval_tokens=32", "quality.generations=2",
         "quality.generation_tokens=4", "report.html=false"]
LARGE = re.compile(r"^model=(qwen|llama)")
STDERR_TAIL = 4000


def use_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Use", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [ln.split("  #", 1)[0].strip() for ln in block.strip().splitlines() if ln.strip()]


def _sweeps(clone: Path) -> set[Path]:
    return {p.parent for p in (clone / "multirun").glob("*/*/sweep.json")}


def _clone(clone: Path) -> None:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    # The working tree as it is (the tests check this change, not only the last commit).
    for part in ("runners", "backends", "conf", "results"):
        shutil.copytree(ROOT / part, clone / part, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("README.md", "pyproject.toml"):
        shutil.copy(ROOT / name, clone / name)
    subprocess.run(["git", "add", "-A"], cwd=clone, check=True)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tree", "--allow-empty"],
                   cwd=clone, check=True)


def run_use_commands(clone: Path, cache: Path) -> list[dict]:
    """Run every command in `clone` (the shared `cache` as QUANTBENCH_CACHE); one dict per command:
    `cmd` (as the README prints it), `args` (as run), `rc`, `stderr` (its tail), `seconds`, and `sweep`
    (the folder a `-m` sweep made, else None)."""
    _clone(clone)
    env = dict(os.environ, QUANTBENCH_CACHE=str(cache))
    made: Path | None = None
    runs = []
    for cmd in use_commands():
        args = shlex.split(cmd)
        if args[:3] == ["python", "-m", "runners.bench"]:
            args = [sys.executable, *args[1:]]
            args = ["model=tiny" if LARGE.match(a) else a for a in args] + SMALL
        else:
            args = [sys.executable, *args[1:]]
            args = [str(made) if a.startswith("multirun/20") and made else a for a in args]
        before = _sweeps(clone)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(args, cwd=clone, capture_output=True, text=True, timeout=600, env=env)
            rc, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as e:
            rc, stderr = None, f"timed out after {e.timeout} s\n{e.stderr or ''}"
        new = sorted(_sweeps(clone) - before)
        sweep = new[-1] if new else None
        if "-m" in args and "runners.bench" in " ".join(args) and made is None:
            made = sweep
        runs.append({"cmd": cmd, "args": args, "rc": rc, "stderr": stderr[-STDERR_TAIL:],
                     "seconds": round(time.perf_counter() - t0, 1), "sweep": str(sweep) if sweep else None})
    return runs


def shared_use_runs(folder: Path, cache: Path) -> dict:
    """The commands' runs in `folder/clone`, made once per session (`folder` shared by the workers):
    {"clone": path, "runs": [...]} or {"clone": path, "error": why the runs could not be made}."""
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "runs.json"
    with builder_lock(folder / "runs"):
        if not done.exists():
            clone = folder / "clone"
            try:
                result = {"clone": str(clone), "runs": run_use_commands(clone, cache)}
            except Exception as e:  # noqa: BLE001 - every reader gets the reason, none runs them again
                result = {"clone": str(clone), "error": f"{type(e).__name__}: {e}"}
            tmp = done.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, indent=1))
            tmp.rename(done)
    return json.loads(done.read_text())
