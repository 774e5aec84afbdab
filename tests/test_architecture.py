"""The one-way house, checked from the source tree and from a run.

- No import cycle between modules, nor between stage folders (imports placed inside functions count);
  an import inside a function is only for the heavy optional packages listed here.
- Engines import nothing of the runner's; no module uses another module's private names.
- One run's config, followed from the entry point through a CPU run, visits the stage folders in the
  design's order, each once (a call into an engine and back is part of the visit that made it).
- A new engine is its module and its YAMLs, a new variant one YAML: no other file changes, and a metric
  the engine declares reaches table.md and table.csv.
"""
from __future__ import annotations

import ast
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import FAST, ROOT

PACKAGES = ("runners", "backends")
# The stage folders of runners/, in the order a run's data flows through them (DESIGN: plan -> launch ->
# open -> engine -> workload loop -> measure -> quality -> record -> report).
STAGES = ("plan", "launch", "open", "workload", "measure", "quality", "record", "report")
# What may be imported inside a function: heavy or optional third-party packages (and the standard
# library). Never a module of ours: an import that would close a cycle must be fixed, not hidden.
LAZY_IMPORTS = {"torch", "transformers", "vllm", "onnxruntime", "onnx", "onnxscript", "bitsandbytes", "llmcompressor",
                "compressed_tensors", "datasets", "tokenizers", "loguru", "matplotlib", "pynvml", "numpy"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, name: str | None, level: int, current: str, is_pkg: bool) -> str:
    if level:
        base = current.split(".") if is_pkg else current.split(".")[:-1]
        base = base[: len(base) - (level - 1)]
        module = ".".join(base + ([module] if module else []))
    if name and f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    return module


def _imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import in the file, function-level included."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                target = _resolve(node.module or "", a.name, node.level, name, is_pkg)
                out.append((target, [] if target.endswith(f".{a.name}") else [a.name]))
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for target, _ in _imports(name, path):
            # A package import runs its __init__; importing a submodule runs every parent's too.
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return found


def _is_ancestor(pkg: str, module: str) -> bool:
    return module.startswith(pkg + ".")


def test_no_import_cycles():
    graph = _graph()
    # A package's __init__ re-exporting its own submodules is how a package presents itself, not a cycle
    # between stages: drop edges from a module up to its own ancestors' __init__.
    for name in graph:
        graph[name] = {t for t in graph[name] if not _is_ancestor(t, name)}
    assert _cycles(graph) == []


def folder_of(module: str) -> str:
    """The stage folder of a module (`runners.plan.config` -> plan), `backends` for an engine or the
    contract, else the module itself (the entry, the sweep, and the small shared modules)."""
    parts = module.split(".")
    if parts[0] == "backends":
        return "backends"
    if len(parts) > 1 and parts[1] in STAGES:
        return parts[1]
    return module


def folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name, targets in graph.items():
        src = folder_of(name)
        out.setdefault(src, set())
        for t in targets:
            dst = folder_of(t)
            out.setdefault(dst, set())
            if dst != src:
                out[src].add(dst)
    return out


def test_no_cycle_between_stage_folders_counting_imports_inside_functions():
    graph = _graph()
    for name in graph:
        graph[name] = {t for t in graph[name] if not _is_ancestor(t, name)}
    folders = folder_graph(graph)
    assert set(STAGES) <= set(folders)
    assert _cycles(folders) == []


def test_a_planted_cycle_between_stage_folders_is_found():
    # record -> plan and plan -> record: modules that never import each other, folders that do.
    graph = {"runners.record.schema": {"runners.plan.strict"}, "runners.plan.planner": {"runners.record.store"},
             "runners.plan.strict": set(), "runners.record.store": set()}
    assert _cycles(folder_graph(graph)) == [["plan", "record"]]


def _imports_in_functions() -> list[tuple[str, str]]:
    out = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom):
                    out.append((name, "." * node.level + (node.module or "")))
                elif isinstance(node, ast.Import):
                    out += [(name, a.name) for a in node.names]
    return out


def test_imports_inside_functions_are_only_heavy_optional_packages():
    found = _imports_in_functions()
    assert any(target.startswith("torch") for _, target in found)  # the scan sees them
    bad = [(name, target) for name, target in found
           if target.startswith(".") or target.split(".")[0] in PACKAGES
           or (target.split(".")[0] not in LAZY_IMPORTS and target.split(".")[0] not in sys.stdlib_module_names)]
    assert bad == []


def visits(calls: list[tuple[str, str]]) -> list[str]:
    """Folders in the order a run's config entered them, each stay counted once: a call into an engine
    and back belongs to the visit that made it, as do calls into the small shared modules."""
    out: list[str] = []
    for where, _ in calls:
        if where in ("backends", "shared"):
            continue
        if not out or out[-1] != where:
            out.append(where)
    return out


def test_visits_fold_engine_calls_into_their_caller():
    calls = [("entry", "a"), ("plan", "b"), ("backends", "c"), ("plan", "d"), ("launch", "e"), ("open", "f"),
             ("backends", "g"), ("open", "h"), ("workload", "i"), ("workload", "i")]
    assert visits(calls) == ["entry", "plan", "launch", "open", "workload"]


def test_one_runs_config_visits_the_stage_folders_in_order_each_once(tmp_path):
    """In process (`isolate=false`), so the profiler sees every stage: entry -> plan -> launch -> open
    -> workload -> quality, then the entry's sweep closes. measure, record and report work on what the
    stages hand them (samples, records), never on the config."""
    out = tmp_path / "calls.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "trace_run.py"), str(out), *FAST, "weights=synthetic",
                           "workload.batch_sizes=[1,2]", "report.html=false", "isolate=false",
                           f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    calls = json.loads(out.read_text())
    seq = visits(calls)
    assert seq == ["entry", "plan", "launch", "open", "workload", "quality", "entry"], (seq, proc.stderr[-2000:])
    stages = seq[1:-1]
    assert [s for s in STAGES if s in stages] == stages and len(set(stages)) == len(stages)
    # The engine was asked to validate during planning, and was opened with its typed view only.
    assert ("backends", "backends/contract/engine.py:validate") in [tuple(c) for c in calls]
    assert not [c for c in calls if c[0] == "backends" and c[1].endswith((":load", ":prepare", ":generate"))]
    assert (tmp_path / "run" / "record.json").is_file()


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_engines_import_nothing_from_runners():
    bad = [(name, target) for name, path in MODULES.items() if name.startswith("backends")
           for target, _ in _imports(name, path) if target.split(".")[0] == "runners"]
    assert bad == []


def test_no_module_uses_another_modules_private_names():
    # Ours only: reaching into a third-party library's internals is a separate, guarded decision.
    bad = []
    for name, path in MODULES.items():
        for target, names in _imports(name, path):
            if target.split(".")[0] not in PACKAGES:
                continue
            bad += [(name, f"{target}.{n}") for n in names if n.startswith("_") and not n.startswith("__")]
            if target.rpartition(".")[2].startswith("_") and not target.endswith("__"):
                bad.append((name, target))
        tree = ast.parse(path.read_text())
        aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                   for a in node.names
                   if ((node.module or "") if isinstance(node, ast.ImportFrom) else a.name).split(".")[0] in PACKAGES
                   or (isinstance(node, ast.ImportFrom) and node.level)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append((name, f"{node.value.id}.{node.attr}"))
    assert bad == []


THROWAWAY_ENGINE = '''
"""An engine that lives outside the repository: one module."""
from dataclasses import dataclass

from backends.contract import Engine, WeightCensus


@dataclass(frozen=True)
class Options:
    step_ms: float = 1.0


class Throwaway(Engine):
    name = "throwaway"
    extra = "throwaway"          # no such extra in quantbench: the hint must name the packages
    packages = ("throwaway-runtime",)
    Options = Options

    def load(self):
        import time
        self._sleep = time.sleep

    def generate(self, prompts, new_tokens, timer):
        for _ in range(new_tokens):
            self._sleep(self.options.step_ms / 1e3)
            timer.token()
        return [[3] * new_tokens for _ in prompts]

    def census(self):
        census = WeightCensus()
        census.add("ThrowawayLinear", False, "proj", 64 * 64, 64 * 64 * 2)
        return census

    def describe(self):
        return {"engine": "throwaway", "linear_kernels": "ThrowawayLinear x1"}


ENGINE = Throwaway
'''


def _tracked_state() -> str:
    out = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout


def test_new_engine_and_variant_from_a_search_path_folder_touch_no_repository_file(tmp_path):
    (tmp_path / "engines" / "qbx").mkdir(parents=True)
    (tmp_path / "engines" / "qbx" / "__init__.py").write_text("")
    (tmp_path / "engines" / "qbx" / "throwaway.py").write_text(THROWAWAY_ENGINE)
    conf = tmp_path / "myconf" / "backend"
    conf.mkdir(parents=True)
    # An engine kept outside backends/ is named by its dotted module path.
    (conf / "throwaway.yaml").write_text("engine: qbx.throwaway\ndescription: a throwaway engine\n"
                                         "expect: {quantized: false, weight_bits: 16}\n")
    (conf / "fp32_eager.yaml").write_text("engine: transformers\ndescription: fp32 with eager attention\n"
                                          "options: {dtype: float32, attn_implementation: eager}\n"
                                          "expect: {quantized: false, weight_bits: 32}\n")
    before = _tracked_state()
    sweep = tmp_path / "sweep"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "engines"), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-m", "runners.bench", "-m", f"hydra.searchpath=[file://{tmp_path / 'myconf'}]",
                           "backend=throwaway,fp32_eager", *FAST, "weights=synthetic", "workload.batch_sizes=[1]",
                           "report.html=false", f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (sweep / "table.md").read_text()
    assert "throwaway" in table and "fp32_eager" in table
    from runners.record.store import find_records

    recs = {r.backend: r for r in find_records(sweep)}
    assert recs["throwaway"].status == "ok" and recs["throwaway"].engine == "qbx.throwaway"
    assert recs["fp32_eager"].engine_info["attn_implementation"] == "eager"
    assert _tracked_state() == before


# The same engine, added inside the repository: options that validate themselves, the calls it
# implements, and a metric it declares and reports.
IN_REPO_ENGINE = (THROWAWAY_ENGINE
                  .replace("from backends.contract import Engine, WeightCensus",
                           "from backends.contract import ConfigError, Engine, Metric, WeightCensus")
                  .replace("    step_ms: float = 1.0\n", "    step_ms: float = 1.0\n\n"
                           "    def __post_init__(self):\n"
                           "        if self.step_ms <= 0:\n"
                           "            raise ConfigError(f'backend.options.step_ms: must be > 0, got {self.step_ms}')\n")
                  .replace("    Options = Options\n", "    Options = Options\n"
                           "    calls = frozenset({'generate'})\n"
                           "    metrics = (Metric('scratch_pad_mib', 'Throwaway scratch pad, MiB', 'lower', 'load', 'run',\n"
                           "                      'not a throwaway run'),)\n\n"
                           "    def memory_facts(self):\n"
                           "        return {'scratch_pad_mib': 3.5 * self.options.step_ms}\n"))


def _tree_digest(root: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def test_a_new_engine_inside_the_repo_is_its_module_and_yamls_and_its_metric_reaches_the_tables(tmp_path):
    repo = tmp_path / "repo"
    for part in ("backends", "runners", "conf"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    before = _tree_digest(repo)
    (repo / "backends" / "throwaway.py").write_text(IN_REPO_ENGINE)
    (repo / "conf" / "backend" / "throwaway.yaml").write_text(
        "engine: throwaway\ndescription: a throwaway engine\nexpect: {quantized: false, weight_bits: 16}\n")
    # A new variant of it: one YAML.
    (repo / "conf" / "backend" / "throwaway_slow.yaml").write_text(
        "engine: throwaway\ndescription: the same, slower\noptions: {step_ms: 2.0}\n"
        "expect: {quantized: false, weight_bits: 16}\n")
    env = dict(os.environ, PYTHONPATH=str(repo))

    def bench_in_copy(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "runners.bench", *args], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=300)

    listed = subprocess.run([sys.executable, "-c", "from backends import engine_names; print(engine_names())"],
                            cwd=repo, env=env, capture_output=True, text=True)
    assert "'throwaway'" in listed.stdout and "compress" not in listed.stdout, listed.stderr
    bad = bench_in_copy("backend=throwaway", "backend.options.step_ms=-1", *FAST, "weights=synthetic",
                        f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode != 0 and "error: backend.options.step_ms: must be > 0, got -1" in bad.stderr, bad.stderr
    wrong = bench_in_copy("backend=throwaway", "model=tiny", "workload=classify", "weights=synthetic",
                          f"hydra.run.dir={tmp_path / 'classify'}")
    assert wrong.returncode != 0 and "(throwaway engine) cannot classify: it implements generate" in wrong.stderr
    sweep = tmp_path / "sweep"
    proc = bench_in_copy("-m", "backend=throwaway,throwaway_slow,fp32", *FAST, "weights=synthetic",
                         "workload.batch_sizes=[1]", "report.html=false", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (sweep / "table.md").read_text()
    assert "| Throwaway scratch pad, MiB | 3.50 | 7.00 (+100%) | n/a (not a throwaway run) |" in table, table
    with open(sweep / "table.csv") as f:
        rows = {r["backend"]: r for r in csv.DictReader(f)}
    assert float(rows["throwaway"]["scratch_pad_mib"]) == 3.5 and float(rows["throwaway_slow"]["scratch_pad_mib"]) == 7.0
    assert rows["fp32"]["scratch_pad_mib"] == "" and rows["fp32"]["status"] == "ok"
    after = _tree_digest(repo)
    assert sorted(set(after) - set(before)) == ["backends/throwaway.py", "conf/backend/throwaway.yaml",
                                                 "conf/backend/throwaway_slow.yaml"]
    assert {k: after[k] for k in before} == before


def test_missing_dependency_of_an_outside_engine_names_its_packages():
    from backends.contract.engine import install_hint

    assert install_hint("throwaway", ("throwaway-runtime",)) == "pip install throwaway-runtime"
    assert install_hint("ort", ("onnxruntime",)) == "pip install 'quantbench[ort]'"
