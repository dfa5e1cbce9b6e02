"""Hold-out and fold properties on real blood-cell crops."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_folder_layout, wbc_crops

from automl.config.sources import DataSource
from automl.data.readers import read_source
from automl.data.splits import make_splits
from automl.errors import DataError, StudyError


@pytest.fixture(scope="module")
def pool(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    root = make_folder_layout(shared_data, tmp_path_factory.mktemp("cells"), per_class=12)
    return read_source(DataSource(format="folder", path=str(root)), 32)


def test_folds_cover_every_tuning_sample_once_and_are_stratified(pool) -> None:
    splits = make_splits(pool, None, n_folds=3, holdout_fraction=0.25, seed=1)
    validation = np.concatenate([val for _, val in splits.folds])
    assert sorted(validation) == list(range(len(splits.tuning)))
    for train, val in splits.folds:
        assert set(train).isdisjoint(val)
        assert len(train) + len(val) == len(splits.tuning)
        counts = np.bincount(splits.tuning.labels[val], minlength=3)
        expected = np.bincount(splits.tuning.labels, minlength=3) / 3
        assert np.all(np.abs(counts - expected) <= 1)


def test_holdout_is_stratified_and_disjoint_from_tuning(pool) -> None:
    splits = make_splits(pool, None, n_folds=3, holdout_fraction=0.25, seed=1)
    assert splits.holdout is not None
    assert set(splits.holdout.ids).isdisjoint(splits.tuning.ids)
    assert len(splits.holdout) + len(splits.tuning) == len(pool)
    assert np.bincount(splits.holdout.labels, minlength=3).tolist() == [3, 3, 3]


def test_splits_are_identical_for_the_same_seed_and_differ_for_another(pool) -> None:
    first = make_splits(pool, None, n_folds=3, holdout_fraction=0.25, seed=1)
    again = make_splits(pool, None, n_folds=3, holdout_fraction=0.25, seed=1)
    other = make_splits(pool, None, n_folds=3, holdout_fraction=0.25, seed=2)
    assert first.to_dict() == again.to_dict()
    assert first.to_dict() != other.to_dict()


def test_groups_stay_on_one_side(pool) -> None:
    groups = np.array([f"g{i // 2}" for i in range(len(pool))])
    grouped = pool.subset(np.arange(len(pool)))
    object.__setattr__(grouped, "groups", groups)
    splits = make_splits(grouped, None, n_folds=3, holdout_fraction=0.25, seed=3)
    assert splits.holdout is not None
    assert set(splits.holdout.groups).isdisjoint(splits.tuning.groups)
    for train, val in splits.folds:
        assert set(splits.tuning.groups[train]).isdisjoint(splits.tuning.groups[val])


def test_too_many_folds_for_the_smallest_class(pool) -> None:
    small = pool.subset(np.r_[np.where(pool.labels == 0)[0][:4], np.where(pool.labels != 0)[0]])
    with pytest.raises(DataError, match=r"data.n_folds=5 but class 'Eosinophil' has 3 images"):
        make_splits(small, None, n_folds=5, holdout_fraction=0.25, seed=0)


def test_separate_test_set_is_the_holdout_and_tuning_keeps_everything(
    pool, shared_data: Path, tmp_path: Path
) -> None:
    # Other cells of the same classes (crops 12-15 of each class; the pool holds 0-11).
    for name, files in wbc_crops(shared_data, per_class=16).items():
        (tmp_path / name).mkdir()
        for file in files[12:]:
            shutil.copy2(file, tmp_path / name / file.name)
    test = read_source(DataSource(format="folder", path=str(tmp_path)), 32)
    splits = make_splits(pool, test, n_folds=3, holdout_fraction=0.25, seed=0)
    assert splits.holdout is not None and list(splits.holdout.ids) == list(test.ids)
    # Tuning keeps every pool image (no fraction is taken off) and none of the test images.
    assert sorted(splits.tuning.ids) == sorted(pool.ids) and len(test) == 12
    tuning_pixels = {image.tobytes() for image in splits.tuning.images}
    assert not any(image.tobytes() in tuning_pixels for image in splits.holdout.images)
    assert set(np.concatenate([val for _, val in splits.folds])) == set(range(len(pool)))


def test_changed_data_is_refused_on_resume(pool, tmp_path: Path) -> None:
    saved = tmp_path / "splits.json"
    import json

    saved.write_text(
        json.dumps(make_splits(pool, None, n_folds=3, holdout_fraction=0.25, seed=1).to_dict())
    )
    other = make_splits(pool, None, n_folds=3, holdout_fraction=0.25, seed=9)
    with pytest.raises(StudyError, match="created with different data"):
        other.check_matches(saved)
