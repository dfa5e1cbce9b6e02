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


def _mixed_batch(cells) -> tuple[np.ndarray, np.ndarray]:
    """8 real crops of all three classes (float pixels) and their one-hot labels."""
    images, labels = cells
    rows = np.array([0, 8, 16, 1, 9, 17, 2, 10])  # the fixture holds 8 crops per class
    assert len(set(labels[rows])) == 3
    return images[rows].astype("float32"), np.eye(3, dtype="float32")[labels[rows]]


def _mix(augment: dict, images: np.ndarray, labels: np.ndarray, seed: int = 3):
    import tensorflow as tf

    mixer = build_batch_mixer(augment, seed=seed)
    assert mixer is not None
    return mixer, lambda: [t.numpy() for t in mixer(tf.constant(images), tf.constant(labels))]


def test_mixup_blends_each_image_with_another_and_its_label_in_the_same_proportion(
    cells,
) -> None:
    images, labels = _mixed_batch(cells)
    _, mix = _mix({"mixup_alpha": 1.0, "mix_probability": 1.0}, images, labels)
    blended = 0
    for _ in range(3):
        out, soft = mix()
        for r in range(len(images)):
            # out[r] = w x[r] + (1 - w) x[j] for some partner j, and so is its label.
            fits = []
            for j in range(len(images)):
                step = images[r] - images[j]
                if not step.any():
                    continue
                w = float(((out[r] - images[j]) * step).sum() / (step * step).sum())
                error = np.abs(out[r] - (w * images[r] + (1 - w) * images[j])).max()
                fits.append((error, w, j))
            error, w, j = min(fits)
            assert error < 1e-2 and -1e-4 <= w <= 1 + 1e-4, (r, error, w)
            np.testing.assert_allclose(soft[r], w * labels[r] + (1 - w) * labels[j], atol=1e-4)
            blended += 0.01 < w < 0.99 and labels[j].argmax() != labels[r].argmax()
    assert blended >= len(images)  # about 2/3 of rows pair two classes: a mix, not a copy


def test_cutmix_pastes_one_rectangle_of_another_image_and_labels_by_its_area(cells) -> None:
    images, labels = _mixed_batch(cells)
    _, mix = _mix({"cutmix_alpha": 1.0, "mix_probability": 1.0}, images, labels)
    pasted = 0
    for _ in range(3):
        out, soft = mix()
        for r in range(len(images)):
            changed = (out[r] != images[r]).any(axis=-1)
            if not changed.any():  # paired with itself, or a box of no pixels
                np.testing.assert_allclose(soft[r], labels[r], atol=1e-4)
                continue
            rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
            box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            inside = np.zeros_like(changed)
            inside[box] = True
            # The pixels inside the box all come from one other image j; outside, none changed.
            partners = [j for j in range(len(images)) if (out[r][box] == images[j][box]).all()]
            assert partners and not (changed & ~inside).any(), r
            share = inside.mean()
            expected = [(1 - share) * labels[r] + share * labels[j] for j in partners]
            # Pixels equal in both images can shrink the visible box by a row or column.
            slack = (len(rows) + len(cols) + 1) / changed.size
            assert min(np.abs(soft[r] - e).max() for e in expected) <= slack, r
            pasted += 1
    assert pasted >= len(images)


def test_mix_probability_mixes_that_share_of_batches_and_leaves_the_others_untouched(
    cells,
) -> None:
    images, labels = _mixed_batch(cells)
    augment = {"mixup_alpha": 1.0, "cutmix_alpha": 1.0, "mix_probability": 0.3}
    _, mix = _mix(augment, images, labels)
    n, mixed = 200, 0
    for _ in range(n):
        out, soft = mix()
        if np.array_equal(out, images):  # a batch left alone keeps its one-hot labels exactly
            assert np.array_equal(soft, labels)
        else:
            mixed += 1
    # Binomial(200, 0.3): mean 60, standard deviation 6.5; 4 deviations either side.
    assert 34 <= mixed <= 86, mixed


def test_random_erasing_replaces_a_rectangle_of_some_images(cells) -> None:
    images = cells[0][:8].astype("float32")
    erased = build_augmenter({"erasing": 1.0}, seed=1)(images, training=True).numpy()
    changed = (np.abs(erased - images).max(axis=-1) > 0).reshape(8, -1)
    share = changed.mean(axis=1)
    assert (share > 0).all() and (share < 0.5).all()  # a patch of each image, never the whole
