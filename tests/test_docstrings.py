"""Docstrings and comments name only modules that exist.

A docstring that still points at a module after its code moved sends the reader to nothing
(issue 21 found several after the restructure). Every ``.py`` path and every dotted ``automl.``
name in a docstring or a comment of ``automl/``, ``tests/``, ``benchmarks/`` and ``examples/``
must resolve:

- a path resolves relative to the file's own folder, to the package (``automl/``) or to the
  repository root, the way the docstrings write them (a sibling by its file name,
  ``nn/schedules.py`` from another sub-package, ``benchmarks/audit_speed.py`` from anywhere), and
  in a test also relative to the sub-package its folder mirrors;
- a dotted name resolves module by module, and its first name below a module must be one that
  module defines or imports at top level (``automl.metrics.METRICS``); what follows a class or a
  function is not checked.

Only names under ``automl`` and paths of this repository are checked, so ``optuna.storages`` or a
URL are left alone; :data:`EXTERNAL` lists the other projects' files the docstrings cite.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

import automl

PACKAGE = Path(automl.__file__).resolve().parent
ROOT = PACKAGE.parent
SCANNED = ("automl", "tests", "benchmarks", "examples")
#: Files of other projects that docstrings cite as sources (MedMNIST's record of its downloads).
EXTERNAL = frozenset({"medmnist/info.py"})

# A path is taken whole: it may not start inside a longer word, path or URL.
PATH_REF = re.compile(r"(?<![\w/.:-])((?:[\w.-]+/)*[\w-]+\.py)\b")
DOTTED_REF = re.compile(r"(?<![\w/.-])automl(?:\.[A-Za-z_]\w*)+")
#: A dotted name ending in one of these is a file (``automl.yaml``), not a module.
FILE_SUFFIXES = frozenset({"yaml", "yml", "json", "db", "log", "toml", "txt", "csv", "md", "html"})


DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _texts(source: str) -> Iterator[tuple[int, str]]:
    """(first line, text) of every docstring and comment of a module's source."""
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, DOCUMENTED):
            continue
        # The docstring, and attribute docstrings: a bare string statement anywhere in a body.
        for stmt in node.body:
            if (
                isinstance(stmt, ast.Expr)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            ):
                yield stmt.lineno, stmt.value.value
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string


@cache
def _top_level_names(path: Path) -> frozenset[str]:
    """Names a module defines or imports at top level, plus ``__all__`` (lazy exports)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
                and isinstance(node.value, ast.List | ast.Tuple)
            ):
                names.update(
                    e.value
                    for e in node.value.elts
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)
                )
    return frozenset(names)


def dotted_exists(name: str, package: Path = PACKAGE) -> bool:
    """Whether a dotted ``automl.`` name names a module of the package, or a name one defines."""
    here = package  # a package folder, or a module file once one is reached
    for part in name.split(".")[1:]:
        if here.is_dir():
            if (here / part / "__init__.py").is_file():
                here = here / part
                continue
            if (here / f"{part}.py").is_file():
                here = here / f"{part}.py"
                continue
            return part in _top_level_names(here / "__init__.py")
        return part in _top_level_names(here)
    return True


def path_exists(ref: str, beside: Path, package: Path = PACKAGE, root: Path = ROOT) -> bool:
    """Whether a ``.py`` path resolves beside the citing file, in the package or at the root.

    A test's folder mirrors the package's (``tests/search/`` tests ``automl/search/``), so a
    test may also name a module of its mirrored sub-package by its file name.
    """
    if ref in EXTERNAL:
        return True
    bases = [beside, package, root]
    if beside.is_relative_to(root / "tests"):
        bases.append(package / beside.relative_to(root / "tests"))
    return any((base / ref).is_file() for base in bases)


def stale_references(
    path: Path, source: str, package: Path = PACKAGE, root: Path = ROOT
) -> list[str]:
    """One line per reference in a file's docstrings and comments that names nothing."""
    found = []
    where = path.relative_to(root) if path.is_relative_to(root) else path
    for first_line, text in _texts(source):
        for offset, line in enumerate(text.splitlines()):
            for ref in PATH_REF.findall(line):
                if not path_exists(ref, path.parent, package, root):
                    found.append(f"{where}:{first_line + offset}: {ref} does not exist")
            for ref in DOTTED_REF.findall(line):
                if ref.rsplit(".", 1)[-1] in FILE_SUFFIXES:
                    continue
                if not dotted_exists(ref, package):
                    found.append(f"{where}:{first_line + offset}: {ref} does not exist")
    return found


def _scanned_files() -> list[Path]:
    return sorted(p for folder in SCANNED for p in (ROOT / folder).rglob("*.py"))


def test_docstrings_and_comments_name_only_modules_that_exist() -> None:
    found = []
    for path in _scanned_files():
        found += stale_references(path, path.read_text(encoding="utf-8"))
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # The check itself can fail: each planted stale reference is named with its line.
        ('"""Hyperparameters that ``trial.py`` consumes."""\n', "bad.py:1: trial.py"),
        ("x = 1\n# see models.py for the layers\n", "bad.py:2: models.py"),
        ('"""See\n``tests/test_audit.py``."""\n', "bad.py:2: tests/test_audit.py"),
        ('def f():\n    """Like ``automl.export``."""\n', "bad.py:2: automl.export"),
        ('"""Built by ``automl.nn.models.make_model``."""\n', "automl.nn.models.make_model"),
    ],
)
def test_a_planted_stale_reference_is_named(source: str, expected: str) -> None:
    path = PACKAGE / "config" / "bad.py"  # never written: only its folder is used to resolve
    found = stale_references(path, source)
    assert any(expected in line for line in found), found


@pytest.mark.parametrize(
    "source",
    [
        '"""``portfolio.py`` ranks them; ``nn/schedules.py`` builds the callbacks."""\n',
        '"""Figures: ``benchmarks/audit_speed.py``; ``tests/test_architecture.py``."""\n',
        "# automl.config.schema.load_config, automl.errors.ConfigError, automl.run_tune\n",
        '"""``optuna.storages.JournalStorage``; ``medmnist/info.py``; https://x.org/a/b.py"""\n',
        '"""The study folder holds ``automl.yaml`` and ``study/automl.db``."""\n',
    ],
)
def test_real_modules_and_other_names_pass(source: str) -> None:
    path = PACKAGE / "config" / "space.py"
    assert stale_references(path, source) == []


@pytest.mark.parametrize(("folder", "stale"), [("search", False), ("config", True)])
def test_a_test_may_name_a_module_of_the_sub_package_it_mirrors(folder: str, stale: bool) -> None:
    path = ROOT / "tests" / folder / "test_bad.py"
    found = stale_references(path, '"""What ``paths.py`` defines."""\n')
    assert bool(found) == stale, found
