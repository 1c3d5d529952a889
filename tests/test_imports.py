"""segtrain's import graph: no cycle, using a model never needs the training code, and `import
segtrain` does no work a notebook did not ask for.

The graph holds every `import` and `from ... import` in segtrain/, at module level, inside
functions and under TYPE_CHECKING alike: an import made late is still a dependency. A package's
own __init__ is not counted as a dependency of its submodules (Python runs it for every one).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "segtrain"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import sub` depends on pkg.sub when that is a module, else on pkg itself
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                           for alias in node.names]
            else:
                continue
            graph[name] |= {target for target in targets if target in modules and target != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_segtrain_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 60 and "segtrain.api" in graph["segtrain"]  # the graph sees the package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between segtrain's packages (config, data, training, ...): a package depends on
    another when one of its modules imports one of the other's. Top-level modules (api, cli,
    paths, errors, ...) stand alone."""
    def package(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:2]) if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else module

    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module == "segtrain":
            continue  # the lazy __init__ names the API's functions
        own = package(module)
        packages.setdefault(own, set()).update(package(t) for t in targets if package(t) not in (own, "segtrain"))
    return packages


def test_segtrain_packages_have_no_cycle_between_them():
    """One direction between packages (data < config < training, use < plugin, ...), so each can
    be read, tested and moved without the ones that build on it."""
    packages = package_graph(import_graph())
    assert {"segtrain.config", "segtrain.data", "segtrain.training", "segtrain.edge_app"} <= set(packages)
    assert find_cycle(packages) is None, " -> ".join(find_cycle(packages))


def test_using_a_model_never_imports_the_training_code():
    graph = import_graph()
    wrong = {(module, target) for module, targets in graph.items() if module.startswith(("segtrain.use.", "segtrain.evaluation."))
             for target in targets if target.startswith("segtrain.training")}
    assert not wrong


def test_import_segtrain_loads_no_torch_and_looks_at_nothing():
    """Not even segtrain.train does: the API's module loads torch only when a function needs it."""
    code = ("import os, sys, segtrain; from segtrain.runtime import cpu_threads; "
            "assert callable(segtrain.train) and issubclass(segtrain.SegtrainError, Exception); "
            "print(sorted(m for m in ('torch', 'numpy', 'PIL', 'onnxruntime', 'mlflow') if m in sys.modules), "
            "cpu_threads._made, 'OMP_WAIT_POLICY' in os.environ)")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PACKAGE.parent)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["[]", "[]", "False"], out.stderr
