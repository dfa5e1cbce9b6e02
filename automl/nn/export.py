"""The Keras side of ``automl export``: fold models in one graph behind a weighted average.

The exported model takes raw RGB pixels (0-255, any height and width: it resizes them to the
study's ``image_size`` itself), runs every fold model once, and averages their class
probabilities with the members' weights: a fold model of weight ``w`` enters the ``Average``
layer ``w`` times, which gives the weighted mean ``automl predict`` reports (up to float32
rounding). It holds only built-in Keras layers, so plain
``keras.saving.load_model(path, safe_mode=True)`` loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
    latency_runs: int = 20,
) -> SavedModel:
    """Build the averaging model, save it to ``out`` (``.keras``), reload it and time it.

    Args:
        fold_models: the models to average, with their weights.
        image_size: pixels the fold models take (height = width).
        out: the file to write; replaced atomically.
        name: the exported model's name.
        latency_runs: batch-1 predictions timed after a warm-up.
    """
    save_model(_averaging_model(fold_models, image_size, name), out)  # atomically
    reloaded = keras.saving.load_model(out, safe_mode=True)
    return SavedModel(
        path=out,
        size_bytes=out.stat().st_size,
        latency_ms_per_image=latency_ms(
            reloaded, np.zeros((1, image_size, image_size, 3), dtype="float32"), runs=latency_runs
        ),
        n_params=int(reloaded.count_params()),
    )


def _averaging_model(fold_models: Sequence[FoldModel], image_size: int, name: str) -> keras.Model:
    image = keras.Input(shape=(None, None, 3), name="image")
    resized = keras.layers.Resizing(image_size, image_size, name="resize")(image)
    outputs = []
    for fold_model in fold_models:
        model = keras.saving.load_model(fold_model.path, compile=False, safe_mode=True)
        # Wrapping renames the fold model so that several can live in one graph.
        named = keras.Model(model.inputs[0], model.outputs[0], name=fold_model.name)
        # The same output tensor listed w times: the model runs once, its weight is w.
        outputs += [named(resized)] * fold_model.weight
    probabilities = keras.layers.Average(name="probs")(outputs) if len(outputs) > 1 else outputs[0]
    return keras.Model(image, probabilities, name=name)
