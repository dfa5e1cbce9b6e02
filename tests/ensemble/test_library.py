"""The trials an ensemble is chosen from: stray files and partial copies of trial folders."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from ensemble_study import STUDY, study_copy, tuned_study

from automl.ensemble.library import trial_library
from automl.errors import StudyError
from automl.search.paths import trial_folder
from automl.search.storage import load_study

__all__ = ["study_copy", "tuned_study"]  # fixtures


def _library(base: Path) -> list:
    config, study = load_study(STUDY, base / "studies")
    return trial_library(study, lambda number: trial_folder(config, number))


def _trial_folders(base: Path) -> list[Path]:
    config, study = load_study(STUDY, base / "studies")
    return [trial_folder(config, t.number) for t in study.trials]


def test_stray_keras_files_in_a_trial_folder_are_not_fold_models(study_copy: Path) -> None:
    folder = _trial_folders(study_copy)[0]
    shutil.copy2(folder / "fold_0.keras", folder / "fold_best.keras")
    shutil.copy2(folder / "fold_1.keras", folder / "fold_1.tmp.keras")
    members = {m.trial: m for m in _library(study_copy)}
    assert [p.name for p in members[0].models] == ["fold_0.keras", "fold_1.keras"]
    assert all(len(m.models) == 2 for m in members.values())


def test_a_trial_lacking_a_fold_model_is_left_out_and_named(
    study_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folders = _trial_folders(study_copy)
    (folders[1] / "fold_1.keras").unlink()  # a partial copy of trial 1's folder
    with caplog.at_level(logging.WARNING, logger="automl"):
        members = _library(study_copy)
    assert [m.trial for m in members] == [0]
    assert [len(m.models) for m in members] == [2]
    assert "trial 1 left out" in caplog.text and "lacks fold_1.keras" in caplog.text


def test_every_trial_partial_is_a_one_line_error(study_copy: Path) -> None:
    for folder in _trial_folders(study_copy):
        (folder / "fold_0.keras").unlink()
    with pytest.raises(StudyError, match=r"lacks some of them \(trials 0, 1;"):
        _library(study_copy)
