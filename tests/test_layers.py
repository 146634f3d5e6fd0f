"""The layers stated in docs/design.md are the layers the imports show.

``features`` (data, config, schema, consent rules) imports nothing from ``serving`` or
``training``; ``serving`` (bundle, scoring, planning, the HTTP service) imports ``features``
only; ``training`` (fitting, selection, MLflow, reports, CLI) may import both. Imports are
read from the source (every ``import``, including those under ``TYPE_CHECKING`` and inside
functions), and the package's module graph has no cycles.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("features", "serving", "training")
MAY_IMPORT = {"features": set(), "serving": {"features"}, "training": {"features", "serving"}}
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Project modules ``name`` imports (absolute and relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in MODULES:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    return module.split(".")[0]


def test_every_package_is_read():
    assert {_layer(m) for m in MODULES} == set(PACKAGES)
    assert len(MODULES) > 60


@pytest.mark.parametrize("package", PACKAGES)
def test_a_layer_imports_only_the_layers_below(package):
    against = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items() if _layer(module) == package
        for target in targets
        if _layer(target) != package and _layer(target) not in MAY_IMPORT[package]
    )
    assert against == []


def _cycle() -> list[str] | None:
    """One import cycle among the project's modules, or None."""
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if target.split(".")[-1] == "__init__" or target in PACKAGES:
                continue  # package __init__ files re-export nothing here
            if state[target] == 1:
                return [*stack[stack.index(target):], target]
            if state[target] == 0 and (found := visit(target)):
                return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(GRAPH):
        if state[module] == 0 and (found := visit(module)):
            return found
    return None


def test_no_import_cycles():
    assert _cycle() is None, " -> ".join(_cycle())


def test_the_cycle_finder_finds_a_cycle(monkeypatch):
    monkeypatch.setitem(GRAPH, "features.schema", GRAPH["features.schema"] | {"features.config"})
    monkeypatch.setitem(GRAPH, "features.config", GRAPH["features.config"] | {"features.schema"})
    assert _cycle() is not None


def test_no_class_name_is_defined_twice():
    where: dict[str, list[str]] = defaultdict(list)
    for name, path in MODULES.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                where[node.name].append(name)
    assert {cls: mods for cls, mods in where.items() if len(mods) > 1} == {}


def test_modules_stay_small():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_service_module_imports_no_model_machinery():
    """``bentoml serve``'s arbiter imports ``serving.service`` and never serves: what the module
    imports at its top, the arbiter loads too (bench/startup_bench.py: 3.65 s against 1.64 s).
    The model's loading and checking are imported in each worker (``Persuade.__init__``)."""
    import subprocess
    import sys

    heavy = ("lightgbm", "mlflow", "sklearn", "scipy", "shap")
    probe = f"import sys, serving.service; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == []
