"""The one-way house, checked from the source tree: no import cycles, engines import nothing of the
runner's, no module uses another module's private names, and a new engine or variant touches no file
of the repository."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from .conftest import FAST, ROOT

PACKAGES = ("runners", "backends")


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


def test_missing_dependency_of_an_outside_engine_names_its_packages():
    from backends.contract.engine import install_hint

    assert install_hint("throwaway", ("throwaway-runtime",)) == "pip install throwaway-runtime"
    assert install_hint("ort", ("onnxruntime",)) == "pip install 'quantbench[ort]'"
