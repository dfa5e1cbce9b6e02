"""``automl export``: the ensemble as one Keras model a user can deploy without automl.

The exported model takes raw RGB pixels (0-255, any height and width: it resizes them to the
study's ``image_size`` itself), runs every fold model of the ensemble once, and averages their
class probabilities with the members' weights (greedy selection's multiplicities): a fold model
of weight ``w`` enters the ``Average`` layer ``w`` times, which gives the weighted mean
``automl predict`` reports (up to float32 rounding). It holds only built-in Keras layers, so plain
``keras.saving.load_model(path, safe_mode=True)`` loads it. Averaging is the soft vote; a
majority vote needs the per-model votes and stays in ``automl predict``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from automl.config.schema import Config
from automl.ensemble.build import load_manifest
from automl.errors import StudyError
from automl.nn.models import latency_ms


@dataclass(frozen=True)
class ExportResult:
    """The written model and what it costs."""

    path: Path
    n_models: int
    size_bytes: int
    latency_ms_per_image: float
    n_params: int


def export_ensemble(config: Config, out: Path, *, latency_runs: int = 20) -> ExportResult:
    """Write the study's ensemble to ``out`` (``.keras``), reload it in safe mode and time it."""
    if out.suffix != ".keras":
        raise StudyError(f"--out {out}: the file name must end in .keras (Keras' format).")
    manifest = load_manifest(config)
    size = int(manifest["image_size"])
    paths = [
        (member["trial"], k, Path(p), int(member.get("weight", 1)))
        for member in manifest["members"]
        for k, p in enumerate(member["models"])
    ]
    image = keras.Input(shape=(None, None, 3), name="image")
    resized = keras.layers.Resizing(size, size, name="resize")(image)
    outputs = []
    for trial, fold, path, weight in paths:
        if not path.is_file():
            raise StudyError(f"{path}: fold model is missing; re-run `automl ensemble`.")
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        # Wrapping renames the fold model so that several can live in one graph.
        named = keras.Model(model.inputs[0], model.outputs[0], name=f"trial{trial}_fold{fold}")
        # The same output tensor listed w times: the model runs once, its weight is w.
        outputs += [named(resized)] * weight
    probabilities = keras.layers.Average(name="probs")(outputs) if len(outputs) > 1 else outputs[0]
    ensemble = keras.Model(image, probabilities, name=f"automl_{config.study.name}_ensemble")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.keras")
    ensemble.save(tmp)
    os.replace(tmp, out)
    reloaded = keras.saving.load_model(out, safe_mode=True)
    return ExportResult(
        path=out,
        n_models=len(paths),
        size_bytes=out.stat().st_size,
        latency_ms_per_image=latency_ms(
            reloaded, np.zeros((1, size, size, 3), dtype="float32"), runs=latency_runs
        ),
        n_params=int(reloaded.count_params()),
    )
