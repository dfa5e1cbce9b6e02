"""The Keras side of ``automl export``: fold models in one graph behind a weighted average.

The exported model takes raw RGB pixels (0-255, any height and width) and resizes them to the
study's ``image_size`` itself, the way the fold models' training images were resized: the
reader (``automl.data.readers``) decodes every file at full size and resizes it with Pillow's
antialiased Lanczos-3 filter into ``uint8`` pixels; the graph applies the same filter
(``Resizing(interpolation="lanczos3", antialias=True)``) and rounds to whole 0-255 values
(:func:`resize_like_reader`). The two differ by float rounding only (Pillow rounds between its
horizontal and vertical pass), so ``automl predict`` and the exported model give the same
probabilities up to that rounding (the test checks it on real images of other sizes). Like the
reader, it expects pixels the right way up: apply a photo's EXIF orientation first
(``PIL.ImageOps.exif_transpose``), as the reader does.

It then runs every fold model once and averages their class probabilities with the members'
weights: a fold model of weight ``w`` enters the ``Average`` layer ``w`` times, which gives the
weighted mean ``automl predict`` reports. With a decision threshold (binary tasks,
``ensemble.target_recall``) the model has two outputs, ``probs`` and ``label`` (the class index
``automl predict`` writes: the positive class where its probability reaches the threshold);
without one, ``probs`` alone. It holds only built-in Keras layers and ops, so plain
``keras.saving.load_model(path, safe_mode=True)`` loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from automl.nn.models import latency_ms, save_model


@dataclass(frozen=True)
class FoldModel:
    """One saved fold model of the ensemble.

    Attributes:
        name: its name inside the exported graph (unique), e.g. ``trial3_fold0``.
        path: the ``.keras`` file.
        weight: how many times its probabilities enter the average.
    """

    name: str
    path: Path
    weight: int = 1


@dataclass(frozen=True)
class Decision:
    """A decision threshold in the graph: class ``positive_index`` where ``p >= threshold``.

    Attributes:
        positive_index: the positive class's index (binary task: 0 or 1).
        threshold: the cut-off on its mean probability.
    """

    positive_index: int
    threshold: float


@dataclass(frozen=True)
class SavedModel:
    """The written model, reloaded in safe mode, and what it costs on this machine."""

    path: Path
    size_bytes: int
    latency_ms_per_image: float
    n_params: int


def save_averaging_model(
    fold_models: Sequence[FoldModel],
    image_size: int,
    out: Path,
    *,
    name: str,
    decision: Decision | None = None,
    latency_runs: int = 20,
) -> SavedModel:
    """Build the averaging model, save it to ``out`` (``.keras``), reload it and time it.

    Args:
        fold_models: the models to average, with their weights.
        image_size: pixels the fold models take (height = width).
        out: the file to write; replaced atomically.
        name: the exported model's name.
        decision: a decision threshold to add as the ``label`` output; None: ``probs`` only.
        latency_runs: batch-1 predictions timed after a warm-up.
    """
    save_model(_averaging_model(fold_models, image_size, name, decision), out)  # atomically
    reloaded = keras.saving.load_model(out, safe_mode=True)
    return SavedModel(
        path=out,
        size_bytes=out.stat().st_size,
        latency_ms_per_image=latency_ms(
            reloaded, np.zeros((1, image_size, image_size, 3), dtype="float32"), runs=latency_runs
        ),
        n_params=int(reloaded.count_params()),
    )


def resize_like_reader(image: Any, image_size: int) -> Any:
    """Raw RGB pixels of any size -> ``image_size`` square, as the reader makes training images.

    Antialiased Lanczos-3 (Pillow's ``LANCZOS``, which ``automl.data.readers`` uses both ways),
    then rounded and clipped to whole 0-255 values as the reader's ``uint8`` pixels are.
    """
    resized = keras.layers.Resizing(
        image_size, image_size, interpolation="lanczos3", antialias=True, name="resize"
    )(image)
    return keras.ops.clip(keras.ops.round(resized), 0.0, 255.0)


def _averaging_model(
    fold_models: Sequence[FoldModel], image_size: int, name: str, decision: Decision | None
) -> keras.Model:
    image = keras.Input(shape=(None, None, 3), name="image")
    resized = resize_like_reader(image, image_size)
    outputs = []
    for fold_model in fold_models:
        model = keras.saving.load_model(fold_model.path, compile=False, safe_mode=True)
        # Wrapping renames the fold model so that several can live in one graph.
        named = keras.Model(model.inputs[0], model.outputs[0], name=fold_model.name)
        # The same output tensor listed w times: the model runs once, its weight is w.
        outputs += [named(resized)] * fold_model.weight
    probabilities = keras.layers.Average(name="probs")(outputs) if len(outputs) > 1 else outputs[0]
    if decision is None:
        return keras.Model(image, probabilities, name=name)
    index = decision.positive_index
    positive = probabilities[:, index] >= decision.threshold
    label = keras.ops.where(positive, index, 1 - index)
    return keras.Model(image, {"probs": probabilities, "label": label}, name=name)
