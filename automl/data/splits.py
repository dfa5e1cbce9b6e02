"""Hold-out and k-fold splits: taken once per study, seeded, identical for every trial.

The hold-out is taken off first and never reaches tuning: either a separate test set named in
``data.test`` (e.g. the TEST folder of a Kaggle set), or a stratified ``holdout_fraction`` of the
pool. The rest (the *tuning* set) is cut into ``n_folds`` stratified folds with
``StratifiedKFold(shuffle=True, random_state=seed)``. When images carry groups (a CSV
``group_column``), ``StratifiedGroupKFold`` keeps each group on one side of both splits, so that
related images (crops of one smear, augmented copies of one cell) cannot leak.

The splits are saved as ids in ``splits.json`` beside the study; a resumed study recomputes them
and refuses to go on if they differ (the data changed under it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import (
    StratifiedGroupKFold,
    StratifiedKFold,
    StratifiedShuffleSplit,
)

from automl.data.readers import ImageSet
from automl.errors import DataError, StudyError


@dataclass(frozen=True)
class Splits:
    """The tuning set with its folds, and the hold-out set tuning never sees.

    Attributes:
        tuning: images the trials train and validate on.
        holdout: images only ``ensemble`` scores on; ``None`` when ``holdout_fraction`` is 0
            and no ``data.test`` is given.
        folds: ``(train_indices, validation_indices)`` into ``tuning``, one pair per fold.
    """

    tuning: ImageSet
    holdout: ImageSet | None
    folds: tuple[tuple[np.ndarray, np.ndarray], ...]

    @property
    def n_classes(self) -> int:
        return len(self.tuning.class_names)

    def to_dict(self) -> dict[str, Any]:
        """Ids only: enough to check a resumed study sees the same splits."""
        return {
            "class_names": list(self.tuning.class_names),
            "holdout_ids": [] if self.holdout is None else [str(i) for i in self.holdout.ids],
            "fold_validation_ids": [
                [str(i) for i in self.tuning.ids[val]] for _, val in self.folds
            ],
        }

    def check_matches(self, path: Path) -> None:
        """Raise if the splits saved at ``path`` differ from these (the data changed)."""
        saved = json.loads(path.read_text(encoding="utf-8"))
        current = self.to_dict()
        for key in ("class_names", "holdout_ids", "fold_validation_ids"):
            if saved.get(key) != current[key]:
                raise StudyError(
                    f"{path}: the study was created with different data ({key} differ); "
                    "its trials would not be comparable. Restore the original data, or start "
                    "a new study with --study-name NEW_NAME."
                )


def make_splits(
    pool: ImageSet,
    test: ImageSet | None,
    *,
    n_folds: int,
    holdout_fraction: float,
    seed: int,
) -> Splits:
    """Take the hold-out off ``pool`` (unless ``test`` is given) and fold the rest.

    Raises:
        DataError: a class is too small for the hold-out or for ``n_folds``, or ``test`` has
            classes the pool does not.
    """
    check_labelled(pool, "data")
    if test is not None:
        check_labelled(test, "data.test")
        unknown = sorted(set(test.class_names) - set(pool.class_names))
        if unknown:
            raise DataError(
                f"data.test has classes {unknown} that the training data lacks "
                f"({list(pool.class_names)}); the model could never predict them. Fix the "
                "test set's class names."
            )
        holdout = _relabel(test, pool.class_names)
        tuning = pool
    elif holdout_fraction > 0:
        tuning_idx, holdout_idx = _holdout_indices(pool, holdout_fraction, seed)
        tuning, holdout = pool.subset(tuning_idx), pool.subset(holdout_idx)
    else:
        tuning, holdout = pool, None
    _check_fold_sizes(tuning, n_folds)
    if tuning.groups is not None:
        _check_fold_groups(tuning, tuning.groups, n_folds)
        splitter: Any = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        pairs = splitter.split(np.zeros(len(tuning)), tuning.labels, tuning.groups)
    else:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        pairs = splitter.split(np.zeros(len(tuning)), tuning.labels)
    folds = tuple((np.asarray(tr), np.asarray(va)) for tr, va in pairs)
    if tuning.groups is not None:
        _check_grouped_folds(tuning, folds)
    return Splits(tuning, holdout, folds)


def _holdout_indices(pool: ImageSet, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(pool.labels, minlength=len(pool.class_names))
    for name, count in zip(pool.class_names, counts, strict=True):
        if count < 2:
            raise DataError(
                f"data: class '{name}' has {count} image(s); a stratified hold-out needs at "
                "least 2 per class. Add images, remove the class, or set data.holdout_fraction: 0."
            )
    x = np.zeros(len(pool))
    if pool.groups is not None:
        # One fold of a grouped, stratified k-fold is the closest grouped analogue of a
        # stratified shuffle split of the requested size.
        n_splits = max(2, int(round(1.0 / fraction)))
        _check_holdout_groups(pool, pool.groups, n_splits)
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        tuning_idx, holdout_idx = _first_with_every_class(
            pool, splitter.split(x, pool.labels, pool.groups), n_splits
        )
    else:
        n_holdout = max(int(round(fraction * len(pool))), len(pool.class_names))
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=n_holdout, random_state=seed)
        tuning_idx, holdout_idx = next(splitter.split(x, pool.labels))
    return np.sort(tuning_idx), np.sort(holdout_idx)


def _check_fold_sizes(tuning: ImageSet, n_folds: int) -> None:
    counts = np.bincount(tuning.labels, minlength=len(tuning.class_names))
    smallest = int(np.argmin(counts))
    if counts[smallest] < n_folds:
        raise DataError(
            f"data.n_folds={n_folds} but class '{tuning.class_names[smallest]}' has "
            f"{counts[smallest]} images in the tuning set (after the hold-out); use "
            f"n_folds <= {max(int(counts[smallest]), 1)} or add images."
        )


def _groups_per_class(images: ImageSet, groups: np.ndarray) -> np.ndarray:
    """How many distinct groups hold images of each class."""
    pairs = pd.DataFrame({"label": images.labels, "group": groups}).drop_duplicates()
    counts = pairs.label.value_counts()
    return np.array([int(counts.get(i, 0)) for i in range(len(images.class_names))])


def _check_holdout_groups(pool: ImageSet, group_of: np.ndarray, n_splits: int) -> None:
    """A grouped hold-out takes whole groups: each class needs a group on either side."""
    groups = _groups_per_class(pool, group_of)
    smallest = int(np.argmin(groups))
    if groups[smallest] < 2:
        raise DataError(
            f"data.holdout_fraction: class '{pool.class_names[smallest]}' has all its images in "
            f"{groups[smallest]} group, and a grouped hold-out keeps each group on one side, so "
            "the hold-out or the tuning set would lack that class; add images of it from other "
            "groups, or give a separate data.test and set data.holdout_fraction: 0."
        )
    if len(np.unique(group_of)) < n_splits:
        raise DataError(
            f"data.holdout_fraction: the data has {len(np.unique(group_of))} groups, fewer "
            f"than the {n_splits} parts a grouped hold-out of that fraction is cut from; use a "
            "larger data.holdout_fraction, or more groups."
        )


def _first_with_every_class(
    pool: ImageSet, candidates: Any, n_splits: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first (tuning, hold-out) candidate in which both sides hold every class.

    The first candidate is the one a study has always used; a later one only where the first
    would have lost a class (a grouped split can, when a class sits in few groups).
    """
    n_classes = len(pool.class_names)
    lacking: list[str] = []
    for tuning_idx, holdout_idx in candidates:
        sides = (pool.labels[tuning_idx], pool.labels[holdout_idx])
        missing = [i for i in range(n_classes) if not all((side == i).any() for side in sides)]
        if not missing:
            return tuning_idx, holdout_idx
        lacking.extend(pool.class_names[i] for i in missing)
    worst = max(set(lacking), key=lacking.count)
    raise DataError(
        f"data.holdout_fraction: none of the {n_splits} grouped hold-outs keeps every class on "
        f"both sides: class '{worst}' sits in too few groups; add images of it from other "
        "groups, or give a separate data.test and set data.holdout_fraction: 0."
    )


def _check_fold_groups(tuning: ImageSet, group_of: np.ndarray, n_folds: int) -> None:
    """Grouped folds move whole groups: every class needs at least one group per fold."""
    n_groups = len(np.unique(group_of))
    if n_groups < n_folds:
        raise DataError(
            f"data.n_folds={n_folds} but the tuning set has only {n_groups} groups (a group "
            f"stays in one fold), so some folds would be empty; use n_folds <= {n_groups} or "
            "more groups."
        )
    groups = _groups_per_class(tuning, group_of)
    smallest = int(np.argmin(groups))
    if groups[smallest] < n_folds:
        raise DataError(
            f"data.n_folds={n_folds} but class '{tuning.class_names[smallest]}' is in only "
            f"{groups[smallest]} groups of the tuning set (a group stays in one fold), so some "
            f"folds would have none of it to validate on; use n_folds <= "
            f"{max(int(groups[smallest]), 2)} or add images of it from other groups."
        )


def _check_grouped_folds(
    tuning: ImageSet, folds: tuple[tuple[np.ndarray, np.ndarray], ...]
) -> None:
    """Enough groups per class still need not be dealt out to every fold: check the folds."""
    for k, (train, val) in enumerate(folds):
        for side, indices in (("validation", val), ("training", train)):
            present = np.bincount(tuning.labels[indices], minlength=len(tuning.class_names))
            if (present == 0).any():
                name = tuning.class_names[int(np.argmin(present))]
                raise DataError(
                    f"data.n_folds={len(folds)}: grouped fold {k} has no image of class "
                    f"'{name}' in its {side} part (its groups went to other folds); use fewer "
                    "folds or add images of that class from other groups."
                )


def check_labelled(images: ImageSet, key: str) -> None:
    """Refuse an empty set, images without a label, or fewer than two classes."""
    if len(images) == 0:
        raise DataError(f"{key}: no images were found; check the path and format.")
    unlabelled = int((images.labels < 0).sum())
    if unlabelled:
        raise DataError(
            f"{key}: {unlabelled} of {len(images)} images have no label (e.g. an .npz without a "
            "labels array, or rows without a label); tuning needs a label for every image: add "
            f"the labels ({key}.labels_key names the .npz array) or point {key} at labelled "
            "images."
        )
    if len(images.class_names) < 2:
        raise DataError(
            f"{key}: found {len(images.class_names)} class(es) {list(images.class_names)}; "
            "a classifier needs at least 2."
        )


def _relabel(images: ImageSet, class_names: tuple[str, ...]) -> ImageSet:
    """Express ``images``' labels as indices into ``class_names`` (the training classes)."""
    mapping = np.array([class_names.index(name) for name in images.class_names], dtype=np.int64)
    return ImageSet(
        images=images.images,
        labels=mapping[images.labels],
        class_names=class_names,
        ids=images.ids,
        groups=images.groups,
        hidden_files=images.hidden_files,
        pixel_scaling=images.pixel_scaling,
    )
