"""Hold-out and fold properties on real blood-cell crops."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_folder_layout, wbc_crops
from sklearn.model_selection import StratifiedGroupKFold

from automl.config.sources import DataSource
from automl.data.readers import ImageSet, read_source
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


# --- grouped splits on real smear fields (chula_rbc12: field_group) ----------------------------

CHULA_CLASSES = ("normal_cell", "target_cell", "teardrop")


def chula_grouped(
    shared_data: Path, tmp_path: Path, groups_per_class: dict[str, int], per_group: int = 3
) -> ImageSet:
    """Real Chula crops read as a CSV source grouped by ``field_group`` (the smear field).

    Each class takes ``per_group`` crops from each of its first ``groups_per_class[name]``
    fields that hold that many, fields not shared with another class, so that the number of
    groups per class is exactly what the test asks for.
    """
    root = shared_data / "chula_rbc12"
    manifest = pd.read_csv(root / "manifest.csv")
    used: set[int] = set()
    rows = []
    for name, n_groups in groups_per_class.items():
        cells = manifest[manifest.class_name == name]
        sizes = cells.groupby("field_group").size()
        fields = [g for g in sizes.index if sizes[g] >= per_group and g not in used][:n_groups]
        assert len(fields) == n_groups, f"chula_rbc12 has too few fields of {name}"
        used.update(fields)
        for field in fields:
            for file in sorted(cells[cells.field_group == field].file)[:per_group]:
                rows.append({"id": file.removesuffix(".jpg"), "label": name, "group": field})
    csv_path = tmp_path / "cells.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    source = DataSource(
        format="csv",
        path=str(root),
        labels_csv=str(csv_path),
        extension=".jpg",
        group_column="group",
    )
    return read_source(source, 16)


def test_grouped_folds_need_a_group_of_every_class_per_fold(
    shared_data: Path, tmp_path: Path
) -> None:
    # 12 teardrop crops, enough images for 3 folds, but from 2 smear fields only.
    cells = chula_grouped(
        shared_data, tmp_path, {"normal_cell": 6, "target_cell": 6, "teardrop": 2}, per_group=6
    )
    assert np.bincount(cells.labels).min() == 12
    with pytest.raises(
        DataError,
        match=r"data\.n_folds=3 but class 'teardrop' is in only 2 groups of the tuning set "
        r"\(a group stays in one fold\), so some folds would have none of it to validate on; "
        r"use n_folds <= 2 or add images of it from other groups\.",
    ):
        make_splits(cells, None, n_folds=3, holdout_fraction=0.0, seed=0)

    splits = make_splits(cells, None, n_folds=2, holdout_fraction=0.0, seed=0)
    for train, val in splits.folds:
        for part in (train, val):
            assert set(splits.tuning.labels[part]) == {0, 1, 2}


def test_fewer_groups_than_folds_is_explained_not_a_traceback(
    shared_data: Path, tmp_path: Path
) -> None:
    cells = chula_grouped(shared_data, tmp_path, {"normal_cell": 1, "teardrop": 1}, per_group=6)
    with pytest.raises(
        DataError, match=r"data\.n_folds=3 but the tuning set has only 2 groups .* n_folds <= 2"
    ):
        make_splits(cells, None, n_folds=3, holdout_fraction=0.0, seed=0)


def test_grouped_holdout_needs_every_class_on_both_sides(
    shared_data: Path, tmp_path: Path
) -> None:
    # All 6 teardrop crops come from one field: a group sits on one side of the hold-out.
    cells = chula_grouped(
        shared_data, tmp_path, {"normal_cell": 8, "target_cell": 8, "teardrop": 1}, per_group=6
    )
    with pytest.raises(
        DataError,
        match=r"data\.holdout_fraction: class 'teardrop' has all its images in 1 group, .*"
        r"give a separate data\.test and set data\.holdout_fraction: 0\.",
    ):
        make_splits(cells, None, n_folds=2, holdout_fraction=0.25, seed=0)


def test_grouped_holdout_keeps_every_class_where_the_first_cut_would_not(
    shared_data: Path, tmp_path: Path
) -> None:
    # Teardrops from 3 fields: a hold-out cut from 4 grouped parts can miss them all.
    cells = chula_grouped(
        shared_data, tmp_path, {"normal_cell": 12, "target_cell": 12, "teardrop": 3}
    )
    x = np.zeros(len(cells))
    firsts = {
        seed: next(
            StratifiedGroupKFold(n_splits=4, shuffle=True, random_state=seed).split(
                x, cells.labels, cells.groups
            )
        )
        for seed in range(20)
    }
    lossy = [s for s, (_, held) in firsts.items() if len(set(cells.labels[held])) < 3]
    kept = [s for s in firsts if s not in lossy]
    assert lossy and kept  # both happen on these fields
    splits = make_splits(cells, None, n_folds=2, holdout_fraction=0.25, seed=lossy[0])
    assert splits.holdout is not None
    assert set(splits.holdout.labels) == {0, 1, 2} == set(splits.tuning.labels)
    assert set(splits.holdout.groups).isdisjoint(splits.tuning.groups)
    # Where the first cut keeps every class, it is the hold-out, as it always was.
    same = make_splits(cells, None, n_folds=2, holdout_fraction=0.25, seed=kept[0])
    assert same.holdout is not None
    assert sorted(same.holdout.ids) == sorted(cells.ids[firsts[kept[0]][1]])


def test_grouped_folds_that_still_miss_a_class_are_refused(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells = chula_grouped(shared_data, tmp_path, {"normal_cell": 4, "teardrop": 2})

    class Unlucky:
        """Deals whole groups out as a greedy splitter can: both teardrop fields in fold 0."""

        def __init__(self, **_: object) -> None:
            pass

        def split(self, x: np.ndarray, labels: np.ndarray, groups: np.ndarray):
            teardrop = set(groups[labels == 1])
            normal = sorted(set(groups) - teardrop)
            first = np.isin(groups, [*teardrop, *normal[:2]])
            yield np.flatnonzero(~first), np.flatnonzero(first)
            yield np.flatnonzero(first), np.flatnonzero(~first)

    monkeypatch.setattr("automl.data.splits.StratifiedGroupKFold", Unlucky)
    with pytest.raises(
        DataError,
        match=r"data\.n_folds=2: grouped fold 0 has no image of class 'teardrop' in its "
        r"training part .* use fewer folds or add images of that class from other groups\.",
    ):
        make_splits(cells, None, n_folds=2, holdout_fraction=0.0, seed=0)
