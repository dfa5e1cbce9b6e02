"""The import rule of the README's Architecture section, checked on the package's source.

Layers, low to high: the leaf modules (errors, files, plots, metrics, console), config, data,
nn, search, ensemble, report, cli. A module imports only from its own layer or lower ones
(imports inside functions count: they run too); only ``nn`` imports TensorFlow/Keras; only
``cli`` imports typer; and no two modules import each other, even lazily.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import automl

PACKAGE = Path(automl.__file__).resolve().parent
LAYERS = ("leaf", "config", "data", "nn", "search", "ensemble", "report", "cli")
LEAVES = {"errors", "files", "plots", "metrics", "console"}
ONLY_IN = {"tensorflow": "nn", "keras": "nn", "typer": "cli"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str | None:
    """Layer of ``automl.<...>``; None for the package's own ``__init__`` (the public facade)."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    return "leaf" if parts[1] in LEAVES else parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every (line, imported module) of a file, top-level and inside functions alike."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "automl":  # from automl import x: x may be a module
                found += [(node.lineno, f"automl.{a.name}") for a in node.names]
    return found


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def violations(sources: dict[str, Path]) -> list[str]:
    """One line per broken rule: the module, the line, the forbidden import and why."""
    found = []
    for module, path in sources.items():
        layer = _layer(module)
        for line, name in _imports(path):
            top = name.split(".")[0]
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
            if top in ONLY_IN and layer != ONLY_IN[top]:
                found.append(f"{where}: only automl.{ONLY_IN[top]} may import {top}")
            if top != "automl" or layer is None or name == "automl":
                continue
            target = _layer(name)
            if target is not None and LAYERS.index(target) > LAYERS.index(layer):
                found.append(f"{where}: the {layer} layer may not import the higher {target} one")
    return found


def cycles(sources: dict[str, Path]) -> list[list[str]]:
    """Import cycles between automl modules (every import, lazy ones included)."""
    graph = {
        module: {
            name
            for _, name in _imports(path)
            if name in sources and name != module and name != "automl"
        }
        for module, path in sources.items()
        if module != "automl"
    }
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(trail[trail.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_every_module_keeps_the_import_rule() -> None:
    broken = violations(_sources())
    assert not broken, "\n".join(broken)


def test_no_two_modules_import_each_other() -> None:
    found = cycles(_sources())
    assert not found, "\n".join(" -> ".join(c) for c in found)


def test_every_module_belongs_to_a_known_layer() -> None:
    unknown = {m for m in _sources() if _layer(m) not in (*LAYERS, None)}
    assert not unknown, f"modules outside the layers of the import rule: {sorted(unknown)}"


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        # The checks themselves can fail: planted violations are named with module and line.
        ("automl.config.bad", "import tensorflow as tf\n", "only automl.nn may import tensorflow"),
        ("automl.nn.bad", "from automl.search.storage import top_trials\n", "higher search"),
        ("automl.search.bad", "def f():\n    import typer\n", "bad.py:2 imports typer"),
        ("automl.data.bad", "from automl import ensemble\n", "higher ensemble one"),
    ],
)
def test_a_planted_violation_is_named(
    tmp_path: Path, module: str, source: str, expected: str
) -> None:
    path = tmp_path / "automl" / Path(*module.split(".")[1:]).with_suffix(".py")
    path.parent.mkdir(parents=True)
    path.write_text(source, encoding="utf-8")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "automl"
    try:
        found = violations({module: path})
    finally:
        PACKAGE = saved
    assert any(expected in line for line in found), found


def test_a_planted_cycle_is_found(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("def f():\n    from automl.search.b import g\n")
    (tmp_path / "b.py").write_text("from automl.search.a import f\n")
    found = cycles({"automl.search.a": tmp_path / "a.py", "automl.search.b": tmp_path / "b.py"})
    assert found == [["automl.search.a", "automl.search.b", "automl.search.a"]]


@pytest.mark.parametrize("package", ["search", "nn"])
def test_functions_in_search_and_nn_stay_short(package: str) -> None:
    # The training and trial code is where a long function hid eight jobs; keep each to one.
    long = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 60:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}")
    assert not long, f"functions over 60 lines: {long}"


def test_the_public_api_resolves_without_tensorflow_until_a_function_is_used() -> None:
    """``import automl`` stays free of TensorFlow, every name of ``__all__`` resolves, and the
    ``TYPE_CHECKING`` imports name the same objects as the lazy ``__getattr__``."""
    import subprocess
    import sys

    code = (
        "import sys, automl\n"
        "assert 'tensorflow' not in sys.modules, 'import automl imported TensorFlow'\n"
        "from automl.search.tune import run_tune\n"
        "from automl.ensemble.build import run_ensemble\n"
        "from automl.ensemble.predict import run_predict\n"
        "from automl.ensemble.manifest import EnsembleResult\n"
        "from automl.search.storage import load_study\n"
        "assert automl.run_tune is run_tune and automl.run_ensemble is run_ensemble\n"
        "assert automl.run_predict is run_predict and automl.load_study is load_study\n"
        "assert automl.EnsembleResult is EnsembleResult\n"
        "missing = [n for n in automl.__all__ if not hasattr(automl, n)]\n"
        "assert not missing, missing\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
