"""``run_tune`` before the first trial: a refused command writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from automl.config import load_config
from automl.errors import StudyError
from automl.tune import run_tune

DIGITS = """
study: {{name: refused, n_trials: 1, storage: "{storage}", studies_dir: {studies}}}
data: {{format: digits, image_size: 8, n_folds: 2}}
space: {{backbone: {{name: custom_cnn, blocks: 1, filters: 4}}, head: {{layers: 0}}, epochs: 1}}
"""


@pytest.mark.parametrize(
    ("storage", "match"),
    [
        # A driver that is not installed (PyMySQL is no dependency of automl).
        ("mysql+pymysql://user@127.0.0.1/automl", r"no database driver for mysql\+pymysql"),
        # A SQLite file in a folder that does not exist: the database cannot be opened.
        ("sqlite:////nonexistent-automl-folder/study.db", r"cannot open sqlite:////nonexist"),
    ],
)
def test_a_storage_that_cannot_be_opened_leaves_no_study_folder(
    tmp_path: Path, storage: str, match: str
) -> None:
    studies = tmp_path / "deep" / "studies"
    path = tmp_path / "s.yaml"
    path.write_text(DIGITS.format(storage=storage, studies=studies), encoding="utf-8")
    config = load_config(path)
    with pytest.raises(StudyError, match=match):
        run_tune(config, progress=False)
    assert not (tmp_path / "deep").exists()
