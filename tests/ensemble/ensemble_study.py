"""A tiny real-crop study tuned once for the ensemble tests, and copies of it to change.

Tuning is the slow part: :func:`tuned_study` tunes once per session (2 trials, 1 epoch, 2 folds,
32 px), and :func:`study_copy` gives each test its own copy (data included) to break. Test
modules import both fixtures; the tuned folder is kept in :data:`_TUNED` so that several modules
share one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import make_folder_layout, write_study_yaml
from typer.testing import CliRunner

from automl.cli.main import app

STUDY = "cells"
_TUNED: dict[str, Path] = {}


@pytest.fixture(scope="session")
def tuned_study(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``base/`` with ``cells/`` (real crops), ``studies/cells`` (tuned) and ``cells.yaml``."""
    if "base" in _TUNED:
        return _TUNED["base"]
    base = tmp_path_factory.mktemp("tuned")
    data = make_folder_layout(shared_data, base / "cells", per_class=8)
    space = write_study_yaml(base / "cells.yaml", data, base / "studies", n_trials=2, epochs="1")
    result = CliRunner().invoke(app, ["tune", "--space", str(space), "--no-progress"])
    assert result.exit_code == 0, result.output
    _TUNED["base"] = base
    return base


def copy_study(tuned: Path, base: Path) -> Path:
    """Copy a :func:`tuned_study` folder to ``base``; its study then reads ``base``'s data."""
    shutil.copytree(tuned, base)
    config = base / "studies" / STUDY / "config.yaml"
    config.write_text(config.read_text().replace(str(tuned), str(base)))
    return base


@pytest.fixture
def study_copy(tuned_study: Path, tmp_path: Path) -> Path:
    """A copy of :func:`tuned_study`'s folder whose study points at its own copy of the data."""
    return copy_study(tuned_study, tmp_path / "copy")


def where(base: Path) -> list[str]:
    """``--study cells --studies-dir <base>/studies``."""
    return ["--study", STUDY, "--studies-dir", str(base / "studies")]
