"""The augmentation preview: a few training images and what a trial's augmentation makes of them.

The figure runs the same Keras preprocessing layers the input pipeline trains with
(``pipeline.build_augmenter``), so it shows what the model sees. TensorFlow is imported only
when a figure is drawn, so ``search.artifacts`` (which ``ensemble`` imports for its study note)
stays cheap to import.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from automl.console import show_value

PREVIEW_IMAGES = 4
_PREVIEW_VARIANTS = 3


def preview_indices(
    labels: np.ndarray, train_indices: np.ndarray, n: int = PREVIEW_IMAGES
) -> np.ndarray:
    """Up to ``n`` training indices, one per class first (class order), then the next ones."""
    train_indices = np.asarray(train_indices)
    picked: list[int] = []
    for label in np.unique(labels[train_indices]):
        picked.append(int(train_indices[labels[train_indices] == label][0]))
    picked = picked[:n]
    for index in train_indices:
        if len(picked) >= n:
            break
        if int(index) not in picked:
            picked.append(int(index))
    return np.asarray(picked, dtype=np.int64)


def augmentation_figure(
    images: np.ndarray, augment: dict[str, Any], seed: int, title: str
) -> Figure:
    """A grid: each row an image, its original then what the augmentation draws from it."""
    variants = _augmented_variants(images, augment, seed)
    columns = 1 + len(variants)
    figure = Figure(figsize=(1.9 * columns + 0.4, 1.9 * len(images) + 0.8), layout="constrained")
    FigureCanvasAgg(figure)
    grid = np.atleast_2d(figure.subplots(len(images), columns, squeeze=False))
    for row, image in enumerate(images):
        for column, picture in enumerate([image, *(v[row] for v in variants)]):
            axes = grid[row, column]
            axes.imshow(picture)
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title("original" if column == 0 else f"augmented {column}", fontsize=9)
    figure.suptitle(f"{title}: augmentation {_describe(augment)}", fontsize=10)
    return figure


def _augmented_variants(images: np.ndarray, augment: dict[str, Any], seed: int) -> list[Any]:
    """``_PREVIEW_VARIANTS`` augmented copies of the batch (none without augmentation)."""
    from automl.nn.pipeline import build_augmenter  # TensorFlow only when a trial draws this

    augmenter = build_augmenter(augment, seed=seed)
    if augmenter is None:
        return []
    batch = images.astype(np.float32)
    variants = []
    for _ in range(_PREVIEW_VARIANTS):
        drawn = np.asarray(augmenter(batch, training=True))
        variants.append(np.clip(drawn, 0, 255).astype(np.uint8))
    return variants


def _describe(augment: dict[str, Any]) -> str:
    """The settings that do something, ``name=value`` (``off`` when none does)."""
    shown = {k: v for k, v in augment.items() if v not in (0, 0.0, "none")}
    if not shown:
        return "off"
    return ", ".join(f"{k}={show_value(v)}" for k, v in shown.items())
