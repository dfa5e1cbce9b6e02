"""Every file name of a study or trial folder has one home, ``automl/search/paths.py``.

A second definition (``OOF_FILE = "oof.npz"`` in another module, a ``"fold_*.npz"`` glob written
again) drifts from the first; this test reads the package's source and refuses one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import automl
from automl.search import paths

PACKAGE = Path(automl.__file__).resolve().parent
#: The file names paths.py defines (folder names such as "report" are also plain words).
FILE_NAMES = {
    value
    for name, value in vars(paths).items()
    if name.isupper() and isinstance(value, str) and "." in value and name != "CACHE_DIR"
}  # CACHE_DIR, ".cache", is also the name of the user's cache folder (data/download.py)
_FOLD_FILE = re.compile(r"fold_\S*\.(keras|npz)")


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _file_name_literals(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            continue
        if id(node) in skip:
            continue
        text = node.value
        if text in FILE_NAMES or text in ("fold_", "augmentation_") or _FOLD_FILE.fullmatch(text):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {text!r}")
    return found


def test_file_names_are_written_only_in_paths_py() -> None:
    assert {"oof.npz", "ensemble.json", "holdout_predictions.csv", "report.html"} <= FILE_NAMES
    found = [
        hit
        for source in sorted(PACKAGE.rglob("*.py"))
        if source != Path(paths.__file__).resolve()
        for hit in _file_name_literals(source)
    ]
    assert found == [], "file names written outside automl/search/paths.py:\n" + "\n".join(found)


def test_the_check_sees_a_second_definition(tmp_path: Path) -> None:
    source = PACKAGE / "ensemble" / "_second.py"
    try:
        source.write_text('OOF_FILE = "oof.npz"\nGLOB = f"fold_{1}.npz"\n', encoding="utf-8")
        assert len(_file_name_literals(source)) == 2
    finally:
        source.unlink()


def test_fold_model_names_round_trip() -> None:
    assert paths.fold_of_model(paths.fold_model_name(3)) == 3
    assert paths.fold_of_model("fold_best.keras") is None
    assert paths.fold_of_model("fold_1.tmp.keras") is None
