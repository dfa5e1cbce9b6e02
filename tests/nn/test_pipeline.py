"""The training input pipeline's batch augmentation on real crops (``automl/nn/pipeline.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import real_image_array

from automl.nn.pipeline import build_augmenter, build_batch_mixer, make_dataset


@pytest.fixture(scope="module")
def cells(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    return real_image_array(shared_data, 32, per_class=8)


def _batches(cells, augment: dict, training: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    images, labels = cells
    data = make_dataset(
        images,
        labels,
        np.arange(len(labels)),
        n_classes=3,
        batch_size=8,
        training=training,
        augment=augment,
        seed=3,
    )
    return [(x.numpy(), y.numpy()) for _ in range(3) for x, y in data]


@pytest.mark.parametrize("key", ["mixup_alpha", "cutmix_alpha"])
def test_mixed_batches_have_soft_labels_that_sum_to_one(cells, key: str) -> None:
    batches = _batches(cells, {key: 1.0, "mix_probability": 1.0})
    labels = np.concatenate([y for _, y in batches])
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert labels.min() >= 0.0
    soft = (labels > 1e-3) & (labels < 1 - 1e-3)
    assert soft.any(axis=1).mean() > 0.3  # most rows blend two classes
    images = np.concatenate([x for x, _ in batches])
    assert images.shape[1:] == (32, 32, 3) and images.min() >= 0 and images.max() <= 255


def test_no_mixing_without_alpha_or_probability_and_never_outside_training(cells) -> None:
    assert build_batch_mixer({"mixup_alpha": 0.0, "cutmix_alpha": 0.0}) is None
    assert build_batch_mixer({"mixup_alpha": 0.4, "mix_probability": 0.0}) is None
    for augment, training in (({}, True), ({"mixup_alpha": 1.0, "cutmix_alpha": 1.0}, False)):
        labels = np.concatenate([y for _, y in _batches(cells, augment, training)])
        assert set(np.unique(labels)) == {0.0, 1.0}  # plain one-hot


def test_mix_probability_mixes_about_that_share_of_batches(cells) -> None:
    batches = _batches(cells, {"mixup_alpha": 1.0, "cutmix_alpha": 1.0, "mix_probability": 0.5})
    mixed = [((y > 1e-3) & (y < 1 - 1e-3)).any() for _, y in batches]
    assert 0 < sum(mixed) < len(mixed)


def test_random_erasing_replaces_a_rectangle_of_some_images(cells) -> None:
    images = cells[0][:8].astype("float32")
    erased = build_augmenter({"erasing": 1.0}, seed=1)(images, training=True).numpy()
    changed = (np.abs(erased - images).max(axis=-1) > 0).reshape(8, -1)
    share = changed.mean(axis=1)
    assert (share > 0).all() and (share < 0.5).all()  # a patch of each image, never the whole
