"""``run_tune`` before the first trial: a refused command writes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import real_image_array

from automl.config.schema import load_config
from automl.errors import ConfigError, DataError, StudyError
from automl.search.tune import run_tune

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


def test_an_npz_without_labels_is_one_clear_error(shared_data: Path, tmp_path: Path) -> None:
    images, _ = real_image_array(shared_data, 32, per_class=4)
    np.savez(tmp_path / "cells.npz", images=images)  # unlabelled, as a test set would be
    path = tmp_path / "s.yaml"
    path.write_text(
        f"study: {{name: nolabels, studies_dir: {tmp_path / 'studies'}}}\n"
        f"data: {{format: npz, path: {tmp_path / 'cells.npz'}, image_size: 32, n_folds: 2}}\n",
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"^data: 12 of 12 images have no label \(e\.g\. an \.npz"):
        run_tune(load_config(path), progress=False)
    assert not (tmp_path / "studies").exists()


def test_the_progress_bar_shows_the_running_trials_fold_epoch_and_score(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        f"study: {{name: bar, n_trials: 1, studies_dir: {tmp_path / 'studies'}}}\n"
        "data: {format: digits, image_size: 8, n_folds: 2}\n"
        "space: {backbone: {name: custom_cnn, blocks: 1, filters: 4}, head: {layers: 0}, "
        "epochs: 2}\n",
        encoding="utf-8",
    )
    result = run_tune(load_config(path), progress=True)
    assert result.counts.complete == 1
    err = capsys.readouterr().err
    for fold in (1, 2):
        for epoch in (1, 2):
            assert f"trial 0 fold {fold}/2 epoch {epoch}/2 val accuracy 0." in err
    assert "1/1" in err and "best 0." in err


def test_a_target_recall_on_a_multiclass_task_is_refused_before_any_trial(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        f"study: {{name: recall, n_trials: 1, studies_dir: {tmp_path / 'studies'}}}\n"
        "data: {format: digits, image_size: 8, n_folds: 2}\n"
        "space: {backbone: {name: custom_cnn, blocks: 1, filters: 4}, epochs: 1}\n"
        "ensemble: {target_recall: 0.9}\n",
        encoding="utf-8",
    )
    with pytest.raises(
        ConfigError,
        match=r"s\.yaml: ensemble\.target_recall=0\.9 sets a decision threshold for a binary "
        r"task, but the data has 10 classes; remove ensemble\.target_recall\.",
    ):
        run_tune(load_config(path), progress=False)
    assert not (tmp_path / "studies").exists()
