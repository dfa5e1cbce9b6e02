"""``tf.data`` input pipelines over the uint8 image array.

Images stay uint8 (in memory or memory-mapped from the data cache) until a batch is drawn: the
pipeline shuffles *indices*, gathers a batch of uint8 pixels, casts that batch alone to float32,
augments it in parallel and prefetches. No float copy of the whole set ever exists, so a
17k-image 96x96 set (~470 MB as uint8) trains in the memory of the uint8 array alone.

Augmentation (RandAugment, flips, rotation, RandomErasing) uses Keras 3's own preprocessing
layers inside ``tf.data``: keras-cv's RandAugment fails inside a Keras 3 graph (see README),
Keras' runs in both places. It runs on the CPU workers, so saved models contain no augmentation
layers. Batch augmentation comes last, on whole training batches: ``keras.layers.MixUp`` and
``keras.layers.CutMix`` blend two images and their one-hot labels, so the labels become soft
(rows still sum to 1); a batch is mixed with probability ``mix_probability``, by MixUp or CutMix
with equal chance when both are on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray | None,
    indices: np.ndarray,
    *,
    n_classes: int,
    batch_size: int,
    training: bool = False,
    augment: dict[str, Any] | None = None,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of ``(float32 images, one-hot labels)`` (or images alone when ``labels`` is None).

    Args:
        images: ``(n, s, s, 3)`` uint8 array or memmap; never copied whole.
        labels: ``(n,)`` class indices, or ``None`` for prediction.
        indices: which rows to use, in this order unless ``training`` shuffles them.
        training: shuffle every epoch and augment.
        augment: the trial's ``augment`` hyperparameters.
    """
    size = images.shape[1]
    indices = np.asarray(indices, dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices(indices)
    if training:
        ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def gather(batch_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Sorted reads are sequential on a memmap; the order inside a batch does not matter.
        order = np.sort(batch_indices)
        picked_labels = labels[order] if labels is not None else np.zeros(len(order), np.int64)
        return np.asarray(images[order]), picked_labels.astype(np.int64)

    def load(batch_indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        pixels, batch_labels = tf.numpy_function(
            gather, [batch_indices], (tf.uint8, tf.int64), stateful=False
        )
        pixels = tf.cast(tf.ensure_shape(pixels, (None, size, size, 3)), tf.float32)
        batch_labels = tf.ensure_shape(batch_labels, (None,))
        return pixels, tf.one_hot(batch_labels, n_classes)

    ds = ds.map(load, num_parallel_calls=AUTOTUNE)
    augmenter = build_augmenter(augment or {}, seed=seed) if training else None
    if augmenter is not None:
        ds = ds.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=AUTOTUNE)
    mixer = build_batch_mixer(augment or {}, seed=seed) if training else None
    if mixer is not None:
        ds = ds.map(mixer, num_parallel_calls=AUTOTUNE)
    if labels is None:
        ds = ds.map(lambda x, _y: x, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def build_augmenter(augment: dict[str, Any], *, seed: int = 0) -> keras.Sequential | None:
    """Keras preprocessing layers for the trial's augmentation, or ``None`` when it has none."""
    layers: list[keras.layers.Layer] = []
    flip = augment.get("flip", "none")
    if flip != "none":
        layers.append(keras.layers.RandomFlip(flip, seed=seed))
    rotation = float(augment.get("rotation", 0.0))
    if rotation > 0:
        layers.append(keras.layers.RandomRotation(rotation, fill_mode="reflect", seed=seed))
    magnitude = float(augment.get("randaugment_magnitude", 0.0))
    if magnitude > 0:
        layers.append(
            keras.layers.RandAugment(
                value_range=(0, 255),
                num_ops=int(augment.get("randaugment_ops", 2)),
                factor=magnitude,
                seed=seed,
            )
        )
    erasing = float(augment.get("erasing", 0.0))
    if erasing > 0:
        # A (p, p) factor: Keras draws each image's probability from [0, p] for a single float.
        layers.append(
            keras.layers.RandomErasing(factor=(erasing, erasing), value_range=(0, 255), seed=seed)
        )
    return keras.Sequential(layers, name="augment") if layers else None


def build_batch_mixer(augment: dict[str, Any], *, seed: int = 0) -> Any | None:
    """``(images, one-hot labels) -> (images, soft labels)`` for a training batch, or ``None``.

    MixUp and CutMix come from Keras (``alpha`` is MixUp's Beta parameter and CutMix's
    ``factor``); this only decides, per batch, whether and which one to apply.
    """
    mixers = []
    if float(augment.get("mixup_alpha", 0.0)) > 0:
        mixers.append(keras.layers.MixUp(alpha=float(augment["mixup_alpha"]), seed=seed))
    if float(augment.get("cutmix_alpha", 0.0)) > 0:
        mixers.append(keras.layers.CutMix(factor=float(augment["cutmix_alpha"]), seed=seed + 1))
    probability = float(augment.get("mix_probability", 1.0))
    if not mixers or probability <= 0:
        return None
    generator = tf.random.Generator.from_seed(seed)

    def mix(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        draw = generator.uniform([2])
        # Only the drawn branch runs: mixing a batch costs about as much as augmenting it.
        branches: list[Callable[[], tuple[Any, Any]]] = [
            functools.partial(_apply, layer, images, labels) for layer in mixers
        ]
        branches.append(lambda: (images, labels))
        which = tf.cast(tf.floor(draw[1] * len(mixers)), tf.int32)
        which = tf.where(draw[0] < probability, tf.minimum(which, len(mixers) - 1), len(mixers))
        return tf.switch_case(which, branches)

    return mix


def _apply(layer: keras.layers.Layer, images: tf.Tensor, labels: tf.Tensor) -> tuple[Any, Any]:
    out = layer({"images": images, "labels": labels}, training=True)
    return out["images"], tf.cast(out["labels"], labels.dtype)
